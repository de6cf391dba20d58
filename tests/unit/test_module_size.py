"""No module of cloche grows past about 400 lines: a module that does is doing more than
one job, and a newcomer reading it has to hold all of them at once. The limit leaves a
little room (MAX_LINES) so a module at the edge can take a small fix; past it, split it
by what it does, as fleet.py became members / routing / placing / fleet."""

from __future__ import annotations

from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "cloche"
MAX_LINES = 420


def test_no_module_is_over_the_limit() -> None:
    sizes = {p.relative_to(SRC).as_posix(): len(p.read_text().splitlines()) for p in SRC.rglob("*.py")}
    assert len(sizes) > 100  # the tree was found
    over = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert over == {}, f"modules over {MAX_LINES} lines: {over}"
