"""A node that closes removes its own cgroups and never another node's: on this host's
real cgroup hierarchies, another node's sandbox cgroup that is still empty (its runtime is
making it in one hierarchy after another) survives, and the shared parent goes only when
no node has any left. Before, a closing node removed every empty cgroup under the shared
parent, and a gVisor create on another node failed with "open .../cgroup.procs: no such
file or directory" (ci14)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloche.node import cgroups


def _make(node_key: str) -> list[Path]:
    made = []
    for root in cgroups.hierarchies():
        path = root / cgroups.node_parent(node_key).strip("/") / "sb_test"
        path.mkdir(parents=True, exist_ok=True)
        made.append(path)
    return made


@pytest.fixture
def other_node() -> Iterator[list[Path]]:
    key = "t" + secrets.token_hex(4)
    made = _make(key)
    yield made
    cgroups.remove_node_tree(key)


def test_a_closing_node_leaves_another_node_s_empty_cgroups(other_node: list[Path]) -> None:
    mine = "t" + secrets.token_hex(4)
    _make(mine)
    cgroups.remove_node_tree(mine)
    assert all(p.is_dir() for p in other_node)  # the other node's, empty as they are, stay
    assert not [p for p in cgroups.leftovers(cgroups.node_parent(mine))]  # its own are gone
    assert all((root / cgroups.PARENT).is_dir() for root in cgroups.hierarchies())  # shared: still in use


def test_the_last_node_removes_the_shared_parent_when_nothing_else_is_there(other_node: list[Path]) -> None:
    key = other_node[0].parent.name
    cgroups.remove_node_tree(key)
    assert not [p for p in cgroups.leftovers(cgroups.node_parent(key))]
    # the shared parent goes unless another node (a test running beside this one) has cgroups there
    for root in cgroups.hierarchies():
        parent = root / cgroups.PARENT
        assert not parent.exists() or any(d.is_dir() for d in parent.iterdir())
