"""Secrets as tenant objects: the API over a real `cloche up` (values never come back,
never reach the log or the database in clear, survive restarts and key rotation), the
SDK and CLI, and `SecretService.resolve` / `check_policy` over a real SQLite store."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet, MultiFernet

from cloche import AsyncClient, Client, Conflict, InvalidRequest, NotFound
from cloche.control.errors import ApiError
from cloche.control.secrets import SecretService, covers
from cloche.node.net.egress.context import SecretDenied
from cloche.node.net.policy import NetworkPolicy
from cloche.store.db import SandboxRow, Store
from tests.integration.conftest import Server
from tests.integration.test_cli import cli

VALUE = "sk-live-" + uuid.uuid4().hex  # unique: searched for in responses, logs and files


def _value() -> str:
    return "tok-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """conftest's `server` without a warm pool (`tenant_client` comes from conftest)."""
    srv = Server(tmp_path_factory.mktemp("secrets") / "data", pool_size=0)
    srv.start()
    yield srv
    if srv.proc and srv.proc.poll() is None:
        srv.stop()
    srv.wipe()


def _error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and set(r.json()["error"]) == {"code", "message"}
    return r.json()["error"]["message"]


# --- HTTP ----------------------------------------------------------------------------------


def test_create_list_get_update_delete(tenant_client: httpx.Client):
    body = {"name": "gh_token", "value": VALUE, "hosts": ["API.GitHub.com.", "*.gh.io"]}
    r = tenant_client.post("/v1/secrets", json=body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert set(created) == {"name", "hosts", "created_at", "updated_at"}
    assert created["name"] == "gh_token" and created["hosts"] == ["api.github.com", "*.gh.io"]
    seen = [r]
    seen.append(listed := tenant_client.get("/v1/secrets"))
    assert [s["name"] for s in listed.json()["items"]] == ["gh_token"]
    seen.append(one := tenant_client.get("/v1/secrets/gh_token"))
    assert one.json() == created

    time.sleep(0.01)
    seen.append(r := tenant_client.put("/v1/secrets/gh_token", json={"value": VALUE + "-2"}))
    assert r.status_code == 200 and r.json()["hosts"] == created["hosts"]
    assert r.json()["updated_at"] > created["updated_at"] and r.json()["created_at"] == created["created_at"]
    seen.append(r := tenant_client.put("/v1/secrets/gh_token", json={"hosts": ["api.github.com"]}))
    assert r.status_code == 200 and r.json()["hosts"] == ["api.github.com"]

    # PUT creates only when given both value and hosts.
    seen.append(r := tenant_client.put("/v1/secrets/other", json={"value": VALUE}))
    assert "give both value and hosts" in _error(r, 404)
    seen.append(r := tenant_client.put("/v1/secrets/other", json={"value": VALUE, "hosts": ["x.test"]}))
    assert r.status_code == 201 and r.json()["name"] == "other"
    assert "give value, hosts or both" in _error(tenant_client.put("/v1/secrets/other", json={}), 400)

    assert tenant_client.delete("/v1/secrets/gh_token").status_code == 204
    assert "secret 'gh_token' not found" in _error(tenant_client.delete("/v1/secrets/gh_token"), 404)
    _error(tenant_client.get("/v1/secrets/gh_token"), 404)
    assert [s["name"] for s in tenant_client.get("/v1/secrets").json()["items"]] == ["other"]
    assert all(VALUE not in r.text for r in seen)


def test_duplicate_name_is_a_conflict(tenant_client: httpx.Client):
    body = {"name": "dup", "value": _value(), "hosts": ["a.test"]}
    assert tenant_client.post("/v1/secrets", json=body).status_code == 201
    r = tenant_client.post("/v1/secrets", json={**body, "value": _value()})
    assert "a secret named 'dup' already exists" in _error(r, 409)
    assert r.json()["error"]["code"] == "conflict"


@pytest.mark.parametrize(
    ("patch", "field", "says"),
    [
        ({"name": "1abc"}, "name:", "is not a secret name"),
        ({"name": "has space"}, "name:", "is not a secret name"),
        ({"name": "x" * 65}, "name:", "is not a secret name"),
        ({"name": "trailing\n"}, "name:", "is not a secret name"),
        ({"hosts": []}, "hosts:", "at least one host"),
        ({"hosts": ["ok.test", "not a host!"]}, "hosts[1]:", "not a valid host name"),
        ({"hosts": ["https://api.test"]}, "hosts[0]:", "is a URL"),
        ({"hosts": ["10.0.0.0/8"]}, "hosts[0]:", "a secret is bound to host names"),
        ({"hosts": ["203.0.113.7"]}, "hosts[0]:", "a secret is bound to host names"),
        ({"hosts": ["*"]}, "hosts[0]:", "not a host name"),
        ({"value": ""}, "value:", "must not be empty"),
        ({"value": "line one\nline two"}, "value:", "one line"),
        ({"value": "a\r\nInjected: yes"}, "value:", "one line"),
        ({"value": "nul\x00byte"}, "value:", "one line"),
        ({"value": "x" * 8193}, "value:", "at most 8192 bytes"),
    ],
)
def test_bad_input_is_400_naming_the_field(tenant_client: httpx.Client, patch: dict[str, object], field: str,
                                           says: str):  # fmt: skip
    body = {"name": "fine", "value": "secret-" + uuid.uuid4().hex, "hosts": ["api.test"], **patch}
    r = tenant_client.post("/v1/secrets", json=body)
    message = _error(r, 400)
    assert message.startswith(field) and says in message, message
    assert r.json()["error"]["code"] == "invalid_request"
    if isinstance(body["value"], str) and len(body["value"]) > 3:
        assert body["value"] not in r.text  # a rejected value is not echoed either


def test_limits_of_a_good_value(tenant_client: httpx.Client):
    r = tenant_client.post("/v1/secrets", json={"name": "big", "value": "é" * 4096 + "\t", "hosts": ["a.test"]})
    _error(r, 400)  # 8193 bytes of UTF-8
    r = tenant_client.post("/v1/secrets", json={"name": "big", "value": "é" * 4096, "hosts": ["a.test"]})
    assert r.status_code == 201


def test_another_tenants_secret_looks_missing(server: Server):
    _, key_a = server.tenant()
    _, key_b = server.tenant()
    with server.client(key_a) as a, server.client(key_b) as b:
        assert a.post("/v1/secrets", json={"name": "mine", "value": VALUE, "hosts": ["a.test"]}).status_code == 201
        assert b.get("/v1/secrets").json()["items"] == []
        assert _error(b.get("/v1/secrets/mine"), 404) == _error(b.get("/v1/secrets/nothing"), 404).replace(
            "nothing", "mine"
        )
        _error(b.delete("/v1/secrets/mine"), 404)
        _error(b.put("/v1/secrets/mine", json={"hosts": ["evil.test"]}), 404)
        # B may have its own secret of the same name; A's is untouched.
        assert b.put("/v1/secrets/mine", json={"value": _value(), "hosts": ["b.test"]}).status_code == 201
        assert a.get("/v1/secrets/mine").json()["hosts"] == ["a.test"]
        assert b.get("/v1/secrets/mine").json()["hosts"] == ["b.test"]


def test_rotate_key_needs_the_admin_key(tenant_client: httpx.Client):
    assert _error(tenant_client.post("/v1/secrets/rotate-key"), 403)


def test_openapi_shows_the_routes_and_hides_the_value(server: Server):
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert {"post", "get"} <= set(spec["paths"]["/v1/secrets"])
    assert {"get", "put", "delete"} <= set(spec["paths"]["/v1/secrets/{name}"])
    assert "post" in spec["paths"]["/v1/secrets/rotate-key"]
    value = spec["components"]["schemas"]["SecretCreate"]["properties"]["value"]
    assert value.get("writeOnly") and value.get("format") == "password"
    assert "value" not in spec["components"]["schemas"]["SecretOut"]["properties"]


# --- SDK -----------------------------------------------------------------------------------


def test_sdk_sync(server: Server):
    _, key = server.tenant()
    with Client(server.url, key) as client:
        info = client.secrets.create("sdk", VALUE, ["api.test"])
        assert info.name == "sdk" and info.hosts == ["api.test"] and info.created_at is not None
        assert not hasattr(info, "value") and VALUE not in repr(info)
        assert [s.name for s in client.secrets.list()] == ["sdk"]
        assert client.secrets.get("sdk") == info
        with pytest.raises(Conflict):
            client.secrets.create("sdk", VALUE, ["api.test"])
        with pytest.raises(InvalidRequest, match=r"hosts\[0\]"):
            client.secrets.create("sdk2", VALUE, ["198.51.100.0/24"])
        assert client.secrets.update("sdk", hosts=["*.api.test"]).hosts == ["*.api.test"]
        assert client.secrets.update("made", VALUE, ["m.test"]).name == "made"
        client.secrets.delete("sdk")
        with pytest.raises(NotFound):
            client.secrets.get("sdk")
        with pytest.raises(NotFound):
            client.secrets.delete("sdk")
        with pytest.raises(TypeError):
            client.secrets.create("x", VALUE, "api.test")


def test_sdk_async(server: Server):
    _, key = server.tenant()

    async def run() -> None:
        async with AsyncClient(server.url, key) as client:
            info = await client.secrets.create("sdk", VALUE, ["api.test"])
            assert (await client.secrets.get("sdk")) == info
            assert [s.name for s in await client.secrets.list()] == ["sdk"]
            with pytest.raises(Conflict):
                await client.secrets.create("sdk", VALUE, ["api.test"])
            assert (await client.secrets.update("sdk", value=_value())).updated_at >= info.updated_at
            await client.secrets.delete("sdk")
            with pytest.raises(NotFound):
                await client.secrets.get("sdk")

    asyncio.run(run())


# --- CLI -----------------------------------------------------------------------------------


def test_cli(server: Server, tmp_path: Path):
    _, key = server.tenant()

    def run(*args: str, input: str | None = None, as_key: str | None = key):
        return cli("secret", *args, url=server.url, key=as_key, input=input)

    piped = run("add", "piped", "--host", "api.test", "--host", "*.api.test", input=VALUE + "\n")
    assert piped.returncode == 0, piped.stderr
    assert "stored piped" in piped.stderr and VALUE not in piped.stdout + piped.stderr
    (tmp_path / "v").write_text(_value() + "\n")
    assert run("add", "filed", "--host", "b.test", "--value-file", str(tmp_path / "v")).returncode == 0
    plain = run("add", "plain", "--host", "c.test", "--value", _value())
    assert plain.returncode == 0 and "shell history" in plain.stderr
    again = run("add", "piped", "--host", "api.test", input=_value())
    assert again.returncode == 1 and "already exists" in again.stderr
    assert run("add", "piped", "--host", "api.test", "--replace", input=_value()).returncode == 0
    bad = run("add", "multi", "--host", "a.test", input="one\ntwo\n")
    assert bad.returncode == 1 and "value:" in bad.stderr

    listed = run("list")
    assert listed.returncode == 0
    assert "NAME" in listed.stdout and "HOSTS" in listed.stdout and VALUE not in listed.stdout
    assert {"piped", "filed", "plain"} <= {line.split()[0] for line in listed.stdout.splitlines()[1:]}
    assert "api.test" in listed.stdout

    assert run("rm", "plain", "filed").returncode == 0
    assert run("rm", "plain").returncode == 1
    assert "plain" not in run("list").stdout

    denied = run("rotate-key")
    assert denied.returncode == 1 and "admin" in denied.stderr
    rotated = run("rotate-key", as_key=server.admin_key)
    assert rotated.returncode == 0 and "re-encrypted" in rotated.stderr, rotated.stderr

    for command in ([], ["add"], ["list"], ["rm"], ["rotate-key"]):
        help_ = cli("secret", *command, "--help", url=server.url, key=None)
        assert help_.returncode == 0 and "Usage:" in help_.stdout


# --- what lands on disk and in the log --------------------------------------------------------


def test_value_is_not_in_the_log_or_the_database(server: Server, tenant_client: httpx.Client):
    """Runs after the tests above: every value they sent is unique to them and checked."""
    value = "never-in-clear-" + uuid.uuid4().hex
    r = tenant_client.post("/v1/secrets", json={"name": "disk", "value": value, "hosts": ["a.test"]})
    assert r.status_code == 201
    tenant_client.post("/v1/secrets", json={"name": "disk", "value": value, "hosts": ["a.test"]})  # 409
    tenant_client.post("/v1/secrets", json={"name": "bad name", "value": value, "hosts": ["a.test"]})  # 400
    tenant_client.put("/v1/secrets/disk", json={"value": value, "hosts": ["a.test"]})
    log = server.log.read_bytes()
    assert log  # the server's stdout and stderr (no access log: a path never holds a value anyway)
    db = b"".join(p.read_bytes() for p in server.data_dir.glob("cloche.db*"))
    for needle in (value, VALUE):
        assert needle.encode() not in log
        assert needle.encode() not in db
    keys = server.data_dir / "secret-keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert keys.read_bytes().strip() not in db


# --- restart and rotation ----------------------------------------------------------------------


def _ciphertexts(db: Path) -> dict[str, bytes]:
    with closing(sqlite3.connect(db)) as conn:
        return {name: bytes(c) for name, c in conn.execute("SELECT name, ciphertext FROM secrets")}


def _decrypt_all(data_dir: Path) -> dict[str, str]:
    keys = [Fernet(line) for line in (data_dir / "secret-keys").read_text().split()]
    return {n: MultiFernet(keys).decrypt(c).decode() for n, c in _ciphertexts(data_dir / "cloche.db").items()}


def test_restart_and_key_rotation(tmp_path: Path):
    server = Server(tmp_path / "data", pool_size=0)
    server.start()
    try:
        _, key = server.tenant()
        values = {f"s{i}": _value() for i in range(3)}
        with server.client(key) as c:
            for name, value in values.items():
                r = c.post("/v1/secrets", json={"name": name, "value": value, "hosts": ["a.test"]})
                assert r.status_code == 201
        assert server.stop() == 0
        server.start()
        with server.client(key) as c:
            assert [s["name"] for s in c.get("/v1/secrets").json()["items"]] == sorted(values)
        assert _decrypt_all(server.data_dir) == values

        keys_before = (server.data_dir / "secret-keys").read_text().split()
        cipher_before = _ciphertexts(server.data_dir / "cloche.db")
        with server.client() as admin:
            r = admin.post("/v1/secrets/rotate-key")
            assert r.status_code == 200 and r.json() == {"secrets": 3, "keys": 2, "dropped": 0}
        keys_after = (server.data_dir / "secret-keys").read_text().split()
        assert keys_after[1:] == keys_before and keys_after[0] not in keys_before
        cipher_after = _ciphertexts(server.data_dir / "cloche.db")
        assert all(cipher_after[n] != cipher_before[n] for n in values)
        # Under the new key alone: the rotation re-encrypted every secret.
        assert {n: Fernet(keys_after[0]).decrypt(c).decode() for n, c in cipher_after.items()} == values
        with server.client(key) as c:
            assert c.get("/v1/secrets/s0").status_code == 200
            assert c.put("/v1/secrets/s1", json={"value": values["s1"] + "x"}).status_code == 200
            values["s1"] += "x"

        assert server.stop() == 0
        server.start()
        with server.client(key) as c:
            assert c.get("/v1/secrets/s2").json()["name"] == "s2"
        with server.client() as admin:
            r = admin.post("/v1/secrets/rotate-key", params={"drop_old": "true"})
            assert r.json() == {"secrets": 3, "keys": 1, "dropped": 2}
        assert len((server.data_dir / "secret-keys").read_text().split()) == 1
        assert _decrypt_all(server.data_dir) == values
        assert server.stop() == 0
        server.start()
        with server.client(key) as c:
            assert len(c.get("/v1/secrets").json()["items"]) == 3
    finally:
        if server.proc and server.proc.poll() is None:
            server.stop()
        server.wipe()


# --- SecretService over a real SQLite store ----------------------------------------------------


class Plane:
    """A control-plane store in a temp dir with two tenants and a sandbox each."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = Store(root / "cloche.db")
        self.a, _, _ = self.store.create_tenant("a", 10, 10, 1024)
        self.b, _, _ = self.store.create_tenant("b", 10, 10, 1024)
        for sid, tenant in (("sb_a", self.a), ("sb_b", self.b)):
            self.store.add_sandbox(SandboxRow(sid, tenant.id, None, "base", 1, 256, 1024, {}, time.time()))
        self.service = SecretService(self.store, root / "secret-keys")


@pytest.fixture()
def plane(tmp_path: Path) -> Iterator[Plane]:
    p = Plane(tmp_path)
    yield p
    p.store.close()


def test_resolve_exact_wildcard_and_denials(plane: Plane):
    s = plane.service
    s.create(plane.a.id, "gh", "v-gh", ["api.github.com", "*.githubusercontent.com"])
    assert s.resolve("sb_a", "gh", "api.github.com") == "v-gh"
    assert s.resolve("sb_a", "gh", "API.GitHub.com.") == "v-gh"
    assert s.resolve("sb_a", "gh", "raw.githubusercontent.com") == "v-gh"
    for host in ("githubusercontent.com", "github.com", "evil.test", "api.github.com.evil.test"):
        with pytest.raises(SecretDenied, match=rf"secret 'gh' may not be sent to {host} \(allowed: api.github.com"):
            s.resolve("sb_a", "gh", host)
    with pytest.raises(SecretDenied, match="no secret named 'nope' in this sandbox's tenant"):
        s.resolve("sb_a", "nope", "api.github.com")
    with pytest.raises(SecretDenied, match="no secret named 'gh'"):
        s.resolve("sb_b", "gh", "api.github.com")  # tenant B's sandbox cannot use A's secret
    with pytest.raises(SecretDenied, match="has no owner"):
        s.resolve("sb_gone", "gh", "api.github.com")


def test_resolve_sees_every_change(plane: Plane):
    s, a = plane.service, plane.a.id
    with pytest.raises(SecretDenied):
        s.resolve("sb_a", "k", "a.test")  # a cached miss...
    s.create(a, "k", "one", ["a.test"])
    assert s.resolve("sb_a", "k", "a.test") == "one"  # ...is forgotten on create
    s.put(a, "k", "two", None)
    assert s.resolve("sb_a", "k", "a.test") == "two"
    s.put(a, "k", None, ["b.test"])
    with pytest.raises(SecretDenied, match="may not be sent to a.test"):
        s.resolve("sb_a", "k", "a.test")
    assert s.resolve("sb_a", "k", "b.test") == "two"
    s.rotate_key()
    assert s.resolve("sb_a", "k", "b.test") == "two"
    s.delete(a, "k")
    with pytest.raises(SecretDenied, match="no secret named 'k'"):
        s.resolve("sb_a", "k", "b.test")


def test_resolve_is_fast(plane: Plane):
    plane.service.create(plane.a.id, "k", "v", ["*.a.test"])
    n = 20_000
    start = time.perf_counter()
    for _ in range(n):
        plane.service.resolve("sb_a", "k", "x.a.test")
    per_call = (time.perf_counter() - start) / n
    print(f"resolve: {per_call * 1e6:.2f} us per call (cached)")
    assert per_call < 200e-6  # about 1 us here; generous for a loaded machine


def test_rotation_keeps_everything_readable(plane: Plane):
    s, keys = plane.service, plane.root / "secret-keys"
    values = {f"n{i}": _value() for i in range(5)}
    for name, value in values.items():
        s.create(plane.a.id, name, value, ["a.test"])
    first = keys.read_text().split()
    before = _ciphertexts(plane.root / "cloche.db")
    done = s.rotate_key()
    assert (done.secrets, done.keys, done.dropped) == (5, 2, 0)
    after_keys = keys.read_text().split()
    assert after_keys[1:] == first and stat.S_IMODE(keys.stat().st_mode) == 0o600
    after = _ciphertexts(plane.root / "cloche.db")
    assert all(after[n] != before[n] for n in values)
    assert all(s.resolve("sb_a", n, "a.test") == v for n, v in values.items())
    # A fresh service over the same files (a restart) reads them too, under the new key alone.
    again = SecretService(plane.store, keys)
    assert all(again.resolve("sb_a", n, "a.test") == v for n, v in values.items())
    assert all(Fernet(after_keys[0]).decrypt(after[n]).decode() == v for n, v in values.items())
    done = s.rotate_key(drop_old=True)
    assert (done.keys, done.dropped) == (1, 2) and len(keys.read_text().split()) == 1
    assert all(SecretService(plane.store, keys).resolve("sb_a", n, "a.test") == v for n, v in values.items())
    assert not list(plane.root.glob(".secret-keys*"))  # no temp file left behind


def test_key_file_problems_are_refused_at_start(plane: Plane):
    keys = plane.root / "secret-keys"
    plane.service.create(plane.a.id, "k", "v", ["a.test"])
    saved = keys.read_bytes()
    keys.unlink()
    with pytest.raises(RuntimeError, match="missing but the database holds encrypted secrets"):
        SecretService(plane.store, keys)
    keys.write_text("not-a-key\n")
    with pytest.raises(RuntimeError, match="key 1 is not a Fernet key"):
        SecretService(plane.store, keys)
    keys.write_text(f"# rotated by hand\n{Fernet.generate_key().decode()}\n{saved.decode()}")
    assert SecretService(plane.store, keys).resolve("sb_a", "k", "a.test") == "v"
    os.chmod(keys, 0o600)


def test_keys_file_from_settings(tmp_path: Path):
    from cloche.config import Settings

    settings = Settings(data_dir=tmp_path).apply_env({"CLOCHE_SECRET_KEYS_FILE": str(tmp_path / "elsewhere" / "k")})
    assert settings.secret_keys_path == tmp_path / "elsewhere" / "k"
    assert Settings(data_dir=tmp_path).secret_keys_path == tmp_path / "secret-keys"
    store = Store(tmp_path / "cloche.db")
    SecretService(store, settings.secret_keys_path)
    assert stat.S_IMODE(settings.secret_keys_path.stat().st_mode) == 0o600
    store.close()


def _policy(rules: dict[str, list[str]]) -> NetworkPolicy:
    """A policy whose rule for each host sets one header per secret name."""
    return NetworkPolicy.from_json({"rules": {
        host: [{"transform": {"headers": {f"X-{i}": f"Bearer ${{secret:{n}}}" for i, n in enumerate(names)}}}]
        for host, names in rules.items()
    }})  # fmt: skip


@pytest.mark.parametrize(
    ("allowed", "rule_host", "ok"),
    [
        ("api.test", "api.test", True),
        ("api.test", "x.api.test", False),
        ("*.api.test", "x.api.test", True),
        ("*.api.test", "a.b.api.test", True),
        ("*.api.test", "api.test", False),
        ("*.api.test", "*.api.test", True),
        ("*.test", "*.api.test", True),
        ("api.test", "*.api.test", False),
        ("*.x.api.test", "*.api.test", False),
        ("*.other.test", "api.test", False),
    ],
)
def test_coverage(allowed: str, rule_host: str, ok: bool):
    assert covers(allowed, rule_host) is ok


def test_check_policy(plane: Plane):
    s, a = plane.service, plane.a.id
    s.create(a, "gh", "v", ["api.github.com", "*.gh.test"])
    s.create(a, "wide", "v", ["*.test"])
    s.check_policy(a, NetworkPolicy.from_json("internet"))
    s.check_policy(a, _policy({"api.github.com": ["gh"], "*.gh.test": ["gh"], "x.gh.test": ["gh"]}))
    s.check_policy(a, _policy({"*.a.test": ["wide"], "b.test": ["wide"], "*.test": ["wide"]}))
    with pytest.raises(ApiError) as bad:
        s.check_policy(a, _policy({"api.github.com": ["gh"], "api.test": ["wide", "gh"]}))
    assert bad.value.status == 400 and bad.value.code == "invalid_spec"
    assert bad.value.message.startswith("network.rules['api.test'][0]: secret 'gh' may not be sent to api.test")
    with pytest.raises(ApiError, match=r"rules\['\*.github.com'\]\[0\]: secret 'gh' may not be sent to \*.github.com"):
        s.check_policy(a, _policy({"*.github.com": ["gh"]}))  # api.github.com does not cover every name below
    with pytest.raises(ApiError, match=r"network.rules\['api.github.com'\]\[0\]: no secret named 'nope'"):
        s.check_policy(a, _policy({"api.github.com": ["nope"]}))
    with pytest.raises(ApiError, match="no secret named 'gh'"):
        s.check_policy(plane.b.id, _policy({"api.github.com": ["gh"]}))  # another tenant's
    with pytest.raises(ApiError, match=r"^sandbox.network.rules"):
        s.check_policy(a, _policy({"api.test": ["gh"]}), where="sandbox.network")
