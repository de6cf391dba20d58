"""The simulator: workloads, traces, every policy on the real scheduler code, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloche.scheduler import sim

SMALL = sim.SimConfig(nodes=6, hours=0.75, load=3.0, keepalive_s=300, seed=3)
FIGURES = Path(__file__).with_name("sim_figures.json")  # SMALL's figures, as the simulator computed them


@pytest.fixture(scope="module")
def results() -> list[sim.Result]:
    return sim.simulate(SMALL, sim.SIM_POLICIES)


def test_workload_is_diurnal_poisson_with_heavy_tails():
    cfg = sim.SimConfig(nodes=6, hours=24, load=1.0, seed=5)
    agents = sim.generate(cfg)
    assert agents == sorted(agents, key=lambda a: a.t) and [a.id for a in agents] == list(range(len(agents)))
    assert {a.region for a in agents} == set(cfg.regions)
    per_hour = [0] * 24
    for a in agents:
        if a.region == "us":
            per_hour[int(a.t // 3600)] += 1
    assert max(per_hour) > 2 * min(per_hour)  # the daily cycle
    gaps = sorted(g for a in agents for _, g in a.turns)
    assert gaps[len(gaps) * 99 // 100] > 5 * gaps[len(gaps) // 2]  # heavy-tailed idle gaps
    assert any(a.priority == 1 for a in agents) and any(a.priority == 0 for a in agents)


def test_trace_round_trip(tmp_path: Path):
    agents = sim.generate(sim.SimConfig(nodes=3, hours=0.2, seed=9))
    sim.save_trace(agents, tmp_path / "t.jsonl")
    loaded = sim.load_trace(tmp_path / "t.jsonl")
    assert loaded == agents
    (tmp_path / "mini.jsonl").write_text(
        '{"t": 5, "region": "eu", "tenant": "x", "priority": 0, "template": "python", "cpu": 0.5, '
        '"memory_mb": 512, "turns": [[10, 30], [5, 0]]}\n\n'
    )
    r = sim.simulate(SMALL, ["kubernetes", "cloche"], sim.load_trace(tmp_path / "mini.jsonl"))
    assert [x.admitted for x in r] == [1, 1] and r[1].turns == 2


def test_every_policy_runs_and_accounts_for_every_agent(results: list[sim.Result]):
    assert [r.policy for r in results] == list(sim.SIM_POLICIES)
    for r in results:
        s = r.summary()
        assert s["admitted"] + s["rejected"] <= s["offered"] and s["admitted"] > 0
        assert s["wait_p99_s"] <= SMALL.wait_s + 1e-9
        assert s["overflow_pct"] == 0.0
        assert r.decisions_us


def figures(results: list[sim.Result]) -> dict[str, dict[str, float]]:
    """What a run reports, but for what is measured (decision times, wall time)."""
    return {r.policy: {k: v for k, v in r.summary().items() if not k.startswith("decision_") and k != "wall_s"}
            for r in results}  # fmt: skip


def test_figures_are_the_recorded_ones(results: list[sim.Result]):
    """Making the simulator faster must not change what it computes. A deliberate change
    of the model rewrites the file: json.dumps(figures(results), indent=1)."""
    recorded = json.loads(FIGURES.read_text())
    got = figures(results)
    assert list(got) == list(recorded)
    for policy, values in recorded.items():
        assert got[policy] == pytest.approx(values, rel=1e-9), policy


def test_cloche_beats_the_baselines(results: list[sim.Result]):
    ok, text = sim.verdict(results)
    assert ok, text
    by = {r.policy: r.summary() for r in results}
    assert by["cloche"]["local_share"] > by["kubernetes"]["local_share"]
    assert by["cloche-no-overcommit"]["hibernations"] > 0  # the ablation has to hibernate to keep up
    assert by["cloche-no-overcommit"]["admitted"] > by["kubernetes"]["admitted"]
    assert sim.verdict(results[:1])[0] is False


def test_markdown_section_is_maintained(tmp_path: Path, results: list[sim.Result]):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nother engineers' tables\n")
    section = sim.markdown(results, SMALL, 10, "cloche sim --test")
    sim.write_section(md, section)
    sim.write_section(md, section.replace("--test", "--again"))
    text = md.read_text()
    assert text.startswith("# Benchmarks\n\nother engineers' tables\n")
    assert text.count(sim.MARK_BEGIN) == 1 and "--again" in text and "--test" not in text
    assert "| agents admitted |" in text and "**Met:**" in text


def test_cli_sim_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from cloche.cli import app

    out = tmp_path / "B.md"
    r = CliRunner().invoke(app, ["sim", "--nodes", "3", "--hours", "0.25", "--policies", "kubernetes,cloche",
                                 "--output", str(out), "--save-trace", str(tmp_path / "w.jsonl")])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "| agents admitted |" in out.read_text() and (tmp_path / "w.jsonl").stat().st_size > 0
    monkeypatch.chdir(tmp_path)  # BENCHMARKS.md would land here
    quiet = CliRunner().invoke(app, ["sim", "--nodes", "3", "--hours", "0.25", "--policies", "kubernetes,cloche"])
    assert quiet.exit_code == 0, quiet.output
    assert not (tmp_path / "BENCHMARKS.md").exists()  # printed, not written, unless asked
    bad = CliRunner().invoke(app, ["sim", "--policies", "best"])
    assert bad.exit_code != 0


def test_parallel_worlds_report_what_one_process_does():
    cfg = sim.SimConfig(nodes=6, hours=0.5, load=3.0, keepalive_s=300, seed=4)
    agents = sim.generate(cfg)
    one = sim.simulate(cfg, sim.SIM_POLICIES, agents, workers=1)
    two = sim.simulate(cfg, sim.SIM_POLICIES, agents, workers=2)
    assert [r.policy for r in two] == list(sim.SIM_POLICIES)
    for a, b in zip(one, two, strict=True):
        assert (a.admitted, a.rejected, a.waits, a.latencies, a.hibernations) == (
            b.admitted, b.rejected, b.waits, b.latencies, b.hibernations)  # fmt: skip


def test_cli_sim_plot(tmp_path: Path):
    from cloche.cli import app

    png = tmp_path / "plots" / "sim.png"
    r = CliRunner().invoke(app, ["sim", "--nodes", "3", "--hours", "0.25", "--plot", str(png)])
    assert r.exit_code == 0, r.output
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert 800 <= width <= 3000 and 300 <= height <= 1500 and 10_000 < len(data) < 2_000_000


def test_plot_without_matplotlib_names_the_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import sys

    from cloche.scheduler.sim.plot import PlotUnavailable, draw

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    with pytest.raises(PlotUnavailable, match="pip install matplotlib"):
        draw([], tmp_path / "x.png")
