"""Which OCI runtime driver runs each isolation tier."""

from __future__ import annotations

import shutil
from pathlib import Path

from cloche.node.errors import RuntimeFailure
from cloche.node.gvisor import GvisorDriver
from cloche.node.runc import OciDriver, RuncDriver

DRIVERS: dict[str, type[OciDriver]] = {"runc": RuncDriver, "gvisor": GvisorDriver}


def available(run_dir: Path) -> dict[str, OciDriver]:
    """A driver for every tier whose runtime is installed; state under run_dir/<binary>."""
    return {name: cls(run_dir / cls.binary_name) for name, cls in DRIVERS.items() if shutil.which(cls.binary_name)}


def missing(isolation: str) -> RuntimeFailure:
    binary = DRIVERS[isolation].binary_name
    return RuntimeFailure(f"isolation {isolation!r} needs {binary}, which is not installed (apt-get install {binary})")
