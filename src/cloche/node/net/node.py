"""NodeNetwork: every sandbox's network on this node, for the runtime to drive.

It joins the pieces: an address pair from the node's pool (claimed host-wide), the
veth link into the container's namespace, the node's nftables table, bandwidth
shaping, and the DNS resolver whose answers open hostname rules. The runtime calls
`prepare` before starting a container (the address is known, so resolv.conf can be
bound in), `attach` once it runs, `apply` to put a policy in force (a warm-pool claim
does only that), and `detach` when its processes go. A restarted node rebuilds its
table and `adopt`s sandboxes that kept running; links it does not know are removed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import dns.asyncresolver
import dns.exception

from cloche.node.errors import InvalidSpec, RuntimeFailure
from cloche.node.net import links
from cloche.node.net.dns import Decision, Resolver
from cloche.node.net.egress.ca import NodeCA
from cloche.node.net.egress.context import ConnectionContext, SecretDenied, SecretLookup
from cloche.node.net.egress.proxy import EgressProxyServer
from cloche.node.net.egress.socks import open_tunnel
from cloche.node.net.firewall import ALWAYS_DENIED, PRIVATE, Counters, Firewall, FirewallConfig
from cloche.node.net.nft import Nft
from cloche.node.net.policy import NetworkPolicy
from cloche.node.net.rules import EgressProxy
from cloche.node.uids import HostClaims

log = logging.getLogger("cloche.net")


@dataclass
class NetConfig:
    pool: str = "100.64.0.0/16"  # one /31 per sandbox
    uplink: str = ""  # the interface sandbox traffic leaves by ("": that of the default route)
    dns_upstreams: tuple[str, ...] = ()  # host:port or host ("": the host's /etc/resolv.conf servers)
    open_ranges: tuple[str, ...] = ()  # private ranges sandboxes may reach
    max_connections: int = 1024  # default cap on a sandbox's concurrent outbound connections
    dns_rate_per_s: float = 20.0
    dns_burst: int = 50
    mtu: int = 1500
    proxy_http_ports: tuple[int, ...] = (80,)  # ports whose requests to rule hosts are rewritten as HTTP
    proxy_https_ports: tuple[int, ...] = (443,)  # ... as HTTPS (TLS terminated with the node's CA)
    upstream_ca_file: str = ""  # CA certificates trusted for upstreams, besides the system store
    dial_timeout_s: float = 10.0


def host_resolvers(path: Path = Path("/etc/resolv.conf")) -> list[tuple[str, int]]:
    servers = []
    try:
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                try:
                    if ipaddress.ip_address(parts[1]).version == 4 and not parts[1].startswith("127."):
                        servers.append((parts[1], 53))
                except ValueError:
                    continue
    except OSError:
        pass
    return servers


def _upstream(text: str) -> tuple[str, int]:
    host, _, port = text.partition(":")
    return host, int(port or 53)


# How many (name, address) answers the proxy remembers per sandbox for `resolved`.
MAX_RESOLVED_PER_SANDBOX = 4096


def _no_secrets(sandbox_id: str, name: str, host: str) -> str:
    raise SecretDenied(f"no secret named {name!r}: this node has no secret store")


class NodeNetwork:
    def __init__(self, node_key: str, config: NetConfig, run_root: Path, state_dir: Path) -> None:
        self.key = node_key
        self.config = config
        self.pool = links.AddressPool(config.pool)
        self.claims = HostClaims(run_root / "net", self.pool.size, "sandbox address")
        self.alias_prefix = f"{links.ALIAS_PREFIX}{node_key}:"
        self.nft = Nft()
        self.firewall: Firewall | None = None
        self.resolver: Resolver | None = None
        self._links: dict[str, links.Link] = {}  # sandbox id -> link
        self._by_address: dict[str, str] = {}  # sandbox address -> sandbox id
        self._policies: dict[str, NetworkPolicy] = {}
        self._netns: dict[str, str] = {}  # sandbox id -> the path of its network namespace
        # sandbox id -> {(name, address): expiry}: what its lookups of rule hosts answered
        self._resolved: dict[str, dict[tuple[str, str], float]] = {}
        self.uplink = ""
        self.node_addresses: tuple[str, ...] = ()
        self.ca = NodeCA.load_or_create(state_dir / "egress-ca", f"cloche node {node_key}")
        # Filled by the control plane: the value of a tenant's secret for a request.
        self.secrets: SecretLookup = _no_secrets
        self.proxy: EgressProxyServer | None = None

    # ---- node lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        upstreams = [_upstream(u) for u in self.config.dns_upstreams] or host_resolvers()
        self.resolver = Resolver(host="0.0.0.0", port=0, upstreams=upstreams, decide=self._decide,
                                 learned=self._learned, rate_per_s=self.config.dns_rate_per_s,
                                 burst=self.config.dns_burst)  # fmt: skip
        await self.resolver.start()
        self._upstreams = upstreams
        self.proxy = EgressProxyServer(
            ca=self.ca, lookup=self._context, secrets=lambda *a: self.secrets(*a), dial=self._dial,
            upstream_cafile=self.config.upstream_ca_file or None, http_ports=self.config.proxy_http_ports,
            https_ports=self.config.proxy_https_ports,
        )  # fmt: skip
        await self.proxy.start()
        await asyncio.to_thread(self._build)

    def _build(self) -> None:
        default_uplink, addresses = links.address_of_default_route()
        self.node_addresses = tuple(addresses)
        self.uplink = self.config.uplink or default_uplink
        if not self.uplink:
            log.warning("no uplink interface (no default route): sandboxes have no egress")
        _sysctl("/proc/sys/net/ipv4/ip_forward", "1")
        assert self.resolver is not None
        self.firewall = Firewall(self.nft, FirewallConfig(
            table=f"cloche_{self.key}", pool=str(self.pool.network), uplink=self.uplink,
            resolver_port=self.resolver.port, proxy_port=self.proxy.port if self.proxy else 0,
            node_addresses=tuple(addresses),
            open_ranges=self.config.open_ranges, default_max_connections=self.config.max_connections,
        ))  # fmt: skip
        self.firewall.build()

    async def close(self, *, remove_table: bool) -> None:
        if self.resolver:
            await self.resolver.close()
        if self.proxy:
            await self.proxy.close()
        if remove_table and self.firewall:
            await asyncio.to_thread(self.firewall.remove)

    def reap_unknown(self, live: set[str]) -> list[str]:
        """Remove links of this node whose sandbox is not live; returns their names."""
        removed = []
        for ifname, alias in list(links.ours(self.alias_prefix)):
            if alias[len(self.alias_prefix) :] not in live:
                links.delete(ifname)
                removed.append(ifname)
        for index in self.claims.owned_by(self.key):
            if index not in {link.index for link in self._links.values()}:
                self.claims.release(index)
        return removed

    # ---- sandboxes -------------------------------------------------------------------

    def prepare(self, sandbox_id: str, rdir: Path) -> links.Link:
        """Claim the sandbox's addresses and write the resolv.conf bound into it."""
        link = self._links.get(sandbox_id)
        if link is None:
            link = self.pool.link(self.claims.allocate(self.key))
            self._links[sandbox_id] = link
            self._by_address[link.address] = sandbox_id
        (rdir / "resolv.conf").write_text(f"nameserver {link.host_address}\noptions attempts:2 timeout:2\n")
        return link

    def attach(self, sandbox_id: str, netns: str, policy: NetworkPolicy | None) -> None:
        """Wire the container's network namespace (that of a running runc container, or
        one made for a gVisor sandbox about to start): its veth, firewall entries and,
        unless it is a warm-pool sandbox waiting for its user (policy None), its policy."""
        link = self._links[sandbox_id]
        assert self.firewall is not None
        links.delete(link.host_ifname)  # a stale pair of a crashed run of this index
        links.create(link, netns, f"{self.alias_prefix}{sandbox_id}", self.config.mtu)
        self._netns[sandbox_id] = netns
        self.firewall.add_sandbox(link.index, link.host_ifname, link.address)
        if policy is not None:
            self.apply(sandbox_id, policy)

    def adopt(self, sandbox_id: str, net: dict[str, object], netns: str, policy: NetworkPolicy) -> bool:
        """After a restart: take back a running sandbox's link (False if it is gone)."""
        index = net.get("index")
        if not isinstance(index, int):
            return False
        link = self.pool.link(index)
        present = any(name == link.host_ifname for name, alias in links.ours(f"{self.alias_prefix}{sandbox_id}"))
        if not present:
            return False
        assert self.firewall is not None
        self.claims.claim(index, self.key)
        self._links[sandbox_id] = link
        self._by_address[link.address] = sandbox_id
        self._netns[sandbox_id] = netns
        self.firewall.add_sandbox(link.index, link.host_ifname, link.address)
        self.apply(sandbox_id, policy)
        return True

    def apply(self, sandbox_id: str, policy: NetworkPolicy) -> None:
        """Put `policy` in force for new connections (see `cut` for open ones)."""
        link = self._links.get(sandbox_id)
        if link is None or self.firewall is None:
            return
        if policy.egress_proxy and _is_address(policy.egress_proxy.host):
            self.check_public(policy.egress_proxy.host, "network.egress_proxy.address")
        old = self._policies.get(sandbox_id)
        limits = (policy.ingress_mbps, policy.egress_mbps)
        old_limits = (old.ingress_mbps, old.egress_mbps) if old else (None, None)
        if limits != old_limits:
            links.shape(link, self._netns[sandbox_id], *limits)
        try:
            self.firewall.apply(link.index, link.address, policy)
        except BaseException:
            if limits != old_limits:
                links.shape(link, self._netns[sandbox_id], *old_limits)
            raise
        self._policies[sandbox_id] = policy

    def cut(self, sandbox_id: str) -> None:
        """Cut the sandbox's open connections that the policy in force denies."""
        link = self._links.get(sandbox_id)
        if link is not None:
            _flush_conntrack(link.address, ("-s",))

    def detach(self, sandbox_id: str) -> None:
        """Remove the sandbox's link, firewall entries and address claim."""
        link = self._links.pop(sandbox_id, None)
        self._policies.pop(sandbox_id, None)
        self._netns.pop(sandbox_id, None)
        self._resolved.pop(sandbox_id, None)
        if link is None:
            for ifname, _ in list(links.ours(f"{self.alias_prefix}{sandbox_id}")):
                links.delete(ifname)
            return
        self._by_address.pop(link.address, None)
        if self.firewall:
            self.firewall.remove_sandbox(link.index, link.host_ifname, link.address)
        links.delete(link.host_ifname)
        _flush_conntrack(link.address, ("-s", "-d"))
        if self.resolver:
            self.resolver.forget(link.address)
        self.claims.release(link.index)

    def link(self, sandbox_id: str) -> links.Link | None:
        return self._links.get(sandbox_id)

    def counters(self) -> dict[str, Counters]:
        """Traffic counters of every attached sandbox, by sandbox id."""
        if self.firewall is None:
            return {}
        by_index = self.firewall.counters()
        return {sid: by_index.get(link.index, Counters()) for sid, link in self._links.items()}

    def counters_of(self, sandbox_id: str) -> Counters:
        link = self._links.get(sandbox_id)
        if link is None or self.firewall is None:
            return Counters()
        return self.firewall.counters_of(link.index)

    def proxy_metrics(self) -> dict[str, int]:
        """The egress proxy's counters (connections, transforms, denials, upstream errors)."""
        return self.proxy.metrics() if self.proxy else {}

    def dns_stats(self, sandbox_id: str) -> dict[str, int]:
        link = self._links.get(sandbox_id)
        if link is None or self.resolver is None:
            return {"queries": 0, "refused": 0, "rate_limited": 0}
        return self.resolver.stats(link.address)

    # ---- the resolver's questions ----------------------------------------------------

    def _decide(self, source: str, name: str) -> Decision | None:
        sandbox_id = self._by_address.get(source)
        policy = self._policies.get(sandbox_id) if sandbox_id else None
        if policy is None:
            return None
        allowed, rules = policy.decide_name(name)
        return Decision(allowed, rules, tuple((s, 53) for s in policy.dns_servers))

    async def _learned(self, source: str, name: str, rules: tuple[int, ...], addrs: list[tuple[str, int]]) -> None:
        sandbox_id = self._by_address.get(source)
        link = self._links.get(sandbox_id) if sandbox_id else None
        if sandbox_id is None or link is None or self.firewall is None:
            raise RuntimeFailure(f"{source} is no longer a sandbox of this node")
        self.firewall.learn(link.index, rules, addrs)
        policy = self._policies.get(sandbox_id)
        if policy is None:
            return
        if policy.egress_proxy is not None:
            self._remember(sandbox_id, name, addrs)  # all its TCP comes to the proxy already
        elif policy.transforms_for(name) and self.proxy:
            self._remember(sandbox_id, name, addrs)
            self.firewall.steer(link.address, addrs, self.config.proxy_http_ports + self.config.proxy_https_ports)

    def _remember(self, sandbox_id: str, name: str, addrs: list[tuple[str, int]]) -> None:
        now = time.monotonic()
        seen = self._resolved.setdefault(sandbox_id, {})
        if len(seen) >= MAX_RESOLVED_PER_SANDBOX:
            for key in [k for k, expiry in seen.items() if expiry <= now] or list(seen)[: len(seen) // 2]:
                del seen[key]
        for addr, ttl in addrs:
            seen[(name, addr)] = now + max(1, ttl)

    # ---- the egress proxy's questions ------------------------------------------------

    def _context(self, source: str) -> ConnectionContext | None:
        sandbox_id = self._by_address.get(source)
        policy = self._policies.get(sandbox_id) if sandbox_id else None
        if sandbox_id is None or policy is None or not policy.intercepts:
            return None
        seen = self._resolved.get(sandbox_id, {})

        def resolved(name: str, addr: str) -> bool:
            return seen.get((name.lower().rstrip("."), addr), 0.0) > time.monotonic()

        return ConnectionContext(sandbox_id, policy.transforms_for, resolved, policy.egress_proxy)

    async def _dial(
        self, ip: str, port: int, socks: EgressProxy | None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The proxy's upstream connection: direct, or through the sandbox's SOCKS5 proxy
        (never falling back to direct when that fails)."""
        if socks is not None:
            return await open_tunnel(socks, ip, port, resolve=self._resolve_name,
                                     check_address=lambda a: self.check_public(a, "egress proxy"),
                                     timeout=self.config.dial_timeout_s)  # fmt: skip
        return await asyncio.wait_for(asyncio.open_connection(ip, port), self.config.dial_timeout_s)

    async def _resolve_name(self, name: str) -> list[str]:
        """A host name's IPv4 addresses, asked of the node's upstream resolvers."""
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [host for host, _ in self._upstreams]
        resolver.port = self._upstreams[0][1] if self._upstreams else 53
        try:
            answer = await resolver.resolve(name, "A", lifetime=self.config.dial_timeout_s)
        except (dns.exception.DNSException, OSError) as e:
            raise RuntimeFailure(f"{name} does not resolve: {e}") from None
        return [r.address for r in answer]

    def check_public(self, address: str, what: str) -> None:
        """Raise InvalidSpec unless `address` is outside every range a sandbox may never
        reach (metadata, link-local, loopback, the node, the sandboxes, private ranges
        the operator did not open): the node connects there on the sandbox's behalf."""
        ip = ipaddress.IPv4Address(address)
        opened = [ipaddress.ip_network(r) for r in self.config.open_ranges]
        closed = [*ALWAYS_DENIED, self.config.pool, *(f"{a}/32" for a in self.node_addresses)]
        for cidr in closed + [r for r in PRIVATE if not any(ip in o for o in opened)]:
            if ip in ipaddress.ip_network(cidr):
                raise InvalidSpec(f"{what}: {address} is an internal address ({cidr}); it must be a public one")

    async def check_policy(self, policy: NetworkPolicy) -> None:
        """Checks that need the network: the user's SOCKS5 proxy must resolve to a
        public address (checked again at every dial, where the address is pinned)."""
        proxy = policy.egress_proxy
        if proxy is None:
            return
        where = "network.egress_proxy.address"
        addresses = [proxy.host] if _is_address(proxy.host) else await self._resolve_or_invalid(proxy.host, where)
        for address in addresses:
            self.check_public(address, where)

    async def _resolve_or_invalid(self, name: str, where: str) -> list[str]:
        try:
            return await self._resolve_name(name)
        except RuntimeFailure as e:
            raise InvalidSpec(f"{where}: {e}") from None


def _is_address(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def _sysctl(path: str, value: str) -> None:
    with open(path) as f:
        if f.read().strip() == value:
            return
    with open(path, "w") as f:
        f.write(value)


def _flush_conntrack(address: str, directions: tuple[str, ...]) -> None:
    """Forget the sandbox's tracked connections (those it opened: -s; to it: -d): their
    next packet is judged afresh by the policy in force, and a denied one is reset."""
    for flag in directions:
        subprocess.run(["conntrack", "-D", flag, address], capture_output=True)
