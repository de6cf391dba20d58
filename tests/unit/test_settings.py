"""One config system: the server's environment reaches every part through
`config.Settings.apply_env` (here the state engine's backend and value cap, which
state/service.py used to read from os.environ itself), and the node's own types are
built from those plain values in one place (server/node_settings.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloche.config import Settings
from cloche.server.node_settings import default_isolation, net_config, node_config
from cloche.state.postgres import PostgresEngine
from cloche.state.service import build_engine
from cloche.state.sqlite import SqliteEngine


def test_state_settings_come_from_the_environment_through_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path).apply_env({"CLOCHE_STATE_MAX_VALUE_BYTES": "4096"})
    engine = build_engine(settings)
    assert isinstance(engine, SqliteEngine) and engine.path == tmp_path / "state.db"
    assert engine.limits.max_value_bytes == engine.limits.max_entry_bytes == 4096
    dsn = "postgresql://nobody@127.0.0.1:1/none"
    assert isinstance(build_engine(Settings(data_dir=tmp_path).apply_env({"CLOCHE_STATE_DSN": dsn})), PostgresEngine)


def test_node_config_is_built_from_plain_settings(tmp_path: Path) -> None:
    env = {"CLOCHE_NETWORK_DNS": "1.1.1.1, 9.9.9.9:53", "CLOCHE_EGRESS_HTTPS_PORTS": "443,8443",
           "CLOCHE_DRIVER": "runsc"}  # fmt: skip
    settings = Settings(data_dir=tmp_path, pool_size=3).apply_env(env)
    config = node_config(settings)
    assert (config.data_dir, config.pool_size, config.isolation) == (tmp_path, 3, "gvisor")
    assert config.network is not None and config.network.dns_upstreams == ("1.1.1.1", "9.9.9.9:53")
    assert config.network.proxy_https_ports == (443, 8443)
    assert net_config(Settings(network=0)) is None


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("isolation", "kvm", "isolation must be one of"),
    ("driver", "crun", "driver must be runc or runsc"),
])  # fmt: skip
def test_bad_isolation_settings_are_refused(field: str, value: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        default_isolation(Settings(**{field: value}))


def test_bad_ports_are_refused() -> None:
    with pytest.raises(ValueError, match="between 1 and 65535"):
        net_config(Settings(egress_http_ports="80,70000"))
