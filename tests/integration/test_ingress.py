"""Ingress to sandbox ports through a real `cloche up`: a real server in a real sandbox
(stdlib only: an HTTP/1.1 keep-alive server with SSE and a hand-written WebSocket echo),
reached by path and by host name, with API keys, traffic tokens, signed URLs and
cookies, streaming both ways, WebSockets, and a wake on request."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.integration.conftest import Server

PORT = 8000

SERVER = r"""
import asyncio, base64, hashlib, json, struct, sys

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(opcode, data):
    n = len(data)
    if n < 126:
        head = bytes([0x80 | opcode, n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 126]) + struct.pack("!H", n)
    else:
        head = bytes([0x80 | opcode, 127]) + struct.pack("!Q", n)
    return head + data


async def websocket(reader, writer, headers):
    accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + GUID).digest())
    answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    answer += b"Sec-WebSocket-Accept: " + accept + b"\r\n"
    if "sec-websocket-protocol" in headers:
        chosen = headers["sec-websocket-protocol"].split(",")[0].strip()
        answer += b"Sec-WebSocket-Protocol: " + chosen.encode() + b"\r\n"
    writer.write(answer + b"\r\n")
    while True:
        b0, b1 = await reader.readexactly(2)
        opcode, n = b0 & 0x0F, b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await reader.readexactly(8))[0]
        mask = await reader.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
        raw = await reader.readexactly(n)
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(raw))
        if opcode == 8:
            with open("/tmp/ws-close", "w") as f:
                f.write(str(struct.unpack("!H", data[:2])[0]) if len(data) >= 2 else "none")
            writer.write(frame(8, data))
            await writer.drain()
            return
        if opcode == 9:
            writer.write(frame(10, data))
        elif opcode == 1 and data == b"headers":
            writer.write(frame(1, json.dumps(headers).encode()))
        elif opcode == 1 and data.startswith(b"close:"):
            writer.write(frame(8, struct.pack("!H", int(data[6:])) + b"bye"))
        elif opcode in (1, 2):
            writer.write(frame(opcode, data))
        await writer.drain()


async def read_body(reader, headers):
    digest, size = hashlib.sha256(), 0
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            n = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if n == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return size, digest.hexdigest()
            data = await reader.readexactly(n)
            await reader.readexactly(2)
            digest.update(data)
            size += n
    left = int(headers.get("content-length", "0"))
    while left:
        data = await reader.read(min(left, 65536))
        if not data:
            raise EOFError
        digest.update(data)
        size += len(data)
        left -= len(data)
    return size, digest.hexdigest()


async def sse(writer):
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                 b"transfer-encoding: chunked\r\n\r\n")
    for i in range(3):
        event = f"data: {i}\n\n".encode()
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
        await asyncio.sleep(0.6)
    writer.write(b"0\r\n\r\n")


async def big(writer, n):
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: %d\r\n\r\n" % n)
    block = b"x" * 65536
    while n:
        writer.write(block[:n])
        n -= min(n, len(block))
        await writer.drain()


async def handle(reader, writer):
    try:
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            lines = head.split("\r\n")
            method, target, _ = lines[0].split(" ")
            pairs = [tuple(p.strip() for p in line.split(":", 1)) for line in lines[1:] if line]
            headers = {k.lower(): v for k, v in pairs}
            path = target.split("?")[0]
            if path == "/ws" and headers.get("upgrade", "").lower() == "websocket":
                await websocket(reader, writer, headers)
                return
            size, digest = await read_body(reader, headers)
            if path == "/sse":
                await sse(writer)
                continue
            if path.startswith("/big/"):
                await big(writer, int(path[5:]))
                continue
            body = json.dumps({"method": method, "target": target, "headers": [[k.lower(), v] for k, v in pairs],
                               "body_bytes": size, "body_sha256": digest}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                         % len(body) + (body if method != "HEAD" else b""))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(handle, "0.0.0.0", int(sys.argv[1]))
    async with server:
        await server.serve_forever()


