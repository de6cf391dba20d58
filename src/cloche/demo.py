"""``cloche demo``: the memo agent serving many simulated users at once.

It deploys the example memo agent (:func:`cloche.examples.memo_app`) as a fresh app,
then drives N users concurrently, each through its own agent instance:

1. a first invocation, which creates the user's instance (a sandbox of its own);
2. per round, warm invocations: ``remember <fact>``, ``run: ls /workspace``, ``recall``;
3. sleep: half of the users are paused and half hibernated (alternating per round),
   either explicitly through the sandbox API (the default: fast) or, with ``idle``,
   by going quiet long enough for the app's idle policy to do it;
4. a waking ``recall``, which must still list every fact the user taught it.

Each latency is filed under the phase the instance was observed in just before the
call (running, paused or hibernated), so the table reports what really happened.
Everything goes through :class:`cloche.AsyncClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from cloche.client import AsyncAgent, AsyncClient, ClocheError
from cloche.examples import memo_app

CREATE = "first invoke (create)"
WARM = "warm invoke"
WAKE_PAUSED = "wake from paused"
WAKE_HIBERNATED = "wake from hibernated"
PHASES = (CREATE, WARM, WAKE_PAUSED, WAKE_HIBERNATED)
"""The phases of the latency table, in order."""

_WAKE_PHASE = {"running": WARM, "paused": WAKE_PAUSED, "hibernated": WAKE_HIBERNATED}
_THINGS = ["cats", "tea", "jazz", "rain", "chess", "figs", "trains", "maps", "owls", "kites"]
_EXPLICIT_IDLE = {"pause_after_s": 600.0, "hibernate_after_s": 3600.0}
"""With explicit sleeps the idle policy stays out of the way."""


@dataclass
class DemoResult:
    """What a demo run measured.

    Attributes:
        users: Simulated users.
        rounds: Rounds per user.
        latencies: Seconds per invocation, by phase (see :data:`PHASES`).
        intact: Keys of the users who finished with their memory complete at every recall.
        lost: One line per recall that missed a fact (memory lost).
        errors: One line per failed operation (the user may not have finished).
        elapsed: Wall-clock seconds of the whole run.
    """

    users: int
    rounds: int
    latencies: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PHASES})
    intact: set[str] = field(default_factory=set)
    lost: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def memory_intact(self) -> bool:
        """No recall missed a fact (users who failed early were not fully checked)."""
        return not self.lost

    @property
    def ok(self) -> bool:
        """Every user finished, with every memory intact."""
        return len(self.intact) == self.users and not self.lost

    @property
    def invocations(self) -> int:
        """Invocations measured."""
        return sum(len(v) for v in self.latencies.values())


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def latency_table(result: DemoResult) -> Table:
    """The final table: p50, p95 and max per phase, in milliseconds."""
    table = Table(title="invoke latency by phase", header_style="bold", title_style="bold")
    table.add_column("phase", no_wrap=True)
    for col in ("n", "p50 ms", "p95 ms", "max ms"):
        table.add_column(col, justify="right", no_wrap=True)
    for phase in [*PHASES, *(p for p in result.latencies if p not in PHASES)]:
        values = result.latencies.get(phase, [])
        if not values:
            table.add_row(phase, "0", "-", "-", "-")
            continue
        p50, p95, top = (percentile(values, 50), percentile(values, 95), max(values))
        table.add_row(phase, str(len(values)), f"{p50 * 1000:.1f}", f"{p95 * 1000:.1f}", f"{top * 1000:.1f}")
    return table


class _Board:
    """Live progress: invocations done, and how many users are in each step."""

    def __init__(self, users: int, rounds: int) -> None:
        self.steps: dict[str, str] = {}
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        per_user = 1 + rounds * 4 + 1
        self.invokes = self.progress.add_task("invocations", total=users * per_user)
        self.created = self.progress.add_task("instances  ", total=users)
        self.woken = self.progress.add_task("wakes      ", total=users * rounds)

    def step(self, key: str, what: str) -> None:
        self.steps[key] = what

    def __rich__(self) -> Group:
        counts = Counter(self.steps.values())
        order = ["creating", "talking", "pausing", "hibernating", "idle", "waking", "done", "failed"]
        line = "   ".join(f"{name}: {counts[name]}" for name in order if counts[name])
        return Group(self.progress, Text("users  " + (line or "starting"), style="dim"))


async def _user(
    agent: AsyncAgent,
    index: int,
    rounds: int,
    idle: float | None,
    result: DemoResult,
    board: _Board,
) -> None:
    key = agent.key
    facts: list[str] = []

    async def say(message: str, phase: str | None = None) -> str:
        phase = phase or WARM
        started = time.perf_counter()
        answer = await agent.invoke(json={"message": message})
        elapsed = time.perf_counter() - started
        if not answer.ok:
            raise ClocheError(answer.status_code, "agent_error", f"{message!r} answered HTTP {answer.status_code}")
        result.latencies.setdefault(phase, []).append(elapsed)
        board.progress.advance(board.invokes)
        return str(answer.json().get("reply", ""))

    def check(reply: str, when: str) -> bool:
        gone = [fact for fact in facts if fact not in reply]
        if gone:
            result.lost.append(f"{key}: forgot {gone} {when}")
        return not gone

    async def sleep(deep: bool) -> None:
        sandbox = await agent.sandbox()
        for attempt in range(3):
            try:
                await (sandbox.hibernate() if deep else sandbox.pause())
                return
            except ClocheError as exc:
                if attempt == 2:
                    verb = "hibernate" if deep else "pause"
                    result.errors.append(f"{key}: could not {verb} (it stays awake): {exc}")
                    return
                await asyncio.sleep(0.2 * (attempt + 1))

    try:
        board.step(key, "creating")
        fact = f"{key} likes {_THINGS[index % len(_THINGS)]}"
        await say(f"remember {fact}", CREATE)
        facts.append(fact)
        board.progress.advance(board.created)
        intact = True
        for rnd in range(rounds):
            board.step(key, "talking")
            fact = f"{key} fact {rnd}: {secrets.token_hex(3)}"
            await say(f"remember {fact}")
            facts.append(fact)
            listing = await say("run: ls /workspace")
            if "memory.json" not in listing:
                raise ClocheError(0, "demo", f"tool run did not see /workspace/memory.json: {listing[:200]!r}")
            intact &= check(await say("recall"), f"in round {rnd}")
            # Sleep: alternate paused and hibernated across users and rounds.
            deep = (index + rnd) % 2 == 1
            if idle is None:
                board.step(key, "hibernating" if deep else "pausing")
                await sleep(deep)
            else:
                board.step(key, "idle")
                await asyncio.sleep(idle if deep else idle / 2)
            state = (await agent.info()).state
            board.step(key, "waking")
            reply = await say("recall", _WAKE_PHASE.get(state, f"wake from {state}"))
            intact &= check(reply, f"after being {state}")
            board.progress.advance(board.woken)
        intact &= check(await say("recall"), "at the end")
        if intact:
            result.intact.add(key)
        board.step(key, "done")
    except ClocheError as exc:
        board.step(key, "failed")
        result.errors.append(f"{key}: {exc}")


async def run_demo(
    url: str | None = None,
    api_key: str | None = None,
    *,
    users: int = 20,
    rounds: int = 3,
    idle: float | None = None,
    app: str | None = None,
    keep: bool = False,
    console: Console | None = None,
    log: Callable[[str], None] | None = None,
) -> DemoResult:
    """Deploy the memo agent, drive ``users`` users through ``rounds`` rounds, and
    return the measurements (the app is deleted afterwards unless ``keep``).

    Args:
        idle: Seconds of quiet per sleep (half of it for the users meant to be
            paused); the app's idle policy then pauses after ``idle / 3`` and
            hibernates after ``2 * idle / 3``.  ``None``: sleep through the API.
        console: Where the live progress goes (stderr-like; shown only on a terminal).
        log: Called with one-line status messages.
    """
    if users < 1 or rounds < 0:
        raise ValueError("users must be >= 1 and rounds >= 0")
    say = log or (lambda _: None)
    name = app or f"memo-demo-{secrets.token_hex(3)}"
    policy = _EXPLICIT_IDLE if idle is None else {"pause_after_s": idle / 3, "hibernate_after_s": 2 * idle / 3}
    result = DemoResult(users=users, rounds=rounds)
    board = _Board(users, rounds)
    console = console or Console(stderr=True)
    async with AsyncClient(url, api_key) as client:
        deployed = await client.apps.deploy(name, **memo_app(idle=policy))
        say(f"deployed app {deployed.name} (version {deployed.version}); {users} users, {rounds} rounds")
        started = time.perf_counter()
        try:
            live = Live(board, console=console, refresh_per_second=8, transient=True)
            with live if console.is_terminal else contextlib.nullcontext():
                agents = client.agents(name)
                runs = [_user(agents[f"user-{i:03d}"], i, rounds, idle, result, board) for i in range(users)]
                await asyncio.gather(*runs)
        finally:
            result.elapsed = time.perf_counter() - started
            if not keep:
                try:
                    await client.apps.delete(name, state=True)
                except ClocheError as exc:
                    say(f"could not delete app {name}: {exc}")
    return result


def report(result: DemoResult, console: Console) -> None:
    """Print the latency table and the correctness line."""
    console.print(latency_table(result))
    console.print(
        f"{result.users} users, {result.rounds} rounds, {result.invocations} invocations in {result.elapsed:.1f} s",
        highlight=False,
    )
    verdict = "[green]yes[/]" if result.ok else "[red]no[/]"
    detail = f"{len(result.intact)}/{result.users} users verified"
    if result.lost:
        detail += f", {len(result.lost)} recalls missed facts"
    console.print(f"all users' memories intact: {verdict} ({detail})", highlight=False)
    for line in result.lost[:20]:
        console.print(f"  [red]lost[/] {line}", highlight=False)
    for line in result.errors[:20]:
        console.print(f"  [yellow]error[/] {line}", highlight=False)
