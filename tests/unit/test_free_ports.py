"""Ports picked for local clusters and test servers are reserved host-wide: between the
pick and the bind of the process a port is for, no other process may pick it."""

from __future__ import annotations

import subprocess
import sys

from cloche.cluster.local import process
from cloche.cluster.local.process import free_ports

PICKER = "from cloche.cluster.local.process import free_ports; print(*free_ports(3), flush=True); input()"


def test_a_port_another_process_picked_is_not_picked_again_until_it_ends():
    child = subprocess.Popen([sys.executable, "-c", PICKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        theirs = [int(p) for p in child.stdout.readline().split()]
        assert len(set(theirs)) == 3
        assert not any(process._reserve(p) for p in theirs)  # free to bind, but reserved
        assert not set(theirs) & set(free_ports(20))
    finally:
        child.communicate("\n", timeout=10)
    assert all(process._reserve(p) for p in theirs)  # its reservations went with it
