"""The E2B wire protocol spoken directly (no SDK): access checks, Connect framing and
error codes, and paths that try to leave the sandbox."""

from __future__ import annotations

import json
import struct

import httpx
import pytest

from tests.e2b.conftest import E2bEnv


def envelope(message: dict, flags: int = 0) -> bytes:
    data = json.dumps(message).encode()
    return struct.pack(">BI", flags, len(data)) + data


def messages(body: bytes) -> list[tuple[int, dict]]:
    out = []
    while body:
        flags, length = struct.unpack(">BI", body[:5])
        out.append((flags, json.loads(body[5 : 5 + length])))
        body = body[5 + length :]
    return out


@pytest.fixture(scope="module")
def sandbox(e2b: E2bEnv):
    with httpx.Client(base_url=e2b.url, headers={"X-API-KEY": e2b.key}, timeout=60) as api:
        r = api.post("/v2/sandboxes", json={"templateID": "base", "timeout": 300})
        assert r.status_code == 201, r.text
        body = r.json()
        yield body
        api.delete(f"/sandboxes/{body['sandboxID']}")


@pytest.fixture()
def envd(e2b: E2bEnv, sandbox: dict):
    headers = {"E2b-Sandbox-Id": sandbox["sandboxID"], "E2b-Sandbox-Port": "49983",
               "X-Access-Token": sandbox["envdAccessToken"]}  # fmt: skip
    with httpx.Client(base_url=e2b.url, headers=headers, timeout=60) as c:
        yield c


def test_create_answer_has_what_the_sdk_needs(sandbox: dict):
    assert sandbox["templateID"] == "base" and sandbox["sandboxID"].startswith("sb_")
    assert sandbox["clientID"] and sandbox["envdAccessToken"] and sandbox["trafficAccessToken"]
    major, minor, patch = (int(x) for x in sandbox["envdVersion"].split("."))
    assert (major, minor, patch) >= (0, 6, 4)  # the SDK's highest feature gate


def test_access_checks(e2b: E2bEnv, sandbox: dict, envd: httpx.Client):
    assert envd.get("/health").status_code == 204
    sid = sandbox["sandboxID"]
    plain = httpx.Client(base_url=e2b.url, timeout=30)
    assert plain.get("/health", headers={"E2b-Sandbox-Id": sid}).status_code == 401
    assert plain.get("/health").status_code == 400
    gone = plain.get("/health", headers={"E2b-Sandbox-Id": "sb_0000000000000000", "X-Access-Token": "x"})
    assert gone.status_code == 502 and "was not found" in gone.json()["message"]
    wrong_port = envd.get("/health", headers={"E2b-Sandbox-Port": "8080"})
    assert wrong_port.status_code == 502 and "port" in wrong_port.json()["message"]
    # the traffic token opens the code interpreter's port only
    traffic = {"E2b-Sandbox-Id": sid, "E2B-Traffic-Access-Token": sandbox["trafficAccessToken"]}
    assert plain.get("/contexts", headers={**traffic, "E2b-Sandbox-Port": "49999"}).status_code == 200
    assert plain.get("/files", params={"path": "/etc/hostname"}, headers=traffic).status_code == 401
    # the control plane wants an API key
    assert plain.get(f"/sandboxes/{sid}").status_code == 401
    assert plain.get(f"/sandboxes/{sid}", headers={"X-API-KEY": "ck_nope"}).json()["code"] == 401
    # an access token is bound to its sandbox
    with httpx.Client(base_url=e2b.url, headers={"X-API-KEY": e2b.key}) as api:
        other = api.post("/v2/sandboxes", json={"templateID": "base", "timeout": 60}).json()
        try:
            r = plain.get("/health", headers={"E2b-Sandbox-Id": other["sandboxID"],
                                              "X-Access-Token": sandbox["envdAccessToken"]})  # fmt: skip
            assert r.status_code == 401
        finally:
            api.delete(f"/sandboxes/{other['sandboxID']}")


