"""One-to-one agents through a real `cloche up`: one instance per key, created on
first use, woken from hibernation with files intact, ordered, restarted after a crash,
and private to their tenant."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from cloche.examples import memo_app
from cloche.node.runtime import node_key
from tests.integration.conftest import Server


def _deploy(c: httpx.Client, app: str, **overrides) -> dict:
    r = c.put(f"/v1/apps/{app}", json=memo_app(**overrides))
    assert r.status_code == 200, r.text
    return r.json()


def _say(c: httpx.Client, app: str, key: str, message: str, **extra) -> httpx.Response:
    return c.post(f"/v1/apps/{app}/agents/{key}/invoke", json={"message": message, **extra})


def test_first_invoke_creates_second_reuses(tenant_client: httpx.Client):
    _deploy(tenant_client, "memo")
    first = _say(tenant_client, "memo", "alice", "hello")
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "application/json"
    assert first.json()["turn"] == 1 and first.json()["user"] == "alice"
    second = _say(tenant_client, "memo", "alice", "again")
    assert second.json()["turn"] == 2 and second.json()["pid"] == first.json()["pid"]
    agents = tenant_client.get("/v1/apps/memo/agents").json()["items"]
    assert [a["key"] for a in agents] == ["alice"] and agents[0]["state"] == "running"
    bob = _say(tenant_client, "memo", "bob", "hi")
    assert bob.json()["turn"] == 1
    assert len(tenant_client.get("/v1/apps/memo/agents").json()["items"]) == 2
    assert tenant_client.delete("/v1/apps/memo").status_code == 204


def test_hibernated_agent_wakes_with_its_memory(tenant_client: httpx.Client):
    _deploy(tenant_client, "sleepy", idle={"hibernate_after_s": 1})
    assert _say(tenant_client, "sleepy", "u1", "remember the cat is called Tom").status_code == 200
    deadline = time.time() + 15
    while time.time() < deadline:
        state = tenant_client.get("/v1/apps/sleepy/agents/u1").json()["state"]
        if state == "hibernated":
            break
        time.sleep(0.2)
    assert state == "hibernated"
    recall = _say(tenant_client, "sleepy", "u1", "recall")
    assert recall.status_code == 200 and "Tom" in recall.json()["reply"]
    assert tenant_client.get("/v1/apps/sleepy/agents/u1").json()["state"] == "running"
    tenant_client.delete("/v1/apps/sleepy")


def test_concurrent_first_invokes_make_one_instance(server: Server):
    _, key = server.tenant()
    with server.client(key) as c:
        _deploy(c, "crowd")

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120,
                                     headers={"Authorization": f"Bearer {key}"}) as ac:  # fmt: skip
            return await asyncio.gather(*[ac.post("/v1/apps/crowd/agents/same-user/invoke",
                                                  json={"message": f"m{i}"}) for i in range(100)])  # fmt: skip

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses), {r.status_code for r in responses}
    assert sorted(r.json()["turn"] for r in responses) == list(range(1, 101))
    assert len({r.json()["pid"] for r in responses}) == 1
    with server.client(key) as c:
        assert len(c.get("/v1/apps/crowd/agents").json()["items"]) == 1
        c.delete("/v1/apps/crowd")


def test_invocations_for_one_key_keep_their_order(server: Server):
    """The server stamps each invocation of a key with its arrival number; the agent
    must see them strictly in that order, one at a time, whatever the concurrency."""
    _, key = server.tenant()
    with server.client(key) as c:
        _deploy(c, "ordered")
        assert _say(c, "ordered", "k", "warm up").status_code == 200

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60,
                                     headers={"Authorization": f"Bearer {key}"}) as ac:  # fmt: skip
            tasks = []
            for seq in range(30):
                tasks.append(asyncio.create_task(ac.post("/v1/apps/ordered/agents/k/invoke",
                                                         json={"message": "x", "seq": seq})))  # fmt: skip
                await asyncio.sleep(0.002)
            return await asyncio.gather(*tasks)

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    arrivals = max((r.json()["arrivals"] for r in responses), key=len)
    assert arrivals == list(range(1, 32))  # the warm-up was 1; 30 more, in arrival order, none lost
    with server.client(key) as c:
        c.delete("/v1/apps/ordered")


def test_crashed_agent_errors_clearly_then_restarts(tenant_client: httpx.Client):
    _deploy(tenant_client, "fragile")
    before = _say(tenant_client, "fragile", "k", "hi").json()
    crashed = _say(tenant_client, "fragile", "k", "crash")
    assert crashed.status_code == 502
    assert crashed.json()["error"]["code"] == "agent_crashed"
    assert crashed.headers["X-Cloche-Error"] == "agent_crashed"  # cloche's error, not the agent's
    again = _say(tenant_client, "fragile", "k", "back?")
    assert again.status_code == 200 and again.json()["pid"] != before["pid"]
    assert again.json()["turn"] == 2  # its files survived the crash (which happened before saving)
    tenant_client.delete("/v1/apps/fragile")


def test_a_planted_symlink_never_leads_to_another_tenants_agent(server: Server, tenant_client: httpx.Client):
    """The agent's socket lies in a directory its sandbox's root owns. Replacing it with a
    link to another sandbox's agent socket (on the host) must not route this tenant's
    invocations there: the host connects without following links, and restarts the
    agent instead."""
    _, victim_key = server.tenant()
    with server.client(victim_key) as victim:
        _deploy(victim, "victim")
        assert _say(victim, "victim", "v", "hello").json()["turn"] == 1
        victim_sandbox = victim.get("/v1/apps/victim/agents/v").json()["sandbox_id"]
        target = f"/run/cloche/{node_key(server.data_dir)}/{victim_sandbox}/host/agent.sock"
        _deploy(tenant_client, "attacker")
        first = _say(tenant_client, "attacker", "a", "hi").json()
        plant = (f"ln -s {target} /.cloche/host/evil && mv -f /.cloche/host/evil /.cloche/host/agent.sock && "
                 f"(sleep 0.3; kill {first['pid']}) >/dev/null 2>&1 &")  # fmt: skip
        assert _say(tenant_client, "attacker", "a", f"run: {plant}").status_code == 200
        time.sleep(1)
        after = _say(tenant_client, "attacker", "a", "who answers?")
        assert after.status_code == 200, after.text
        assert after.json()["user"] == "a" and after.json()["pid"] != first["pid"]  # its own agent, restarted
        assert _say(victim, "victim", "v", "still mine").json()["turn"] == 2  # the victim saw nothing
        victim.delete("/v1/apps/victim")
    tenant_client.delete("/v1/apps/attacker")


@pytest.mark.parametrize(
    ("command", "status", "code", "needle"),
    [
        (["sh", "-c", "echo booting; echo it broke >&2; exit 3"], 502, "agent_exited", "it broke"),
        (["sh", "-c", "echo waiting forever; sleep 1000"], 504, "agent_not_ready", "waiting forever"),
    ],
)
def test_agent_that_never_comes_up(tenant_client: httpx.Client, command, status, code, needle):
    r = tenant_client.put("/v1/apps/broken", json={"command": command, "startup_timeout_s": 1.5})
    assert r.status_code == 200
    out = tenant_client.post("/v1/apps/broken/agents/k/invoke", content=b"x")
    assert out.status_code == status, out.text
    assert out.json()["error"]["code"] == code and needle in out.json()["error"]["message"]
    tenant_client.delete("/v1/apps/broken")


def test_redeploy_applies_at_next_invoke_and_keeps_files(tenant_client: httpx.Client):
    _deploy(tenant_client, "evolving", env={"AGENT_VERSION": "1"})
    assert _say(tenant_client, "evolving", "k", "remember v1 data").json()["version"] == "1"
    v2 = _deploy(tenant_client, "evolving", env={"AGENT_VERSION": "2"})
    assert v2["version"] == 2
    reply = _say(tenant_client, "evolving", "k", "recall")
    assert reply.status_code == 200, reply.text
    assert reply.json()["version"] == "2" and "v1 data" in reply.json()["reply"]
    assert tenant_client.get("/v1/apps/evolving/agents/k").json()["app_version"] == 2
    tenant_client.delete("/v1/apps/evolving")


def test_agent_status_headers_and_paths_pass_through(tenant_client: httpx.Client):
    _deploy(tenant_client, "plain")
    r = tenant_client.get("/v1/apps/plain/agents/k/invoke/health?x=1")
    assert r.status_code == 200 and r.json()["ok"] is True
    assert "X-Cloche-Error" not in r.headers
    assert len(r.headers.get_list("date")) == 1 and len(r.headers.get_list("server")) == 1
    tenant_client.delete("/v1/apps/plain")


def test_apps_and_agents_are_tenant_private(server: Server, tenant_client: httpx.Client):
    _deploy(tenant_client, "private")
    assert _say(tenant_client, "private", "k", "secret").status_code == 200
    _, other_key = server.tenant()
    with server.client(other_key) as other:
        for method, url in [("GET", "/v1/apps/private"), ("GET", "/v1/apps/private/agents"),
                            ("GET", "/v1/apps/private/agents/k"), ("DELETE", "/v1/apps/private/agents/k"),
                            ("POST", "/v1/apps/private/agents/k/invoke"), ("DELETE", "/v1/apps/private")]:  # fmt: skip
            r = other.request(method, url, json={"message": "recall"} if method == "POST" else None)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", (method, url, r.text)
        assert other.get("/v1/apps").json()["items"] == []
        assert other.get("/v1/sandboxes").json()["items"] == []
    assert _say(tenant_client, "private", "k", "recall").status_code == 200
    tenant_client.delete("/v1/apps/private")
