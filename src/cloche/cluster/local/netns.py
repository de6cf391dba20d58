"""The regions of `cloche cluster local --regions`, made of real network namespaces, so
that what crosses a region boundary crosses a wire a test can slow down or cut.

Each region is a namespace of its own (`cloche-r<slot>-<region>`) joined to the host by
a veth pair (`cloche-<slot>h<i>` on the host, 10.<200+slot>.<i>.1/30, and the region's
end, .2/30), named so the leak check catches any left behind. The region's nodes listen
on the region's address, and so does its server replica if it has one. Two kinds of
traffic leave a region, both rewritten on the host by one nftables table
(`ip cloche-regions-<slot>`):

- to the region's gateway on a service port (etcd, PostgreSQL, S3): to 127.0.0.1 on the
  same port (the veth allows it: route_localnet), where those services listen as they
  always do, with no delay;
- to another region's address: to the delaying relay (relay.py), which connects on to
  the address it was meant for, so node-to-node traffic between regions has the delay.

Nothing else leaves a region: the host forwards nothing from it, so its private
addresses never reach a real network (and the sandboxes of its nodes have no internet).

Traffic inside a region stays in its namespace. The host (the front, a test) reaches
every region directly. `cut()` drops everything a region sends or receives except its own
loopback: a partition, with every process still running. The slot (a free index picked
at start, claimed by creating its first veth) lets several local clusters coexist; the
claimer's pid is kept in /run/cloche-regions/<slot>, so a slot whose claimer died without
removing it (kill -9) is swept by the next cluster that starts (`sweep_stale`).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SLOTS = 8
OWNERS = Path("/run/cloche-regions")  # <slot>: the pid of the process whose regions they are
REGIONS_SUBNET = "10.200.0.0/13"  # every slot's addresses: 10.<200+slot>.<region>.1 and .2
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,15}$")
CUT_TABLE = "cloche-cut"


def _run(*argv: str, stdin: str | None = None) -> None:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[int]:
    """Remove the namespaces, veths and rules of every slot whose claimer is dead; the slots swept."""
    swept = []
    for owner in sorted(OWNERS.glob("*")) if OWNERS.exists() else []:
        try:
            slot, pid = int(owner.name), int(owner.read_text() or 0)
        except (ValueError, OSError):
            continue
        if pid and _alive(pid):
            continue
        for netns in Path("/run/netns").glob(f"cloche-r{slot}-*"):
            subprocess.run(["ip", "netns", "del", netns.name], capture_output=True, timeout=30)
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=30).stdout
        for name in set(re.findall(rf"^\d+: (cloche-{slot}[hn]\d+)[@:]", links, re.M)):
            subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=30)
        subprocess.run(["nft", "delete", "table", "ip", f"cloche-regions-{slot}"], capture_output=True, timeout=30)
        owner.unlink(missing_ok=True)
        swept.append(slot)
    return swept


def valid_region(name: str) -> bool:
    """Whether `name` can name a region's namespace: lower-case letters, digits and dashes."""
    return bool(NAME.match(name))


