"""SDK for durable state (KV and log), standalone until it joins `cloche.Client`:

    from cloche.client.state import StateClient
    with StateClient() as st:                       # CLOCHE_URL, CLOCHE_API_KEY
        ns = st.namespace("agent-42")               # or a sandbox id: its own namespace
        v = ns.put("memory/profile", b"{}")         # -> version
        value, version = ns.get("memory/profile")   # (None, None) when absent
        ns.put("memory/profile", b"{...}", if_match=version)   # StateConflict on a race
        seq = ns.append(b"turn 1", idempotency_key="turn-1")
        entries, last = ns.read(after=0, wait_s=10)
"""

from __future__ import annotations

import base64
import os
from typing import Any

import httpx


class StateError(Exception):
    def __init__(self, status: int, code: str, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.body = status, code, message, body or {}


class StateConflict(StateError):
    """412: a condition did not hold. `current_version` (None: absent); `index` for batches."""

    @property
    def current_version(self) -> int | None:
        return self.body.get("current_version")

    @property
    def index(self) -> int | None:
        return self.body.get("index")


def _raise(r: httpx.Response) -> None:
    if r.status_code < 400:
        return
    try:
        err = r.json()["error"]
    except (ValueError, KeyError, TypeError):
        err = {"code": "http_error", "message": r.text[:200]}
    kind = StateConflict if r.status_code == 412 else StateError
    raise kind(r.status_code, err.get("code", ""), err.get("message", ""), err)


class Namespace:
    def __init__(self, http: httpx.Client, name: str) -> None:
        self._http = http
        self.name = name
        self._base = f"/v1/state/{name}"

    def get(self, key: str) -> tuple[bytes | None, int | None]:
        r = self._http.get(f"{self._base}/kv/{key}")
        if r.status_code == 404:
            return None, None
        _raise(r)
        return r.content, int(r.headers["etag"].strip('"'))

    def put(self, key: str, value: bytes | str, *, if_match: int | None = None, if_none_match: bool = False,
            ttl_s: float | None = None) -> int:  # fmt: skip
        headers = {}
        if if_match is not None:
            headers["If-Match"] = f'"{if_match}"'
        if if_none_match:
            headers["If-None-Match"] = "*"
        params = {"ttl_s": ttl_s} if ttl_s is not None else None
        content = value.encode() if isinstance(value, str) else value
        r = self._http.put(f"{self._base}/kv/{key}", content=content, headers=headers, params=params)
        _raise(r)
        return r.json()["version"]

    def delete(self, key: str, *, if_match: int | None = None) -> None:
        headers = {"If-Match": f'"{if_match}"'} if if_match is not None else {}
        _raise(self._http.delete(f"{self._base}/kv/{key}", headers=headers))

    def list(self, prefix: str = "", limit: int = 1000) -> list[dict[str, Any]]:
        """Every live key under prefix ({"key", "version", "size"}), following the pages."""
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"prefix": prefix, "limit": limit}
            if cursor:
                params["cursor"] = cursor
            r = self._http.get(f"{self._base}/kv", params=params)
            _raise(r)
            body = r.json()
            out += body["items"]
            cursor = body["next_cursor"]
            if not cursor:
                return out

    def batch(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Atomic: ops like {"op": "put", "key": k, "value": b"..." | "text", "if_match": 3}."""
        wire = []
        for op in ops:
            op = dict(op)
            if isinstance(op.get("value"), bytes):
                op["value_b64"] = base64.b64encode(op.pop("value")).decode()
            wire.append(op)
        r = self._http.post(f"{self._base}/batch", json={"ops": wire})
        _raise(r)
        return r.json()["results"]

    def append(self, data: bytes | str, *, idempotency_key: str | None = None) -> int:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        r = self._http.post(f"{self._base}/log", content=data.encode() if isinstance(data, str) else data,
                            headers=headers)  # fmt: skip
        _raise(r)
        return r.json()["seq"]

    def read(self, after: int = 0, limit: int = 100, wait_s: float = 0) -> tuple[list[tuple[int, bytes]], int]:
        """([(seq, data)], last_seq); wait_s > 0 long-polls for the first new entry."""
        r = self._http.get(f"{self._base}/log", params={"after": after, "limit": limit, "wait_s": wait_s,
                                                        "encoding": "base64"}, timeout=wait_s + 30)  # fmt: skip
        _raise(r)
        body = r.json()
        return [(i["seq"], base64.b64decode(i["data_b64"])) for i in body["items"]], body["last_seq"]

    def trim(self, upto: int) -> int:
        r = self._http.post(f"{self._base}/log/trim", json={"upto": upto})
        _raise(r)
        return r.json()["first_seq"]

    def grant(self, sandbox_id: str) -> None:
        """Let one of the tenant's sandboxes use this namespace from inside (`cloche-state -n`)."""
        _raise(self._http.put(f"{self._base}/grants/{sandbox_id}"))

    def revoke(self, sandbox_id: str) -> None:
        _raise(self._http.delete(f"{self._base}/grants/{sandbox_id}"))

    def grants(self) -> list[str]:
        r = self._http.get(f"{self._base}/grants")
        _raise(r)
        return r.json()["sandboxes"]


class StateClient:
    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 30) -> None:
        url = url or os.environ.get("CLOCHE_URL", "http://127.0.0.1:8787")
        key = api_key or os.environ.get("CLOCHE_API_KEY", "")
        self._http = httpx.Client(base_url=url, timeout=timeout, headers={"Authorization": f"Bearer {key}"})

    def namespace(self, name: str) -> Namespace:
        return Namespace(self._http, name)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> StateClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cli() -> Any:
    """`cloche state ...` as a typer app, for cloche.cli to mount:
    `app.add_typer(cloche.client.state.cli(), name="state")`. Exit status: 0 done,
    1 not found or a condition failed (412), 2 any other error."""
    import sys

    import typer

    app = typer.Typer(help="Durable state: a versioned KV and an append-only log per namespace.",
                      no_args_is_help=True)  # fmt: skip
    Url = typer.Option(None, "--url", envvar="CLOCHE_URL", help="server URL")
    Key = typer.Option(None, "--api-key", envvar="CLOCHE_API_KEY", help="API key")

    def client(url: str | None, key: str | None) -> StateClient:
        return StateClient(url, key)

    def run(fn: Any) -> None:
        try:
            fn()
        except StateConflict as e:
            print(f"condition failed: {e.message}", file=sys.stderr)
            raise typer.Exit(1) from None
        except StateError as e:
            print(f"error: {e.code}: {e.message}", file=sys.stderr)
            raise typer.Exit(2) from None
        except httpx.HTTPError as e:
            print(f"error: {e}", file=sys.stderr)
            raise typer.Exit(2) from None

    def data_arg(value: str | None) -> bytes:
        return sys.stdin.buffer.read() if value in (None, "-") else value.encode()  # type: ignore[union-attr]

    @app.command("get")
    def get(ns: str, key: str, url: str | None = Url, api_key: str | None = Key,
            show_version: bool = typer.Option(False, "--version", "-v", help="version on stderr")) -> None:  # fmt: skip
        """Print a key's value."""
        def go() -> None:
            with client(url, api_key) as st:
                value, version = st.namespace(ns).get(key)
            if value is None:
                print(f"key {key!r} not found", file=sys.stderr)
                raise typer.Exit(1)
            sys.stdout.buffer.write(value)
            sys.stdout.flush()
            if show_version:
                print(f"version {version}", file=sys.stderr)
        run(go)

    @app.command("put")
    def put(ns: str, key: str, value: str = typer.Argument(None, help="the value; '-' or none: stdin"),
            if_match: int = typer.Option(None, "--if-match", help="only if the key is at this version"),
            if_none_match: bool = typer.Option(False, "--if-none-match", help="only if the key does not exist"),
            ttl: float = typer.Option(None, "--ttl", help="expire after this many seconds"),
            url: str | None = Url, api_key: str | None = Key) -> None:  # fmt: skip
        """Store a value; prints the new version."""
        def go() -> None:
            with client(url, api_key) as st:
                print(st.namespace(ns).put(key, data_arg(value), if_match=if_match, if_none_match=if_none_match,
                                           ttl_s=ttl))  # fmt: skip
        run(go)

    @app.command("del")
    def delete(ns: str, key: str, if_match: int = typer.Option(None, "--if-match"), url: str | None = Url,
               api_key: str | None = Key) -> None:  # fmt: skip
        """Delete a key."""
        run(lambda: _with(client(url, api_key), lambda st: st.namespace(ns).delete(key, if_match=if_match)))

    @app.command("ls")
    def ls(ns: str, prefix: str = typer.Argument(""), url: str | None = Url, api_key: str | None = Key) -> None:
        """List keys: KEY<TAB>VERSION<TAB>SIZE."""
        def go() -> None:
            with client(url, api_key) as st:
                for item in st.namespace(ns).list(prefix):
                    print(f"{item['key']}\t{item['version']}\t{item['size']}")
        run(go)

    @app.command("append")
    def append(ns: str, data: str = typer.Argument(None, help="the entry; '-' or none: stdin"),
               idempotency_key: str = typer.Option(None, "--idempotency-key", "-k"),
               url: str | None = Url, api_key: str | None = Key) -> None:  # fmt: skip
        """Append a log entry; prints its seq."""
        def go() -> None:
            with client(url, api_key) as st:
                print(st.namespace(ns).append(data_arg(data), idempotency_key=idempotency_key))
        run(go)

    @app.command("read")
    def read(ns: str, after: int = typer.Option(0, "--after"), limit: int = typer.Option(100, "--limit"),
             wait: float = typer.Option(0, "--wait", help="long-poll this long for new entries"),
             follow: bool = typer.Option(False, "--follow", "-f", help="keep waiting for new entries"),
             url: str | None = Url, api_key: str | None = Key) -> None:  # fmt: skip
        """Print log entries after --after: SEQ<TAB>DATA lines."""
        def go() -> None:
            position = after
            with client(url, api_key) as st:
                n = st.namespace(ns)
                while True:
                    entries, _ = n.read(position, limit, 30 if follow else wait)
                    for seq, data in entries:
                        sys.stdout.buffer.write(b"%d\t%s\n" % (seq, data))
                        position = seq
                    sys.stdout.flush()
                    if not follow:
                        return
        run(go)

    @app.command("trim")
    def trim(ns: str, upto: int, url: str | None = Url, api_key: str | None = Key) -> None:
        """Drop log entries up to UPTO; prints the first seq kept."""
        run(lambda: print(_with(client(url, api_key), lambda st: st.namespace(ns).trim(upto))))

    @app.command("grant")
    def grant(ns: str, sandbox_id: str, url: str | None = Url, api_key: str | None = Key) -> None:
        """Let a sandbox of yours use the namespace from inside (cloche-state -n NS)."""
        run(lambda: _with(client(url, api_key), lambda st: st.namespace(ns).grant(sandbox_id)))

    @app.command("revoke")
    def revoke(ns: str, sandbox_id: str, url: str | None = Url, api_key: str | None = Key) -> None:
        """Withdraw a grant."""
        run(lambda: _with(client(url, api_key), lambda st: st.namespace(ns).revoke(sandbox_id)))

    return app


def _with(st: StateClient, fn: Any) -> Any:
    with st:
        return fn(st)