asyncio.run(main())
"""

START = f"setsid python3 /workspace/srv.py {PORT} >/workspace/srv.log 2>&1 </dev/null &"


# ---- fixtures and helpers -----------------------------------------------------------------


def _exec(client: httpx.Client, sid: str, cmd: str, stdin: str | None = None) -> dict:
    r = client.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": cmd, "stdin": stdin})
    assert r.status_code == 200, r.text
    return r.json()


def _wait_listening(client: httpx.Client, sid: str, port: int = PORT) -> None:
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=1)"
    deadline = time.time() + 15
    while time.time() < deadline:
        if _exec(client, sid, f'python3 -c "{probe}"')["exit_code"] == 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"the in-sandbox server never listened: {_exec(client, sid, 'cat /workspace/srv.log')}")


def _serving_sandbox(client: httpx.Client, **create: object) -> str:
    r = client.post("/v1/sandboxes", json=create)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    _exec(client, sid, "cat > /workspace/srv.py", stdin=SERVER)
    _exec(client, sid, START)
    _wait_listening(client, sid)
    return sid


class Owner:
    def __init__(self, server: Server) -> None:
        self.server = server
        _, self.key = server.tenant()
        self.client = server.client(self.key)
        self.sid = _serving_sandbox(self.client)
        urls = self.client.get(f"/v1/sandboxes/{self.sid}/urls/{PORT}")
        assert urls.status_code == 200, urls.text
        self.urls = urls.json()
        self.token: str = self.urls["token"]

    def host(self, port: int = PORT, sid: str | None = None) -> str:
        return f"{port}-{sid or self.sid}.localhost:{self.server.port}"

    def path(self, rest: str = "", port: int = PORT, sid: str | None = None) -> str:
        return f"/v1/sandboxes/{sid or self.sid}/ports/{port}/{rest}"


@pytest.fixture(scope="module")
def owner(server: Server) -> Iterator[Owner]:
    o = Owner(server)
    yield o
    o.client.close()


@pytest.fixture()
def anon(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def _echo(r: httpx.Response) -> dict:
    assert r.status_code == 200, r.text
    return r.json()


def _headers(echo: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in echo["headers"]:
        out.setdefault(k, []).append(v)
    return out


def _error(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["error"]["code"] == code, body
    return body["error"]["message"]


# ---- the path form ------------------------------------------------------------------------


def test_path_form_with_the_owners_api_key(owner: Owner):
    echo = _echo(owner.client.get(owner.path("echo/a%2Fb?x=1&y=two"), headers={"Cookie": "app=1"}))
    assert echo["method"] == "GET"
    assert echo["target"] == "/echo/a%2Fb?x=1&y=two"  # path and query passed through as sent
    headers = _headers(echo)
    assert "authorization" not in headers  # the tenant's API key never reaches the sandbox
    assert headers["host"] == [f"127.0.0.1:{owner.server.port}"]  # the original Host
    assert headers["x-forwarded-prefix"] == [f"/v1/sandboxes/{owner.sid}/ports/{PORT}"]
    assert headers["cookie"] == ["app=1"]
    # no trailing path: the sandbox's "/"
    assert _echo(owner.client.get(f"/v1/sandboxes/{owner.sid}/ports/{PORT}"))["target"] == "/"


def test_path_form_with_the_traffic_token(owner: Owner, anon: httpx.Client):
    echo = _echo(anon.post(owner.path("echo"), content=b"hello", headers={"X-Cloche-Traffic-Token": owner.token}))
    assert echo["method"] == "POST" and echo["body_bytes"] == 5
    assert "x-cloche-traffic-token" not in _headers(echo)
    # an Authorization that is no cloche key is the app's own: passed through with a token
    echo = _echo(anon.get(owner.path("echo"), headers={"e2b-traffic-access-token": owner.token,
                                                       "Authorization": "Basic YXBwOnB3"}))  # fmt: skip
    assert _headers(echo)["authorization"] == ["Basic YXBwOnB3"]
    assert "e2b-traffic-access-token" not in _headers(echo)
    _error(anon.get(owner.path("echo")), 401, "unauthorized")
    _error(anon.get(owner.path("echo"), headers={"X-Cloche-Traffic-Token": "0" * 64}), 401, "unauthorized")


def test_another_tenants_key_is_answered_like_a_missing_sandbox(owner: Owner, server: Server):
    _, other_key = server.tenant()
    with server.client(other_key) as other:
        theirs = other.get(owner.path("echo"))
        missing = other.get(owner.path("echo", sid="sb_00000000deadbeef"))
        urls = other.get(f"/v1/sandboxes/{owner.sid}/urls/{PORT}")
    assert _error(theirs, 404, "not_found") == f"sandbox {owner.sid} not found"
    assert _error(missing, 404, "not_found") == "sandbox sb_00000000deadbeef not found"
    assert _error(urls, 404, "not_found") == f"sandbox {owner.sid} not found"


# ---- the host form ------------------------------------------------------------------------


def test_host_form_with_the_token_header(owner: Owner, anon: httpx.Client):
    r = anon.get("/echo?q=1", headers={"Host": owner.host(), "e2b-traffic-access-token": owner.token})
    echo = _echo(r)
    assert echo["target"] == "/echo?q=1"
    headers = _headers(echo)
    assert headers["host"] == [owner.host()]
    assert headers["x-forwarded-host"] == [owner.host()]
    assert "e2b-traffic-access-token" not in headers
    # other hosts are the API, as ever
    assert anon.get("/healthz", headers={"Host": f"api.localhost:{owner.server.port}"}).status_code == 200


def test_host_form_without_a_token_is_401(owner: Owner, anon: httpx.Client):
    message = _error(anon.get("/", headers={"Host": owner.host()}), 401, "unauthorized")
    assert "traffic token" in message
    r = anon.get("/", headers={"Host": owner.host(), "Authorization": f"Bearer {owner.key}"})
    _error(r, 401, "unauthorized")  # API keys are for the path form only
    r = anon.get("/", headers={"Host": owner.host(sid="sb_00000000deadbeef"), "X-Cloche-Traffic-Token": owner.token})
    _error(r, 404, "not_found")


def test_signed_url_then_cookie(owner: Owner, anon: httpx.Client):
    urls = owner.client.get(f"/v1/sandboxes/{owner.sid}/urls/{PORT}", params={"expires_s": 600}).json()
    assert urls["url"] == f"http://{owner.host()}/"
    assert urls["path_url"] == f"http://127.0.0.1:{owner.server.port}{owner.path()}"
    assert urls["public"] is False and urls["token"] == owner.token
    signed = urlsplit(urls["signed_url"])
    assert signed.netloc == owner.host()
    r = anon.get(f"/echo?{signed.query}&keep=1", headers={"Host": signed.netloc})
    anon.cookies.clear()  # cookies are sent by hand below (httpx would file them under 127.0.0.1)
    echo = _echo(r)
    assert echo["target"] == "/echo?keep=1"  # the signature is not forwarded
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("cloche_traffic=") and "Path=/;" in cookie and "HttpOnly" in cookie
    value = cookie.split(";", 1)[0]
    # the next page load carries only the cookie; it is stripped, the app's own cookies are not
    echo = _echo(anon.get("/echo", headers={"Host": owner.host(), "Cookie": f"theme=dark; {value}"}))
    assert _headers(echo)["cookie"] == ["theme=dark"]
    # the cookie is for this sandbox and port only
    _error(anon.get("/", headers={"Host": owner.host(port=PORT + 1), "Cookie": value}), 401, "unauthorized")
    # a tampered or expired signature is refused
    bad = signed.query.replace("cloche_expires=", "cloche_expires=1")
    _error(anon.get(f"/?{bad}", headers={"Host": owner.host()}), 401, "unauthorized")
    # on the path form the cookie is scoped to the port's path
    path_signed = f"{owner.path('echo')}?{signed.query}"
    r = anon.get(path_signed)
    anon.cookies.clear()
    assert r.status_code == 200 and f"Path={owner.path()};" in r.headers["set-cookie"]


def test_urls_validation(owner: Owner):
    _error(owner.client.get(f"/v1/sandboxes/{owner.sid}/urls/0"), 400, "invalid_request")
    _error(owner.client.get(f"/v1/sandboxes/{owner.sid}/urls/{PORT}", params={"expires_s": 8 * 86400}),
           422, "validation_error")  # fmt: skip


def test_public_sandbox_needs_no_token_and_masks_the_host(server: Server, anon: httpx.Client):
    _, key = server.tenant()
    with server.client(key) as client:
        network = {"public": True, "mask_request_host": "app.internal:${PORT}"}
        sid = _serving_sandbox(client, network=network)
        urls = client.get(f"/v1/sandboxes/{sid}/urls/{PORT}").json()
        assert urls["public"] is True and urls["token"] is None
        echo = _echo(anon.get("/echo", headers={"Host": f"{PORT}-{sid}.localhost:{server.port}"}))
        assert _headers(echo)["host"] == [f"app.internal:{PORT}"]
        assert _echo(anon.get(f"/v1/sandboxes/{sid}/ports/{PORT}/echo"))["method"] == "GET"
        client.delete(f"/v1/sandboxes/{sid}")


# ---- errors -------------------------------------------------------------------------------


def test_nothing_listening_is_502_port_closed(owner: Owner, anon: httpx.Client):
    message = _error(owner.client.get(owner.path(port=8001)), 502, "port_closed")
    assert message == f"nothing listens on port 8001 in sandbox {owner.sid} (listen on 0.0.0.0)"
    r = anon.get("/", headers={"Host": owner.host(port=8001), "X-Cloche-Traffic-Token": owner.token})
    _error(r, 502, "port_closed")


def test_ports_out_of_range_are_400(owner: Owner, anon: httpx.Client):
    for port in (0, 65536, 99999999):
        _error(owner.client.get(owner.path(port=port)), 400, "invalid_request")
        r = anon.get("/", headers={"Host": owner.host(port=port), "X-Cloche-Traffic-Token": owner.token})
        _error(r, 400, "invalid_request")
    _error(owner.client.get(f"/v1/sandboxes/{owner.sid}/ports/http/"), 400, "invalid_request")


# ---- streaming ----------------------------------------------------------------------------


def test_server_sent_events_arrive_as_they_are_sent(owner: Owner):
    started = time.monotonic()
    arrivals = []
    with owner.client.stream("GET", owner.path("sse")) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        for line in r.iter_lines():
            if line.startswith("data: "):
                arrivals.append((line, time.monotonic() - started))
    assert [a[0] for a in arrivals] == ["data: 0", "data: 1", "data: 2"]
    assert arrivals[0][1] < 0.5, arrivals  # the first event did not wait for the others
    assert arrivals[2][1] - arrivals[0][1] > 1.0, arrivals


def test_request_and_response_bodies_stream(owner: Owner):
    """A chunked 24 MiB upload (far over the API's JSON limit) and a 32 MiB download."""
    blob = os.urandom(1 << 20)

    def chunks() -> Iterator[bytes]:
        for _ in range(24):
            yield blob

    echo = _echo(owner.client.post(owner.path("echo"), content=chunks()))
    assert echo["body_bytes"] == 24 << 20
    assert echo["body_sha256"] == hashlib.sha256(blob * 24).hexdigest()
    assert _headers(echo)["transfer-encoding"] == ["chunked"]
    echo = _echo(owner.client.put(owner.path("echo"), content=blob))
    assert echo["body_bytes"] == len(blob) and _headers(echo)["content-length"] == [str(len(blob))]
    size = 0
    with owner.client.stream("GET", owner.path(f"big/{32 << 20}")) as r:
        assert r.headers["content-length"] == str(32 << 20)
        for part in r.iter_raw():
            size += len(part)
    assert size == 32 << 20
    head = owner.client.head(owner.path("echo"))
    assert head.status_code == 200 and head.content == b""


def test_keep_alive_many_requests(owner: Owner, anon: httpx.Client):
    headers = {"Host": owner.host(), "X-Cloche-Traffic-Token": owner.token}
    for i in range(50):
        assert _echo(anon.get(f"/echo?i={i}", headers=headers))["target"] == f"/echo?i={i}"


# ---- WebSockets ---------------------------------------------------------------------------


def _ws_url(server: Server, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


def _check_echo(ws) -> None:
    ws.send("hello")
    assert ws.recv(timeout=10) == "hello"
    ws.send(b"\x00\x01binary")
    assert ws.recv(timeout=10) == b"\x00\x01binary"
    big = os.urandom(200_000)
    ws.send(big)
    assert ws.recv(timeout=10) == big


def test_websocket_by_path_with_the_api_key(owner: Owner):
    url = _ws_url(owner.server, owner.path("ws"))
    with ws_connect(url, additional_headers={"Authorization": f"Bearer {owner.key}"},
                    subprotocols=["chat"]) as ws:  # fmt: skip
        assert ws.subprotocol == "chat"
        _check_echo(ws)
        ws.send("headers")
        headers = json.loads(ws.recv(timeout=10))
        assert "authorization" not in headers
        ws.close(4001, "done")
    deadline = time.time() + 5
    while time.time() < deadline:
        out = _exec(owner.client, owner.sid, "cat /tmp/ws-close 2>/dev/null; rm -f /tmp/ws-close")["stdout"]
        if out:
            break
        time.sleep(0.05)
    assert out == "4001"  # the client's close code reached the sandbox


def test_websocket_by_host_with_the_token(owner: Owner):
    sock = socket.create_connection(("127.0.0.1", owner.server.port))
    with ws_connect(f"ws://{owner.host()}/ws", sock=sock,
                    additional_headers={"e2b-traffic-access-token": owner.token}) as ws:  # fmt: skip
        _check_echo(ws)
        ws.send("headers")
        headers = json.loads(ws.recv(timeout=10))
        assert headers["host"] == owner.host() and "e2b-traffic-access-token" not in headers
        ws.send("close:4003")  # the sandbox closes: its code reaches the client
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.protocol.close_rcvd is not None
        assert (ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason) == (4003, "bye")


def test_websocket_without_credentials_is_refused(owner: Owner):
    with pytest.raises(InvalidStatus) as exc:
        ws_connect(_ws_url(owner.server, owner.path("ws")), open_timeout=10)
    assert exc.value.response.status_code == 401
    assert json.loads(exc.value.response.body)["error"]["code"] == "unauthorized"
    with pytest.raises(InvalidStatus) as exc:
        ws_connect(_ws_url(owner.server, owner.path("ws", port=8001)),
                   additional_headers={"X-Cloche-Traffic-Token": owner.token}, open_timeout=10)  # fmt: skip
    assert exc.value.response.status_code == 502


# ---- wake on request ----------------------------------------------------------------------


def test_a_sleeping_sandbox_wakes_on_a_request_to_its_port(server: Server):
    _, key = server.tenant()
    with server.client(key) as client:
        sid = _serving_sandbox(client, on_resume=START)
        path = f"/v1/sandboxes/{sid}/ports/{PORT}/echo"
        assert client.post(f"/v1/sandboxes/{sid}/pause").json()["state"] == "paused"
        assert _echo(client.get(path))["target"] == "/echo"
        assert client.get(f"/v1/sandboxes/{sid}").json()["state"] == "running"
        r = client.post(f"/v1/sandboxes/{sid}/hibernate")
        assert r.status_code == 200 and r.json()["state"] == "hibernated", r.text
        started = time.monotonic()
        echo = _echo(client.get(path))  # wakes it; on_resume restarts the server, which the proxy waits for
        assert echo["target"] == "/echo", echo
        assert time.monotonic() - started < 30
        assert client.get(f"/v1/sandboxes/{sid}").json()["state"] == "running"
        client.delete(f"/v1/sandboxes/{sid}")


# ---- traffic tokens -----------------------------------------------------------------------


def test_traffic_tokens(tmp_path, server: Server, owner: Owner):
    from cloche.control.traffic import TrafficTokens

    path = tmp_path / "traffic-key"
    a, b = TrafficTokens(path), TrafficTokens(path)
    token = a.token("sb_1")
    assert len(token) == 64 and a.token("sb_1") == token and b.token("sb_1") == token  # one secret, made once
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert a.check("sb_1", token) and a.check("sb_1", token.encode())
    assert not a.check("sb_2", token) and not a.check("sb_1", token[:-1]) and not a.check("sb_1", "é" * 64)
    expires = int(time.time()) + 60
    signature = a.sign("sb_1", 8000, expires)
    assert signature != token and b.check_signed("sb_1", 8000, expires, signature)
    assert not a.check_signed("sb_1", 8001, expires, signature)
    assert not a.check_signed("sb_2", 8000, expires, signature)
    assert not a.check_signed("sb_1", 8000, expires + 1, signature)
    assert not a.check_signed("sb_1", 8000, expires, signature, now=expires + 1)
    assert not a.check_signed("sb_1", 8000, "soon", signature)
    assert not a.check("sb_1", signature)  # a signature is no token
    # the server's secret is DATA_DIR/traffic-key, 0600, and its tokens are the ones it hands out
    server_key = server.data_dir / "traffic-key"
    assert os.stat(server_key).st_mode & 0o777 == 0o600
    assert TrafficTokens(server_key).token(owner.sid) == owner.token
