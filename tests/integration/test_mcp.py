"""The MCP server through the `mcp` SDK's own client, over both transports, against a
real `cloche up`: `cloche mcp` on stdio (a subprocess with CLOCHE_URL / CLOCHE_API_KEY)
and streamable HTTP at /mcp (Authorization: Bearer)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from tests.integration.conftest import Server

TRANSPORTS = ["stdio", "http"]
TOOLS = {"create_sandbox", "exec", "read_file", "write_file", "list_files", "run_code", "expose_port", "hibernate",
         "kill", "get_state", "put_state"}  # fmt: skip


@asynccontextmanager
async def connect(server: Server, transport: str, key: str) -> AsyncIterator[Client]:
    if transport == "stdio":
        params = StdioServerParameters(command=sys.executable, args=["-m", "cloche.cli", "mcp"],
                                       env={"CLOCHE_URL": server.url, "CLOCHE_API_KEY": key})  # fmt: skip
        async with Client(params) as client:
            yield client
    else:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60) as http,
            Client(streamable_http_client(f"{server.url}/mcp", http_client=http)) as client,
        ):
            yield client


def run(server: Server, transport: str, key: str, body: Callable[[Client], Awaitable[None]]) -> None:
    async def main() -> None:
        async with connect(server, transport, key) as client:
            await body(client)

    asyncio.run(main())


def data(result: CallToolResult) -> Any:
    assert not result.is_error, result.content
    if result.structured_content is not None:
        content = result.structured_content
        return content.get("result", content) if set(content) == {"result"} else content
    return json.loads(result.content[0].text)


def error(result: CallToolResult) -> str:
    assert result.is_error, result
    return result.content[0].text


@pytest.fixture(scope="module")
def keys(server: Server) -> tuple[str, str]:
    return server.tenant()[1], server.tenant()[1]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sandbox_lifecycle(server: Server, keys: tuple[str, str], transport: str):
    async def body(c: Client) -> None:
        assert {tool.name for tool in (await c.list_tools()).tools} >= TOOLS
        sandbox = data(await c.call_tool("create_sandbox", {"memory_mb": 256, "metadata": {"via": transport}}))
        sid = sandbox["id"]
        assert sandbox["state"] == "running" and sandbox["metadata"] == {"via": transport}

        progress: list[tuple[float, str | None]] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append((value, message))

        cmd = "for i in 1 2 3; do echo line$i; sleep 0.2; done; echo oops >&2; exit 3"
        result = data(await c.call_tool("exec", {"sandbox_id": sid, "cmd": cmd}, progress_callback=on_progress))
        assert (result["exit_code"], result["stdout"], result["stderr"]) == (3, "line1\nline2\nline3\n", "oops\n")
        assert len(progress) >= 3 and "line1\n" in [m for _, m in progress]  # while it ran, not at the end
        assert [v for v, _ in progress] == sorted(v for v, _ in progress)

        written = data(await c.call_tool("write_file", {"sandbox_id": sid, "path": "notes/a.txt", "content": "héllo"}))
        assert written["size"] == len("héllo".encode())
        assert data(await c.call_tool("read_file", {"sandbox_id": sid, "path": "/workspace/notes/a.txt"})) == "héllo"
        entries = data(await c.call_tool("list_files", {"sandbox_id": sid, "path": "/workspace/notes"}))
        assert [(e["name"], e["type"]) for e in entries] == [("a.txt", "file")]
        blob = data(await c.call_tool("read_file", {"sandbox_id": sid, "path": "notes/a.txt", "encoding": "base64"}))
        assert blob == "aMOpbGxv"

        code = data(await c.call_tool("run_code", {"sandbox_id": sid, "code": "x = 6\nprint('set')"}))
        assert code["stdout"] == "set\n" and code["error"] is None
        code = data(await c.call_tool("run_code", {"sandbox_id": sid, "code": "x * 7"}))
        assert code["results"][0]["text"] == "42" and code["execution_count"] == 2
        failed = error(await c.call_tool("run_code", {"sandbox_id": sid, "code": "print('before')\n1 / 0"}))
        assert "ZeroDivisionError: division by zero" in failed and "before" in failed and "Traceback" in failed

        serve = "setsid python3 -m http.server 8000 --directory /workspace/notes >/dev/null 2>&1 </dev/null &"
        data(await c.call_tool("exec", {"sandbox_id": sid, "cmd": serve}))
        wait = "for i in $(seq 100); do python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 8000))' " \
               "2>/dev/null && exit 0; sleep 0.1; done; exit 1"  # fmt: skip
        assert data(await c.call_tool("exec", {"sandbox_id": sid, "cmd": wait}))["exit_code"] == 0
        urls = data(await c.call_tool("expose_port", {"sandbox_id": sid, "port": 8000}))
        signed = urlsplit(urls["signed_url"])
        assert signed.netloc == f"8000-{sid}.localhost:{server.port}"
        async with httpx.AsyncClient(base_url=server.url) as anon:  # the host form, reached on loopback
            r = await anon.get(f"/a.txt?{signed.query}", headers={"Host": signed.netloc})
            assert (r.status_code, r.text) == (200, "héllo")
            r = await anon.get(urlsplit(urls["path_url"]).path + "a.txt",
                               headers={"X-Cloche-Traffic-Token": urls["token"]})  # fmt: skip
            assert (r.status_code, r.text) == (200, "héllo")

        assert data(await c.call_tool("hibernate", {"sandbox_id": sid}))["state"] == "hibernated"
        woke = data(await c.call_tool("exec", {"sandbox_id": sid, "cmd": "cat /workspace/notes/a.txt"}))
        assert woke["stdout"] == "héllo"

        assert data(await c.call_tool("get_state", {"namespace": "agent", "key": transport}))["value"] is None
        put = data(await c.call_tool("put_state", {"namespace": "agent", "key": transport, "value": "v1"}))
        got = data(await c.call_tool("get_state", {"namespace": "agent", "key": transport}))
        assert (got["value"], got["version"]) == ("v1", put["version"])
        stale = {"namespace": "agent", "key": transport, "value": "v2", "if_match": put["version"] + 1}
        assert "precondition" in error(await c.call_tool("put_state", stale)).lower()

        assert sid in data(await c.call_tool("kill", {"sandbox_id": sid}))
        assert f"sandbox {sid} not found" in error(await c.call_tool("exec", {"sandbox_id": sid, "cmd": "true"}))

    run(server, transport, keys[0], body)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_errors_and_tenancy(server: Server, keys: tuple[str, str], transport: str):
    key_a, key_b = keys
    with server.client(key_a) as a:
        r = a.post("/v1/sandboxes", json={})
        assert r.status_code == 201, r.text
        sid = r.json()["id"]

    async def body(c: Client) -> None:
        assert "sandbox sb_nope not found" in error(await c.call_tool("read_file", {"sandbox_id": "sb_nope",
                                                                                  "path": "x"}))  # fmt: skip
        assert "validation" in error(await c.call_tool("expose_port", {"sandbox_id": sid, "port": 70000})).lower()
        assert "cmd" in error(await c.call_tool("exec", {"sandbox_id": sid}))
        # tenant B: A's sandbox is answered like a missing one, and stays untouched
        for tool, args in (("exec", {"cmd": "touch /workspace/b"}), ("write_file", {"path": "b", "content": "x"}),
                           ("hibernate", {}), ("kill", {})):  # fmt: skip
            assert f"sandbox {sid} not found" in error(await c.call_tool(tool, {"sandbox_id": sid, **args}))

    run(server, transport, key_b, body)
    with server.client(key_a) as a:
        assert a.get(f"/v1/sandboxes/{sid}").json()["state"] == "running"
        assert a.get(f"/v1/sandboxes/{sid}/files", params={"path": "b"}).status_code == 404
        assert a.delete(f"/v1/sandboxes/{sid}").status_code in (200, 204)


def test_http_needs_a_key(server: Server):
    hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
             "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}  # fmt: skip
    accept = {"Accept": "application/json, text/event-stream"}
    for headers in ({}, {"Authorization": "Bearer nope"}):
        r = httpx.post(f"{server.url}/mcp", json=hello, headers={**accept, **headers})
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "unauthorized", r.text


def test_http_is_post_only_as_a_stateless_server(server: Server):
    """No session, so no server stream to GET (it would hang, empty) and none to DELETE:
    both are 405 at once, in the API's error shape, as the MCP spec has it."""
    _, key = server.tenant()
    with server.client(key) as c:
        for method in ("GET", "DELETE"):
            r = c.request(method, "/mcp", headers={"Accept": "text/event-stream"}, timeout=10)
            assert r.status_code == 405, r.text
            assert r.headers["allow"] == "POST" and r.json()["error"]["code"], r.text
