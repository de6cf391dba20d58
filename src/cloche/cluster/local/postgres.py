"""A PostgreSQL server of the local cluster's own (Debian's `postgresql` binaries): its
data directory made with initdb on first start, the server run as a direct child on a
loopback port with no Unix socket, and the database `cloche` created, so the servers and
nodes share records and state as they would on a production PostgreSQL. It trusts the
region namespaces' addresses too: their nodes reach it through their gateway (netns.py).

PostgreSQL refuses to run as root, so under root it runs as the `postgres` user, which
must be able to reach its data directory.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

from cloche.cluster.local.netns import REGIONS_SUBNET
from cloche.cluster.local.process import Child, MissingService, free_ports

DATABASE = "cloche"
BIND_ATTEMPTS = 3  # a first start whose port was taken before it bound tries other ports


def postgres_bin() -> Path:
    """The newest installed PostgreSQL server's bin directory."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise MissingService("PostgreSQL", "apt-get install postgresql")
    return found[-1].parent


class PostgresServer:
    """One PostgreSQL server with its data in `root`, listening on 127.0.0.1:`port`."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.bin = postgres_bin()
        # A port picked here was free when picked; until PostgreSQL binds it (after initdb),
        # any socket may take it, an outgoing connection's included. The first start then
        # moves to another one (no client knows the port yet); a given port is kept.
        self._movable = port is None
        self.port = port or free_ports(1)[0]
        self.child: Child | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def _as_owner(self) -> dict[str, Any]:
        """Popen arguments that drop root to the `postgres` user (nothing when not root)."""
        if os.geteuid() != 0:
            return {}
        user = pwd.getpwnam("postgres")
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def _prepare(self) -> None:
        data = self.root / "data"
        self.root.mkdir(parents=True, exist_ok=True)
        owner = self._as_owner()
        if owner:
            os.chown(self.root, owner["user"], owner["group"])
        self.root.chmod(0o700)
        if subprocess.run(["test", "-w", str(self.root)], **owner).returncode:
            raise RuntimeError(
                f"PostgreSQL runs as the user `postgres`, who cannot reach {self.root}: "
                "choose a --data-dir every user can traverse (such as one under /var/tmp)"
            )
        if not (data / "PG_VERSION").exists():
            subprocess.run(
                [str(self.bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                 "--locale=C.UTF-8"],
                check=True, capture_output=True, **owner,
            )  # fmt: skip
        hba = data / "pg_hba.conf"
        allow_regions = f"host all all {REGIONS_SUBNET} trust  # the region namespaces (netns.py)\n"
        if allow_regions not in hba.read_text():
            with hba.open("a") as out:
                out.write(allow_regions)

    def start(self, timeout: float = 60.0, cancelled: threading.Event | None = None) -> None:
        """Start the server and return once the database `cloche` accepts connections."""
        self._prepare()
        for attempt in range(1, BIND_ATTEMPTS + 1):
            settings = {"listen_addresses": "127.0.0.1", "port": str(self.port), "unix_socket_directories": "",
                        "max_connections": "300"}  # fmt: skip
            argv = [str(self.bin / "postgres"), "-D", str(self.root / "data")]
            for name, value in settings.items():
                argv += ["-c", f"{name}={value}"]
            self.child = Child("PostgreSQL", argv, self.root / "postgres.log", **self._as_owner())
            try:
                self.child.wait_ready(self._database_ready, timeout, cancelled)
                self._movable = False  # its clients know the port from now on
                return
            except RuntimeError as e:
                if not self._movable or attempt == BIND_ATTEMPTS or "Address already in use" not in str(e):
                    raise
                self.port = free_ports(1)[0]

    def _database_ready(self) -> bool:
        """Whether the server answers; creates the database the first time it does."""
        import psycopg

        try:
            with psycopg.connect(self.dsn.rsplit("/", 1)[0] + "/postgres", autocommit=True, connect_timeout=1) as c:
                if c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
                    c.execute(f"CREATE DATABASE {DATABASE}")
                return True
        except psycopg.OperationalError:
            return False

    def stop(self) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, checkpoint, exit)."""
        if self.child is not None:
            self.child.stop(signal.SIGINT, timeout=30)
            self.child = None
