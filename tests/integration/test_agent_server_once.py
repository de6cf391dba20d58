"""An agent's server is started once even when two replicas wake the agent at the same
moment (control/agents.py under `cloche-init once`): each replica's AgentService probes
the agent's socket, finds none yet, and starts the app's command; the second start must
find the first one's lock, wait for its socket, and start nothing.

Two AgentService objects over one real node stand for two replicas: in a cluster each
replica has its own, and both reach the sandbox's node."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from cloche.control.agents import AGENT_LOCK, AGENT_SOCKET, AgentService
from cloche.control.errors import ApiError
from cloche.node.paths import BIN_DIR_PATH
from cloche.node.protocol import ExecRequest
from cloche.store.rows import AppRow


@pytest.fixture(scope="module")
def node(tier_node):
    """Each test runs on runc and on gVisor (whose sentry keeps the flock)."""
    return tier_node


ONCE = f"{BIN_DIR_PATH}/cloche-init"  # the supervisor binary, in every sandbox

# A server that counts its starts, then takes a moment before it listens: long enough for
# both replicas to probe its socket and find nothing.
SERVER = (
    "import socket, time\n"
    "open('/tmp/agent-starts', 'a').write('x')\n"
    "time.sleep(0.5)\n"
    f"s = socket.socket(socket.AF_UNIX); s.bind({AGENT_SOCKET!r}); s.listen()\n"
    "while True: s.accept()[0].close()\n"
)


def _app(**spec: object) -> AppRow:
    return AppRow(tenant_id="t", name="once", version=1, spec={"command": ["python3", "-c", SERVER], **spec},
                  created_at=time.time(), updated_at=time.time())  # fmt: skip


def _detached(node, sandbox_id: str, cmd: list[str]) -> int:
    """Start `cmd` in the sandbox, left running; its pid."""

    async def start() -> int:
        stream = await node.rt.open_exec(sandbox_id, ExecRequest(cmd=cmd, detach=True))
        async for event in stream.events():
            if event.kind == "start":
                break
        await stream.close()
        return event.pid

    return node.run(start())


def _starts(node, sandbox_id: str) -> str:
    return node.sh(sandbox_id, "cat /tmp/agent-starts 2>/dev/null || true").stdout.decode()


@pytest.fixture()
def replicas(node):
    services = [AgentService(SimpleNamespace(store=None, node=node.rt)) for _ in range(2)]  # type: ignore[arg-type]
    yield services
    for service in services:
        for sandbox_id in list(service._procs):
            node.run(service._stop_server(sandbox_id))


def test_two_replicas_waking_an_agent_at_once_start_its_server_once(node, replicas) -> None:
    sandbox = node.create()
    try:
        app = _app()

        async def both() -> None:
            await asyncio.gather(*(r._ensure_server(sandbox.id, app) for r in replicas))

        node.run(both())
        assert _starts(node, sandbox.id) == "x"  # one server, and both replicas reach it
        assert sum(p.held for r in replicas for p in r._procs.values()) == 1

        # Its starter stops it (a wedged server, a redeploy): the lock goes with it, and the
        # other replica's next wake starts the server again.
        starter = next(r for r in replicas if not r._procs[sandbox.id].held)
        node.run(starter._stop_server(sandbox.id))
        other = next(r for r in replicas if r is not starter)
        node.run(other._ensure_server(sandbox.id, app))
        assert _starts(node, sandbox.id) == "xx"

        # A replica stops a server the other one started (a redeploy or a failed answer
        # through it): the server goes, and its next wake starts a new one at once instead
        # of waiting behind the old one's lock until the startup timeout.
        node.run(starter._stop_server(sandbox.id))
        node.run(starter._ensure_server(sandbox.id, _app(startup_timeout_s=3)))
        assert _starts(node, sandbox.id) == "xxx"
    finally:
        node.kill(sandbox.id)


def test_a_holder_that_never_listens_is_stopped_at_the_startup_timeout(node, replicas) -> None:
    """A server started through a replica gone since, wedged before it listens: the replica
    waiting for it answers 504 at the startup timeout and stops it, and the next wake starts
    the agent's server."""
    sandbox = node.create()
    try:
        _detached(node, sandbox.id, [ONCE, "once", AGENT_LOCK, "sleep", "600"])
        with pytest.raises(ApiError) as timed_out:
            node.run(replicas[0]._ensure_server(sandbox.id, _app(startup_timeout_s=1)))
        assert timed_out.value.status == 504 and timed_out.value.code == "agent_not_ready"
        node.run(replicas[0]._ensure_server(sandbox.id, _app()))
        assert _starts(node, sandbox.id) == "x"
    finally:
        node.kill(sandbox.id)


def test_once_runs_a_command_only_while_no_other_holds_the_lock(node, sandbox) -> None:
    once = [ONCE, "once", "/tmp/test.lock"]
    holder = _detached(node, sandbox.id, [*once, "sleep", "60"])
    try:
        # the holder writes its pid once it has the lock; a probe started before that could
        # take the lock first and leave the holder "held"
        deadline = time.monotonic() + 10
        while node.sh(sandbox.id, "cat /tmp/test.lock 2>/dev/null || true").stdout.strip() != str(holder).encode():
            assert time.monotonic() < deadline, "the holder never took the lock"
            time.sleep(0.01)
        busy = node.run(node.rt.exec(sandbox.id, ExecRequest(cmd=[*once, "true"])))
        assert busy.exit_code == 75 and b"held" in busy.stderr
    finally:
        node.run(node.rt.signal(sandbox.id, holder, 9))
    deadline = time.monotonic() + 10
    while (free := node.run(node.rt.exec(sandbox.id, ExecRequest(cmd=[*once, "echo", "ran"])))).exit_code == 75:
        assert time.monotonic() < deadline, "the lock outlived its holder"
        time.sleep(0.01)
    assert free.exit_code == 0 and free.stdout == b"ran\n"
