"""Hostile request sizes against a real `cloche up`: huge and deeply nested JSON and
huge uploads are refused with 413/400 while the server's memory stays bounded."""

from __future__ import annotations

import httpx

from tests.integration.conftest import Server


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _stream(total: int, chunk: bytes):
    sent = 0
    while sent < total:
        yield chunk
        sent += len(chunk)


def test_oversized_bodies_are_refused_with_bounded_memory(server: Server):
    _, key = server.tenant()
    headers = {"Authorization": f"Bearer {key}"}
    assert server.proc is not None
    before = _rss_kib(server.proc.pid)
    with httpx.Client(base_url=server.url, headers=headers, timeout=120) as c:
        # 300 MB of JSON, streamed without a length: refused while it arrives
        r = c.post("/v1/sandboxes", content=_stream(300 << 20, b"[" * (1 << 20)),
                   headers={"Content-Type": "application/json"})  # fmt: skip
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
        # nesting deeper than the parser allows, inside the size limit
        r = c.post("/v1/sandboxes", content=b"[" * 500_000 + b"]" * 500_000,
                   headers={"Content-Type": "application/json"})  # fmt: skip
        assert r.status_code in (400, 413, 422)
        # a file upload past max_file_bytes (256 MiB) to a real sandbox
        sid = c.post("/v1/sandboxes", json={}).json()["id"]
        r = c.put(f"/v1/sandboxes/{sid}/files", params={"path": "/workspace/big"},
                  content=_stream(300 << 20, b"\0" * (1 << 20)))  # fmt: skip
        assert r.status_code == 413
        assert c.get(f"/v1/sandboxes/{sid}/files", params={"path": "/workspace/big"}).status_code == 404
        c.delete(f"/v1/sandboxes/{sid}")
    grown = _rss_kib(server.proc.pid) - before
    assert grown < 100 * 1024, f"server RSS grew by {grown} KiB"