def test_connect_unary_and_errors(envd: httpx.Client):
    r = envd.post("/filesystem.Filesystem/MakeDir", json={"path": "/tmp/proto"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json()["entry"]["type"] == "FILE_TYPE_DIRECTORY"
    r = envd.post("/filesystem.Filesystem/MakeDir", json={"path": "/tmp/proto"})
    assert r.status_code == 409 and r.json()["code"] == "already_exists"
    r = envd.post("/filesystem.Filesystem/Stat", json={"path": "/tmp/none"})
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = envd.post("/filesystem.Filesystem/Stat", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_argument"
    r = envd.post("/filesystem.Filesystem/Stat", content=b"\x0a\x01x", headers={"Content-Type": "application/proto"})
    assert r.status_code == 501 and r.json()["code"] == "unimplemented"
    r = envd.post("/process.Process/SendSignal", json={"process": {"pid": 999999}, "signal": "SIGNAL_SIGKILL"})
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = envd.post("/process.Process/SendInput", json={"process": {"pid": "x"}, "input": {"stdin": "eA=="}})
    assert r.status_code in (400, 404)


def test_connect_server_stream_framing(envd: httpx.Client):
    start = {"process": {"cmd": "/bin/sh", "args": ["-c", "echo out; echo err >&2; exit 3"]}}
    r = envd.post("/process.Process/Start", content=envelope(start),
                  headers={"Content-Type": "application/connect+json"})  # fmt: skip
    assert r.status_code == 200 and r.headers["content-type"] == "application/connect+json"
    frames = messages(r.content)
    assert frames[0][1]["event"]["start"]["pid"] > 1
    assert frames[-1] == (2, {})  # end of stream, no error
    events = [m["event"] for _, m in frames[1:-1]]
    datas = [e["data"] for e in events if "data" in e]
    assert {"stdout": "b3V0Cg=="} in datas and {"stderr": "ZXJyCg=="} in datas
    assert events[-1]["end"] == {"exitCode": 3, "exited": True, "status": "exit status 3", "error": "exit status 3"}
    # a command that cannot start fails before the first message: still HTTP 200, the
    # error in the end-of-stream envelope (connect-web drops a failed stream's body)
    bad = {"process": {"cmd": "/no/such/binary"}}
    r = envd.post("/process.Process/Start", content=envelope(bad), headers={"Content-Type": "application/connect+json"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/connect+json"
    [(flags, end)] = messages(r.content)
    assert flags == 2 and end["error"]["code"] == "invalid_argument" and "/no/such/binary" in end["error"]["message"]
    for method, request in (("process.Process/Connect", {"process": {"pid": 999999}}),
                            ("filesystem.Filesystem/WatchDir", {"path": "/no/such/dir"})):  # fmt: skip
        r = envd.post(f"/{method}", content=envelope(request), headers={"Content-Type": "application/connect+json"})
        assert r.status_code == 200 and messages(r.content)[-1][1]["error"]["code"] == "not_found", method


def test_paths_stay_inside_the_sandbox(envd: httpx.Client):
    envd.post("/process.Process/Start", content=envelope(
        {"process": {"cmd": "/bin/sh", "args": ["-c", "ln -sfn / /tmp/root-link; ln -sfn /etc/passwd /tmp/pw"]}}),
        headers={"Content-Type": "application/connect+json"})  # fmt: skip
    for path in ("/../../etc/shadow", "../../../../etc/shadow", "/tmp/../../etc/shadow"):
        r = envd.get("/files", params={"path": path, "username": "root"})
        assert r.status_code == 400, (path, r.status_code)
    # a symlink to / inside the sandbox leads to the sandbox's own root, not the host's
    r = envd.get("/files", params={"path": "/tmp/root-link/etc/hostname", "username": "root"})
    assert r.status_code == 200 and r.content == b"sandbox\n"
    r = envd.get("/files", params={"path": "/tmp/pw", "username": "root"})
    assert r.status_code == 200 and b"user:x:1000" in r.content
    r = envd.post("/files", params={"path": "/tmp/root-link/tmp/via-link", "username": "root"},
                  content=b"x", headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    assert r.status_code == 200
    assert envd.get("/files", params={"path": "/tmp/via-link"}).content == b"x"
    r = envd.post("/filesystem.Filesystem/ListDir", json={"path": "/tmp/root-link", "depth": 1})
    assert r.status_code == 200 and "workspace" in {e["name"] for e in r.json()["entries"]}


def test_gzip_bomb_is_refused(e2b: E2bEnv, envd: httpx.Client):
    import gzip

    bomb = gzip.compress(b"\0" * (300 << 20))  # bigger than CLOCHE_MAX_FILE_BYTES once inflated
    r = envd.post("/files", params={"path": "/tmp/bomb"}, content=bomb,
                  headers={"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"})  # fmt: skip
    assert r.status_code == 413
