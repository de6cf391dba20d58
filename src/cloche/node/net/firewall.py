"""The node's egress firewall: one nftables table per node, owned by cloche.

Packets from a sandbox enter through the host side of its veth, outside anything its
root controls. The base chains do the same few lookups for every packet whatever the
number of sandboxes (a set of our interfaces, the interface-to-address bindings that
stop spoofing, the always-denied ranges) and then jump, through a verdict map keyed by
the sandbox's address, to that sandbox's own chain holding only its own rules. So the
cost per packet does not grow with the number of sandboxes.

Every change is one libnftables batch: a policy is replaced atomically, and a failed
change leaves the old one in force.

Connections for the node's egress proxy (hosts with request rules, or everything when
the sandbox tunnels through its own SOCKS5 proxy) are redirected in prerouting, so they
arrive on the input hook instead of forward. There the same judgement runs first, on the
connection's original destination (`ct original`): the always-denied sets, then the
sandbox's own rules in a twin chain (`pb<N>`), so a destination the policy denies never
reaches the proxy.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from cloche.node.net.nft import Nft, NftError
from cloche.node.net.policy import NetworkPolicy
from cloche.node.net.rules import Rule

# Never reachable from a sandbox, whatever its policy says.
ALWAYS_DENIED = ["0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32"]
# Private ranges (RFC 1918 and the RFC 6598 shared space): denied unless the operator opens one.
PRIVATE = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"]


@dataclass(frozen=True)
class FirewallConfig:
    table: str  # cloche_<node key>
    pool: str  # the sandboxes' address pool (CIDR)
    uplink: str  # the only interface sandbox traffic may leave by
    resolver_port: int
    proxy_port: int = 0  # the egress proxy's port (0: no proxy on this node)
    node_addresses: tuple[str, ...] = ()
    open_ranges: tuple[str, ...] = ()  # private ranges the operator opened
    default_max_connections: int = 1024


@dataclass(frozen=True)
class Counters:
    bytes_out: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    packets_in: int = 0
    denied: int = 0

    def to_json(self) -> dict[str, int]:
        return {"bytes_out": self.bytes_out, "packets_out": self.packets_out, "bytes_in": self.bytes_in,
                "packets_in": self.packets_in, "denied_connections": self.denied}  # fmt: skip


def _elements(items: list[str] | tuple[str, ...]) -> str:
    return f"elements = {{ {', '.join(items)} }}; " if items else ""


class Firewall:
    """The node's table: build it, and add, police and remove sandboxes in it."""

    def __init__(self, nft: Nft, config: FirewallConfig) -> None:
        self.nft = nft
        self.config = config
        self.t = f"inet {config.table}"
        self._generation: dict[int, int] = {}  # net index -> generation of its host-rule sets
        self._host_sets: dict[int, list[str]] = {}
        self._egress: set[int] = set()  # indices with an element in the egress map
        self._proxied: dict[int, bool] = {}  # indices with a proxy gate -> whether all their TCP is proxied

    # ---- the table ---------------------------------------------------------------------

    def build(self) -> None:
        """(Re)create the node's table from nothing, in one transaction."""
        c = self.config
        hard = ALWAYS_DENIED + [c.pool] + [f"{a}/32" for a in c.node_addresses]
        exists = any(fam == "inet" and name == c.table for fam, name in self.nft.tables())
        uplink = c.uplink or "cloche-no-uplink"
        proxy_port = c.proxy_port or 1  # with no proxy the rules match nothing: no set is ever filled
        self.nft.run(
            (f"delete table {self.t}\n" if exists else "")
            + f"""table {self.t} {{
  set ifaces {{ type ifname; }}
  set bindings {{ type ifname . ipv4_addr; }}
  set hard_deny {{ type ipv4_addr; flags interval; auto-merge; {_elements(hard)}}}
  set private {{ type ipv4_addr; flags interval; auto-merge; {_elements(PRIVATE)}}}
  set opened {{ type ipv4_addr; flags interval; auto-merge; {_elements(list(c.open_ranges))}}}
  map egress {{ type ipv4_addr : verdict; }}
  map proxy_egress {{ type ipv4_addr : verdict; }}
  set proxied {{ type ipv4_addr . ipv4_addr . inet_service; flags timeout; }}
  set tunnelled {{ type ipv4_addr; }}
  set resolving {{ type ipv4_addr; }}
  map cnt_out {{ type ipv4_addr : counter; }}
  map cnt_in {{ type ipv4_addr : counter; }}
  map cnt_deny {{ type ipv4_addr : counter; }}
  chain deny {{
    counter name ip saddr map @cnt_deny
    meta l4proto tcp reject with tcp reset
    reject with icmpx admin-prohibited
  }}
  chain from_sandbox {{
    meta nfproto ipv6 drop
    iifname . ip saddr != @bindings drop
    counter name ip saddr map @cnt_out
    ct state established,related accept
    ct state invalid drop
    oifname != "{uplink}" jump deny
    ip daddr @hard_deny jump deny
    ip daddr @private ip daddr != @opened jump deny
    ip saddr vmap @egress
    jump deny
  }}
  chain to_sandbox {{
    meta nfproto ipv6 drop
    counter name ip daddr map @cnt_in
    ct state established,related accept
    drop
  }}
  chain sandbox_to_node {{
    meta nfproto ipv6 drop
    iifname . ip saddr != @bindings drop
    ct state established,related accept
    meta l4proto {{ tcp, udp }} th dport {c.resolver_port} ct status dnat accept
    tcp dport {proxy_port} ct status dnat jump proxy_gate
    jump deny
  }}
  chain proxy_gate {{
    ct original ip daddr @hard_deny jump deny
    ct original ip daddr @private ct original ip daddr != @opened jump deny
    ip saddr vmap @proxy_egress
    jump deny
  }}
  chain forward {{
    type filter hook forward priority filter - 10; policy accept;
    iifname @ifaces jump from_sandbox
    oifname @ifaces jump to_sandbox
  }}
  chain input {{
    type filter hook input priority filter - 10; policy accept;
    iifname @ifaces jump sandbox_to_node
    meta l4proto {{ tcp, udp }} th dport {c.resolver_port} drop
    tcp dport {proxy_port} drop
  }}
  chain output {{
    type filter hook output priority filter - 10; policy accept;
    oifname @ifaces counter name ip daddr map @cnt_in
  }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname @ifaces ip saddr @resolving meta l4proto {{ tcp, udp }} th dport 53 redirect to :{c.resolver_port}
    iifname @ifaces ip saddr . ip daddr . tcp dport @proxied redirect to :{proxy_port}
    iifname @ifaces ip saddr @tunnelled ip daddr != {c.pool} meta l4proto tcp redirect to :{proxy_port}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {c.pool} oifname "{uplink}" masquerade
  }}
}}
"""
        )
        self._generation.clear()
        self._host_sets.clear()
        self._egress.clear()
        self._proxied.clear()

    def remove(self) -> None:
        if any(fam == "inet" and name == self.config.table for fam, name in self.nft.tables()):
            self.nft.run(f"delete table {self.t}")

    # ---- sandboxes -------------------------------------------------------------------

    def add_sandbox(self, index: int, ifname: str, address: str) -> None:
        """Bind the interface to its address, with counters; no egress until a policy."""
        self.nft.run(
            f"add element {self.t} ifaces {{ {ifname} }}\n"
            f"add element {self.t} bindings {{ {ifname} . {address} }}\n"
            f"add counter {self.t} o{index}\nadd counter {self.t} i{index}\nadd counter {self.t} d{index}\n"
            f'add element {self.t} cnt_out {{ {address} : "o{index}" }}\n'
            f'add element {self.t} cnt_in {{ {address} : "i{index}" }}\n'
            f'add element {self.t} cnt_deny {{ {address} : "d{index}" }}\n'
            f"add chain {self.t} sb{index}\n"
            f"add set {self.t} c{index} {{ type ipv4_addr; size 1; flags dynamic; }}\n"
        )

    def remove_sandbox(self, index: int, ifname: str, address: str) -> None:
        """Everything of one sandbox goes; tolerant of pieces already gone."""
        batch = [
            *(
                [
                    f"delete element {self.t} egress {{ {address} }}",
                    f"delete element {self.t} resolving {{ {address} }}",
                ]
                if index in self._egress
                else []
            ),
            f"delete element {self.t} cnt_out {{ {address} }}",
            f"delete element {self.t} cnt_in {{ {address} }}",
            f"delete element {self.t} cnt_deny {{ {address} }}",
            f"delete element {self.t} bindings {{ {ifname} . {address} }}",
            f"delete element {self.t} ifaces {{ {ifname} }}",
            *self._ungate(index, address),
            f"delete chain {self.t} sb{index}",
            f"delete set {self.t} c{index}",
            *(f"delete set {self.t} {name}" for name in self._host_sets.pop(index, [])),
            f"delete counter {self.t} o{index}",
            f"delete counter {self.t} i{index}",
            f"delete counter {self.t} d{index}",
        ]
        self._generation.pop(index, None)
        self._egress.discard(index)
        self._proxied.pop(index, None)
        try:
            self.nft.run("\n".join(batch))
        except NftError:
            for command in batch:  # some pieces were already gone: remove the rest one by one
                try:
                    self.nft.run(command)
                except NftError:
                    pass

    def apply(self, index: int, address: str, policy: NetworkPolicy) -> None:
        """Replace the sandbox's policy in one transaction."""
        gen = self._generation.get(index, 0) + 1
        old_sets = self._host_sets.get(index, [])
        new_sets = [f"h{index}g{gen}r{i}" for i, _ in policy.host_rules()]
        batch = [f"flush chain {self.t} sb{index}"]
        for name in new_sets:
            batch.append(f"add set {self.t} {name} {{ type ipv4_addr; flags timeout; }}")
        batch += self._chain(f"sb{index}", index, gen, policy, original=False)
        if policy.egress and index not in self._egress:
            batch.append(f"add element {self.t} egress {{ {address} : jump sb{index} }}")
            batch.append(f"add element {self.t} resolving {{ {address} }}")
        elif not policy.egress and index in self._egress:
            batch.append(f"delete element {self.t} egress {{ {address} }}")
            batch.append(f"delete element {self.t} resolving {{ {address} }}")
        tunnelled = policy.egress_proxy is not None
        if policy.intercepts and self.config.proxy_port:
            if index not in self._proxied:
                batch.append(f"add chain {self.t} pb{index}")
                batch.append(f"add element {self.t} proxy_egress {{ {address} : jump pb{index} }}")
            batch.append(f"flush chain {self.t} pb{index}")
            batch += self._chain(f"pb{index}", index, gen, policy, original=True)
            if tunnelled and not self._proxied.get(index):
                batch.append(f"add element {self.t} tunnelled {{ {address} }}")
            elif not tunnelled and self._proxied.get(index):
                batch.append(f"delete element {self.t} tunnelled {{ {address} }}")
        else:
            batch += self._ungate(index, address)
        batch += [f"delete set {self.t} {name}" for name in old_sets]
        self.nft.run("\n".join(batch))
        self._generation[index] = gen
        self._host_sets[index] = new_sets
        if policy.egress:
            self._egress.add(index)
        else:
            self._egress.discard(index)
        if policy.intercepts and self.config.proxy_port:
            self._proxied[index] = tunnelled
        else:
            self._proxied.pop(index, None)

    def _chain(self, chain: str, index: int, gen: int, policy: NetworkPolicy, *, original: bool) -> list[str]:
        """The rules of a sandbox's chain: `sb<N>` judges forwarded packets by their
        destination, its twin `pb<N>` judges proxied connections by their original one."""
        daddr = "ct original ip daddr" if original else "ip daddr"
        limit = policy.max_connections or self.config.default_max_connections
        out = [f"add rule {self.t} {chain} ct state new add @c{index} {{ ip saddr ct count over {limit} }} jump deny"]
        for i, rule in enumerate(policy.allow_out or ()):
            match = f"{daddr} @h{index}g{gen}r{i}" if rule.is_host else f"{daddr} {rule.target}"
            out.append(f"add rule {self.t} {chain} {match}{_ports(rule, original)} accept")
        for rule in policy.deny_out:
            if not rule.is_host:
                out.append(f"add rule {self.t} {chain} {daddr} {rule.target}{_ports(rule, original)} jump deny")
        out.append(f"add rule {self.t} {chain} " + ("accept" if policy.default_accept else "jump deny"))
        return out

    def _ungate(self, index: int, address: str) -> list[str]:
        """Commands that take a sandbox off the egress proxy (none if it was not on it)."""
        if index not in self._proxied:
            return []
        out = [f"delete element {self.t} proxy_egress {{ {address} }}", f"delete chain {self.t} pb{index}"]
        if self._proxied[index]:
            out.append(f"delete element {self.t} tunnelled {{ {address} }}")
        return out

    def steer(self, address: str, targets: list[tuple[str, int]], ports: tuple[int, ...]) -> None:
        """Send the sandbox's TCP to these addresses (on these ports) through the egress
        proxy, for the TTL of the answer that named them (a host with request rules)."""
        batch = []
        for addr, ttl in targets:
            ipaddress.IPv4Address(addr)
            for port in ports:
                batch += self._refresh("proxied", f"{address} . {addr} . {port}", ttl)
        if batch:
            self.nft.run("\n".join(batch))

    def learn(self, index: int, rules: tuple[int, ...], addrs: list[tuple[str, int]]) -> None:
        """Allow addresses a host rule's name resolved to, for their TTL."""
        gen = self._generation.get(index)
        if gen is None or not addrs:
            return
        batch = []
        for r in rules:
            name = f"h{index}g{gen}r{r}"
            if name not in self._host_sets.get(index, []):
                continue
            for addr, ttl in addrs:
                ipaddress.IPv4Address(addr)
                batch += self._refresh(name, addr, ttl)
        if batch:
            self.nft.run("\n".join(batch))

    def _refresh(self, set_name: str, element: str, ttl: int) -> list[str]:
        """Add (a no-op when present), delete, add again: the element's timeout restarts."""
        at = f"{self.t} {set_name}"
        return [f"add element {at} {{ {element} }}", f"delete element {at} {{ {element} }}",
                f"add element {at} {{ {element} timeout {max(1, int(ttl))}s }}"]  # fmt: skip

    def counters_of(self, index: int) -> Counters:
        """One sandbox's counters (three small listings, not the whole table)."""
        values = []
        for kind in "oid":
            try:
                objs = self.nft.list_json(f"counter {self.t} {kind}{index}")
            except NftError:
                return Counters()
            counter = next((o["counter"] for o in objs if "counter" in o), {})
            values.append((counter.get("bytes", 0), counter.get("packets", 0)))
        (ob, op), (ib, ip), (_, dp) = values
        return Counters(ob, op, ib, ip, dp)

    def counters(self) -> dict[int, Counters]:
        """Every sandbox's traffic counters, by net index, in one listing."""
        raw: dict[str, tuple[int, int]] = {}
        for obj in self.nft.list_json(f"counters table {self.t}"):
            counter: dict[str, Any] | None = obj.get("counter")
            if counter:
                raw[counter["name"]] = (counter.get("bytes", 0), counter.get("packets", 0))
        out: dict[int, Counters] = {}
        for name, (nbytes, packets) in raw.items():
            if name[0] != "o" or not name[1:].isdigit():
                continue
            index = int(name[1:])
            in_bytes, in_packets = raw.get(f"i{index}", (0, 0))
            out[index] = Counters(nbytes, packets, in_bytes, in_packets, raw.get(f"d{index}", (0, 0))[1])
        return out


def _ports(rule: Rule, original: bool = False) -> str:
    if rule.ports is None:
        return f" meta l4proto {rule.protocol}" if rule.protocol else ""
    low, high = rule.ports
    span = str(low) if low == high else f"{low}-{high}"
    if original:
        return f" meta l4proto {rule.protocol or 'tcp'} ct original proto-dst {span}"
    return f" {rule.protocol or 'tcp'} dport {span}"
