"""A sandbox's link to the node: a veth pair, routed, one /31 per sandbox.

The host side (`clv<index>`) holds the even address of the pair and a route to the odd
one; the sandbox side is moved into the container's network namespace as `eth0` with
a default route through the host side. There is no shared bridge, so neighbours share
no L2 segment and cannot spoof ARP at each other. Every host-side link carries an alias
`cloche:<node key>:<sandbox id>`, so a restarted node finds what it left behind.

All netlink work goes through pyroute2. Entering the sandbox's namespace is done by
one worker thread at a time with setns(2) on that thread only (the process stays where
it is), so no helper process is forked.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import TC_H_ROOT

from cloche.node import linux
from cloche.node.errors import RuntimeFailure

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
ALIAS_PREFIX = "cloche:"
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


@dataclass(frozen=True)
class Link:
    index: int
    host_ifname: str
    host_address: str  # the sandbox's gateway
    address: str  # the sandbox's own address

    def to_json(self) -> dict[str, object]:
        return {"index": self.index, "address": self.address, "gateway": self.host_address}


class AddressPool:
    """Pairs of addresses in the node's pool: index i is (2i, 2i+1)."""

    def __init__(self, cidr: str) -> None:
        try:
            self.network = ipaddress.IPv4Network(cidr)
        except ValueError:
            raise RuntimeFailure(f"network pool {cidr!r} is not an IPv4 CIDR") from None
        if self.network.prefixlen > 30:
            raise RuntimeFailure(f"network pool {cidr} is too small (at least a /30)")
        self.size = self.network.num_addresses // 2

    def link(self, index: int) -> Link:
        if not 0 <= index < self.size:
            raise RuntimeFailure(f"address index {index} is outside the pool {self.network}")
        base = int(self.network.network_address) + 2 * index
        return Link(index, f"clv{index}", str(ipaddress.IPv4Address(base)), str(ipaddress.IPv4Address(base + 1)))


def in_netns(ns_path: str, fn: Callable[[], T]) -> T:
    """Run `fn` with this thread (only) inside the network namespace at `ns_path`."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _libc.setns(target, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns into {ns_path}: {os.strerror(err)}")
            try:
                return fn()
            finally:
                if _libc.setns(own, CLONE_NEWNET) != 0:
                    os.abort()  # a worker thread stuck in a sandbox's namespace must not live on
        finally:
            os.close(target)
    finally:
        os.close(own)


def _netlink_in(ns_path: str) -> IPRoute:
    def open_socket() -> socket.socket:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0)

    return IPRoute(fileno=in_netns(ns_path, open_socket).detach())


def _write_sysctl(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except FileNotFoundError:
        pass


def make_netns(path: Path) -> None:
    """A new network namespace, kept alive by a bind mount at `path` (a fresh thread
    unshares, so no other thread of the node changes namespace)."""
    path.touch()
    failure: list[BaseException] = []

    def unshare_and_bind() -> None:
        try:
            if _libc.unshare(CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
            linux.mount("/proc/thread-self/ns/net", str(path), None, MS_BIND)
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=unshare_and_bind)
    worker.start()
    worker.join()
    if failure:
        raise RuntimeFailure(f"cannot make a network namespace: {failure[0]}")


def create(link: Link, ns_path: str, alias: str, mtu: int = 1500) -> None:
    """Make the pair and configure both ends, the sandbox's in the namespace at `ns_path`."""
    peer = f"clp{link.index}"
    with IPRoute() as ip:
        try:
            ip.link("add", ifname=link.host_ifname, kind="veth", peer={"ifname": peer, "net_ns_fd": ns_path})
        except NetlinkError as exc:
            raise RuntimeFailure(f"cannot create {link.host_ifname}: {exc}") from None
        (idx,) = ip.link_lookup(ifname=link.host_ifname)
        ip.link("set", index=idx, ifalias=alias, mtu=mtu)
        _write_sysctl(f"/proc/sys/net/ipv6/conf/{link.host_ifname}/disable_ipv6", "1")
        ip.addr("add", index=idx, address=link.host_address, prefixlen=31)
        ip.link("set", index=idx, state="up")

    def inside() -> IPRoute:
        for conf in ("all", "default"):
            _write_sysctl(f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6", "1")
        return IPRoute(fileno=socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0).detach())

    with in_netns(ns_path, inside) as ip:
        (lo,) = ip.link_lookup(ifname="lo")
        ip.link("set", index=lo, state="up")
        (idx,) = ip.link_lookup(ifname=peer)
        ip.link("set", index=idx, ifname="eth0", mtu=mtu)
        ip.addr("add", index=idx, address=link.address, prefixlen=31)
        ip.link("set", index=idx, state="up")
        ip.route("add", dst="0.0.0.0/0", gateway=link.host_address, oif=idx)


def delete(ifname: str) -> None:
    """Remove a pair by its host side (the peer goes with it); absent is fine."""
    with IPRoute() as ip:
        found = ip.link_lookup(ifname=ifname)
        if found:
            try:
                ip.link("del", index=found[0])
            except NetlinkError:
                pass


def ours(prefix: str) -> Iterator[tuple[str, str]]:
    """(host ifname, alias) of every link whose alias starts with `prefix`."""
    with IPRoute() as ip:
        for msg in ip.get_links():
            alias = msg.get_attr("IFLA_IFALIAS") or ""
            if alias.startswith(prefix):
                yield msg.get_attr("IFLA_IFNAME"), alias


def shape(link: Link, ns_path: str, ingress_mbps: float | None, egress_mbps: float | None) -> None:
    """Bandwidth limits as token buckets: on the host side for what flows into the
    sandbox (its ingress), and on its own eth0 for what it sends (its egress). The
    sandbox's root has no CAP_NET_ADMIN, so it cannot remove either (and this kernel
    has no policing action to do the egress on the host side)."""
    with IPRoute() as ip:
        _set_tbf(ip, link.host_ifname, ingress_mbps)

    def inside() -> IPRoute:
        return IPRoute(fileno=socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0).detach())

    with in_netns(ns_path, inside) as ip:
        _set_tbf(ip, "eth0", egress_mbps)


def _set_tbf(ip: IPRoute, ifname: str, mbps: float | None) -> None:
    (idx,) = ip.link_lookup(ifname=ifname)
    try:
        ip.tc("del", index=idx, parent=TC_H_ROOT)
    except NetlinkError:
        pass  # there was none
    if mbps:
        rate, burst = _rate(mbps)
        ip.tc("add", "tbf", idx, handle="1:", rate=rate, burst=burst, latency="50ms")


def _rate(mbps: float) -> tuple[str, int]:
    """tc's rate string and a burst of 20 ms at that rate (at least 16 KiB)."""
    kbit = max(1, int(mbps * 1000))
    return f"{kbit}kbit", max(16384, kbit * 1000 // 8 // 50)


def address_of_default_route() -> tuple[str, list[str]]:
    """The interface of the host's IPv4 default route, and the host's IPv4 addresses."""
    with IPRoute() as ip:
        uplink = ""
        for route in ip.get_routes(family=socket.AF_INET, table=254):
            if route["dst_len"] == 0 and route.get_attr("RTA_OIF"):
                links = ip.get_links(route.get_attr("RTA_OIF"))
                uplink = links[0].get_attr("IFLA_IFNAME") if links else ""
                break
        addrs = [a.get_attr("IFA_ADDRESS") for a in ip.get_addr(family=socket.AF_INET)]
    return uplink, [a for a in addrs if a]
