"""The import graph keeps its shape: no module of cloche imports itself back through
others (no cycle, type-checking imports included), and each import-linter contract in
pyproject.toml holds (API -> control -> scheduler -> node; config and constants are
leaves; the SDK stands alone).

A cycle or contract that is being removed right now is listed in PENDING with who
removes it: the test then insists it still exists (strict), so the entry has to go
the day it is fixed, and every other cycle or contract is enforced as is."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PENDING_CYCLES: dict[frozenset[str], str] = {}
PENDING_CONTRACTS: dict[str, str] = {}
CONTRACTS = [c["id"] for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]]


def cycles(graph: grimp.ImportGraph) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.find_modules_directly_imported_by(nxt)))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(frozenset(component))
    return found


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("cloche", exclude_type_checking_imports=False, cache_dir=None)


def test_the_cycle_finder_finds_a_cycle() -> None:
    g = grimp.ImportGraph()
    for a, b in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")):
        g.add_import(importer=a, imported=b)
    assert cycles(g) == [frozenset({"p.a", "p.b", "p.c"})]


def test_no_import_cycles(graph: grimp.ImportGraph) -> None:
    found = cycles(graph)
    unexpected = [sorted(c) for c in found if c not in PENDING_CYCLES]
    assert not unexpected, f"import cycles: {unexpected}"
    fixed = [why for c, why in PENDING_CYCLES.items() if c not in found]
    assert not fixed, f"these cycles are gone: remove them from PENDING_CYCLES: {fixed}"


@pytest.mark.parametrize(
    "contract",
    [pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=PENDING_CONTRACTS[c]))
     if c in PENDING_CONTRACTS else c for c in CONTRACTS],
)  # fmt: skip
def test_import_contract_holds(contract: str) -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint), "--no-cache", "--contract", contract], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
