"""The server's settings as the embedded node's configuration. `config.py` holds plain
values read from CLOCHE_<FIELD> and imports nothing of the node; this is where they
become the node's own types (NodeConfig, NetConfig, Limits), checked on the way."""

from __future__ import annotations

from cloche.config import INIT_BINARY, Settings
from cloche.node.config import NodeConfig
from cloche.node.net.node import NetConfig
from cloche.node.spec import ISOLATIONS, Limits


def node_config(settings: Settings) -> NodeConfig:
    """The node's own settings; its snapshots go to its region's store."""
    return NodeConfig(data_dir=settings.data_dir, init_binary=INIT_BINARY, isolation=default_isolation(settings),
                      pool_size=settings.pool_size, pool_template=settings.pool_template, pool_limits=Limits(),
                      blob_url=settings.region_blob_url(settings.node_region),
                      network=net_config(settings))  # fmt: skip


def net_config(settings: Settings) -> NetConfig | None:
    """The node's network settings (None: networking off)."""
    s = settings
    if not s.network:
        return None
    if s.network_default not in ("internet", "none"):
        raise ValueError(f"network_default must be internet or none, got {s.network_default!r}")
    return NetConfig(pool=s.network_pool, uplink=s.network_uplink, dns_upstreams=_split(s.network_dns),
                     open_ranges=_split(s.network_open_ranges), max_connections=s.network_max_connections,
                     dns_rate_per_s=s.network_dns_rate, proxy_http_ports=_ports(s.egress_http_ports),
                     proxy_https_ports=_ports(s.egress_https_ports),
                     upstream_ca_file=s.egress_upstream_ca_file)  # fmt: skip


def default_isolation(settings: Settings) -> str:
    if settings.driver not in ("runc", "runsc"):
        raise ValueError(f"driver must be runc or runsc, got {settings.driver!r}")
    isolation = "gvisor" if settings.driver == "runsc" else settings.isolation
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation must be one of {', '.join(ISOLATIONS)}, got {isolation!r}")
    return isolation


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _ports(value: str) -> tuple[int, ...]:
    try:
        ports = tuple(int(part) for part in _split(value))
    except ValueError:
        raise ValueError(f"ports must be comma-separated numbers, got {value!r}") from None
    if not all(1 <= p <= 65535 for p in ports):
        raise ValueError(f"ports must be between 1 and 65535, got {value!r}")
    return ports
