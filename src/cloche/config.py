"""Server settings and the data-directory layout (embedded mode: one process, one node).

The one configuration system: every setting the server reads from its environment is
a field here, overridden by CLOCHE_<FIELD> (`apply_env`); no other module reads
os.environ for configuration. Plain values only: `server/node_settings.py` turns them
into the node's types, so this module imports nothing of cloche."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
INIT_BINARY = PACKAGE_DIR / "_bin" / "cloche-init"


@dataclass
class Settings:
    data_dir: Path = Path(".cloche")
    host: str = "127.0.0.1"
    port: int = 8787
    pool_size: int = 2
    pool_template: str = "base"
    # The isolation tier of sandboxes that do not choose one: runc or gvisor (README
    # "Isolation tiers"). `driver=runsc` is the old spelling of isolation=gvisor.
    isolation: str = "runc"
    driver: str = "runc"
    blob_url: str = "local"  # snapshot store: local, file:///dir or s3://bucket/prefix?endpoint=URL
    # Per-tenant defaults; the admin can set others per tenant.
    max_sandboxes: int = 100
    max_cpu: float = 64.0
    max_memory_mb: int = 64 * 1024
    rate_per_s: float = 200.0
    rate_burst: int = 400
    # The embedded node as the scheduler sees it (0: detect cpus / MemTotal; disk 0: not checked).
    node_cpu: float = 0.0
    node_memory_mb: int = 0
    node_disk_mb: int = 0
    node_region: str = "local"
    # Allocation is by request, up to capacity x these ratios; live usage keeps it honest.
    # cpu is compressible (a limit caps bursts, idle agents use none), memory is not.
    cpu_overcommit: float = 32.0
    memory_overcommit: float = 1.5
    disk_overcommit: float = 1.0
    usage_high_water: float = 0.85  # of physical memory: take nothing more, hibernate idle sandboxes
    create_wait_s: float = 30.0  # how long a create may queue for room when it does not say (wait_s)
    preempt_idle_s: float = 60.0  # sandboxes idle this long may be hibernated to make room
    scheduler_weights: str = ""  # e.g. "latency=4,binpack=1" (see scheduler/policies.py)
    latency_matrix: str = ""  # e.g. "us-eu=80,us-ap=160" (ms)
    pool_autosize: int = 1  # size the warm pool from its claim rate (pool_size is the floor)
    pool_budget_mb: int = 0  # memory for warm sandboxes (0: 5% of the node's memory)
    # Networking (README "Networking"): every sandbox gets a routed veth and a policy.
    network: int = 1  # 0: loopback-only sandboxes (no veth, no egress, no exposed ports)
    network_default: str = "internet"  # the policy of a sandbox created without one: internet or none
    network_pool: str = "100.64.0.0/16"  # one /31 per sandbox, claimed host-wide
    network_uplink: str = ""  # the only interface sandbox traffic may leave by ("": the default route's)
    network_dns: str = ""  # upstream resolvers, comma-separated host[:port] ("": the host's resolv.conf)
    network_open_ranges: str = ""  # private CIDRs sandboxes may reach, comma-separated (default: none)
    network_max_connections: int = 1024  # default cap on a sandbox's concurrent outbound connections
    network_dns_rate: float = 20.0  # DNS queries per second per sandbox (burst: 50)
    # The egress proxy (network `rules`, `egress_proxy`): ports treated as HTTP and as
    # HTTPS for hosts with rules, and CA certificates trusted for upstreams besides the
    # system store (PEM file; "": the system store only).
    egress_http_ports: str = "80"
    egress_https_ports: str = "443"
    egress_upstream_ca_file: str = ""
    ingress_domain: str = "localhost"  # exposed ports at {port}-{id}.{domain}
    # Fernet keys that encrypt tenants' secrets at rest, one per line, newest first; created
    # (0600) at first start, rewritten by `cloche secret rotate-key` ("": DATA/secret-keys).
    secret_keys_file: str = ""
    # Stopping (SIGTERM/SIGINT): requests in flight get this long, then every running
    # sandbox is hibernated (files kept, woken after the restart) or killed.
    shutdown_grace_s: float = 30.0
    on_shutdown: str = "hibernate"  # hibernate or kill
    # One JSON line per request on the `cloche.access` logger (README "Operations: access log").
    access_log: int = 1
    # Control-plane records: sqlite:///PATH or postgresql://... ("": SQLite in
    # DATA/cloche.db, upgraded at start); `cloche db upgrade` upgrades PostgreSQL's schema.
    database_url: str = ""
    # Durable state (KV + log, README "State"): PostgreSQL when a DSN is given, else
    # SQLite in DATA/state.db; the largest value a put may store (0: the engine's default).
    state_dsn: str = ""
    state_max_value_bytes: int = 0
    # Cluster mode (docs/cluster.md): etcd's host:port ("": one machine, the embedded node),
    # the key prefix there, the cluster dir (the CA, and each node's credential under
    # node-credentials/), the lease of every node and server replica, and how often the
    # leader checkpoints each running sandbox to the snapshot store.
    etcd: str = ""
    etcd_prefix: str = "/cloche/"
    cluster_dir: str = ""
    lease_ttl_s: int = 10
    lease_margin_s: float = 3.0
    rtt_probe_interval_s: float = 10.0  # how often each node times the round trip to every region (0: never)
    checkpoint_interval_s: float = 30.0
    # The URL the other replicas reach this one at, to forward a sandbox's envd calls to
    # their home replica (e2b/home.py; "": http://HOST:PORT of --listen, see advertise_url).
    advertise: str = ""
    # Regions (docs/cluster.md "Regions"): a snapshot store per region, e.g.
    # "eu=s3://b-eu/cloche?endpoint=...,us=s3://b-us/cloche" (a region not named uses
    # blob_url), and when an agent follows its user to another region on its next wake:
    # at least follow_min_requests in the last follow_window_s, follow_threshold of them
    # from that region, and no move in the last follow_cooldown_s (geo.follow.FollowRule's
    # defaults, tuned by `cloche sim --geo`: docs/regions.md).
    region_blob_urls: str = ""
    follow_window_s: float = 300.0
    follow_min_requests: int = 1
    follow_threshold: float = 0.7
    follow_cooldown_s: float = 600.0
    # This replica's region, the user's region when a
    # request names none (its `cloche-region` header) and its client's address is not in
    # `client_regions` ("10.1.0.0/16=eu,192.0.2.0/24=us"); "" with no map: no preference.
    region: str = ""
    client_regions: str = ""
    # Request limits.
    max_json_bytes: int = 1 << 20
    max_file_bytes: int = 256 << 20
    max_archive_bytes: int = 1 << 30

    def apply_env(self, environ: Mapping[str, str]) -> Settings:
        """Override settings from CLOCHE_<FIELD> variables (e.g. CLOCHE_RATE_PER_S)."""
        for f in fields(self):
            raw = environ.get(f"CLOCHE_{f.name.upper()}")
            if raw is not None and f.type == "str":
                setattr(self, f.name, raw)
            elif raw is not None and f.type in ("int", "float"):
                try:
                    setattr(self, f.name, int(raw) if f.type == "int" else float(raw))
                except ValueError:
                    raise ValueError(f"CLOCHE_{f.name.upper()} must be a number, got {raw!r}") from None
        return self

    def blob_urls(self) -> dict[str, str]:
        """Each region's snapshot store, as region_blob_urls names them."""
        urls = {}
        for part in filter(None, (p.strip() for p in self.region_blob_urls.split(","))):
            region, sep, url = part.partition("=")
            if not sep or not region.strip() or not url.strip():
                raise ValueError(f"CLOCHE_REGION_BLOB_URLS: expected region=url, got {part!r}")
            urls[region.strip()] = url.strip()
        return urls

    def region_blob_url(self, region: str) -> str:
        """The snapshot store of `region`'s nodes."""
        return self.blob_urls().get(region, self.blob_url)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "cloche.db"

    @property
    def advertise_url(self) -> str:
        """`advertise`, else the --listen address; a wildcard one (0.0.0.0, as in a
        container) becomes the address the host name resolves to (the pod's or container's)."""
        if self.advertise:
            return self.advertise
        host = socket.gethostbyname(socket.gethostname()) if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def admin_key_path(self) -> Path:
        return self.data_dir / "admin-key"

    @property
    def secret_keys_path(self) -> Path:
        return Path(self.secret_keys_file) if self.secret_keys_file else self.data_dir / "secret-keys"