@dataclass(frozen=True)
class RegionNet:
    """One region's namespace, its veth pair and its addresses."""

    name: str
    index: int
    slot: int

    @property
    def netns(self) -> str:
        return f"cloche-r{self.slot}-{self.name}"

    @property
    def host_if(self) -> str:
        return f"cloche-{self.slot}h{self.index}"

    @property
    def ns_if(self) -> str:
        return f"cloche-{self.slot}n{self.index}"

    @property
    def gateway(self) -> str:
        """The host's end: what the region's processes reach the cluster's services at."""
        return f"10.{200 + self.slot}.{self.index}.1"

    @property
    def address(self) -> str:
        """The region's end: where its nodes listen."""
        return f"10.{200 + self.slot}.{self.index}.2"

    def reach(self, value: str) -> str:
        """A loopback address (of etcd, PostgreSQL or S3) as the region reaches it."""
        return value.replace("127.0.0.1", self.gateway)

    def environ(self, env: Mapping[str, str]) -> dict[str, str]:
        """`env` with the CLOCHE_ settings' loopback addresses made reachable from the region."""
        return {k: self.reach(v) if k.startswith("CLOCHE_") else v for k, v in env.items()}

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside the region's network namespace (and no other namespace:
        `ip netns exec` would remount /sys, hiding the cgroup mounts a node needs)."""
        return ["nsenter", f"--net=/run/netns/{self.netns}", "--", *argv]

    def create_veth(self) -> None:
        _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)

    def build(self) -> None:
        """The namespace, joined to the host (the veth pair must exist: `create_veth`)."""
        _run("ip", "netns", "add", self.netns)
        _run("ip", "link", "set", self.ns_if, "netns", self.netns)
        _run("ip", "addr", "add", f"{self.gateway}/30", "dev", self.host_if)
        Path(f"/proc/sys/net/ipv4/conf/{self.host_if}/route_localnet").write_text("1")
        _run("ip", "link", "set", self.host_if, "up")
        inside = ("ip", "netns", "exec", self.netns)
        _run(*inside, "ip", "link", "set", "lo", "up")
        _run(*inside, "ip", "addr", "add", f"{self.address}/30", "dev", self.ns_if)
        _run(*inside, "ip", "link", "set", self.ns_if, "up")
        _run(*inside, "ip", "route", "add", "default", "via", self.gateway)

    def cut(self) -> None:
        """Partition the region: nothing in or out but its own loopback."""
        rules = (f"table inet {CUT_TABLE} {{\n"
                 f"  chain in {{ type filter hook input priority -10; iifname != \"lo\" drop; }}\n"
                 f"  chain out {{ type filter hook output priority -10; oifname != \"lo\" drop; }}\n}}\n")  # fmt: skip
        _run(*self.command(["nft", "-f", "-"]), stdin=rules)

    def mend(self) -> None:
        """Undo `cut`."""
        _run(*self.command(["nft", "delete", "table", "inet", CUT_TABLE]))

    def remove(self) -> None:
        """The namespace and the veth pair (deleting either end deletes both)."""
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=30)


class Regions:
    """Every region's namespace, and the host's rules that join them."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.nets: dict[str, RegionNet] = {}
        self.slot = -1

    @property
    def table(self) -> str:
        return f"cloche-regions-{self.slot}"

    def create(self, service_ports: Sequence[int], relay_port: int) -> None:
        """Build the namespaces: services on `service_ports` of 127.0.0.1 are reached
        at each region's gateway, other regions through the relay on `relay_port`."""
        sweep_stale()
        self.slot = self._claim_slot()
        try:
            for index, name in enumerate(self.names):
                net = RegionNet(name, index, self.slot)
                if index:
                    net.create_veth()
                self.nets[name] = net
                net.build()
            _run("nft", "-f", "-", stdin=self._rules(service_ports, relay_port))
        except BaseException:
            self.remove()
            raise

    def _claim_slot(self) -> int:
        """The first slot whose first veth could be created (creating it is the claim)."""
        for slot in range(SLOTS):
            first = RegionNet(self.names[0], 0, slot)
            try:
                first.create_veth()
            except RuntimeError:
                continue
            if Path(f"/run/netns/{first.netns}").exists():  # a namespace left over by a crash
                first.remove()
                continue
            self.nets[first.name] = first
            OWNERS.mkdir(parents=True, exist_ok=True)
            (OWNERS / str(slot)).write_text(str(os.getpid()))
            return slot
        raise RuntimeError(f"no free region slot: {SLOTS} local clusters with regions already run")

    def _rules(self, service_ports: Sequence[int], relay_port: int) -> str:
        ports = ", ".join(str(p) for p in service_ports)
        lines = []
        for net in self.nets.values():
            lines.append(f"iifname {net.host_if} ip daddr {net.gateway} tcp dport {{ {ports} }} dnat to 127.0.0.1")
            others = [o.address for o in self.nets.values() if o is not net]
            if others:
                lines.append(f"iifname {net.host_if} ip daddr {{ {', '.join(others)} }} "
                             f"ip protocol tcp dnat to 127.0.0.1:{relay_port}")  # fmt: skip
        body = "\n    ".join(lines)
        veths = ", ".join(net.host_if for net in self.nets.values())
        return (f"table ip {self.table} {{\n  chain pre {{\n    type nat hook prerouting priority dstnat;\n"
                f"    {body}\n  }}\n"
                f"  chain forward {{\n    type filter hook forward priority filter;\n"
                f"    iifname {{ {veths} }} counter drop\n  }}\n}}\n")  # fmt: skip

    def remove(self) -> None:
        """Everything `create` made; safe to call more than once."""
        if self.slot >= 0:
            subprocess.run(["nft", "delete", "table", "ip", self.table], capture_output=True, timeout=30)
        for net in self.nets.values():
            net.remove()
        self.nets.clear()
        if self.slot >= 0:
            (OWNERS / str(self.slot)).unlink(missing_ok=True)
        self.slot = -1  # a second call must not touch a slot another cluster may claim meanwhile
