"""The control-plane store's behaviour, the same on SQLite and PostgreSQL: what the API
relies on for tenants and keys, sandbox names, apps and agents, snapshots and secrets,
and what two writers racing get."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

import pytest

from cloche.e2b.store import E2bStore
from cloche.store.db import AgentRow, IntegrityError, SandboxRow, SecretRow, SnapshotRow, Store


def sandbox(tenant_id: str, sid: str, name: str | None) -> SandboxRow:
    return SandboxRow(sid, tenant_id, name, "base", 0.5, 256, 1024, {"team": "a"}, time.time())


def race(n: int, body: Callable[[int], None]) -> None:
    """Run body(0..n-1) on n threads released at the same instant."""
    start = threading.Barrier(n)

    def run(i: int) -> None:
        start.wait()
        body(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_keys_are_stored_as_hashes_and_revocation_ends_them(store: Store) -> None:
    tenant, key_id, key = store.create_tenant("acme", 10, 4.0, 4096, priority=3, isolation=("runc", "gvisor"))
    assert store.authenticate(key) == tenant
    assert (tenant.priority, tenant.isolation) == (3, ("runc", "gvisor"))
    stored = store.query("SELECT * FROM api_keys WHERE id=?", (key_id,))[0]
    assert stored["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert key not in [str(v) for v in stored]
    second_id, second = store.add_key(tenant.id)
    other, _, _ = store.create_tenant("other", 1, 1.0, 512)
    assert not store.revoke_key(other.id, key_id)  # not its key
    assert store.revoke_key(tenant.id, key_id)
    assert not store.revoke_key(tenant.id, key_id)  # already revoked
    assert store.authenticate(key) is None
    assert store.authenticate(second) == tenant
    assert store.authenticate("ck_nonsense") is None


def test_tenant_names_are_unique_and_a_failed_create_leaves_no_key(store: Store) -> None:
    store.create_tenant("acme", 10, 4.0, 4096)
    keys = store.query("SELECT COUNT(*) FROM api_keys")[0][0]
    with pytest.raises(IntegrityError):
        store.create_tenant("acme", 1, 1.0, 512)
    assert store.query("SELECT COUNT(*) FROM api_keys")[0][0] == keys
    assert [t.name for t in store.tenants()] == ["acme"]
    assert store.tenant_by_name("acme") == store.tenants()[0]
    assert store.set_priority(store.tenants()[0].id, 7) and store.tenants()[0].priority == 7
    assert not store.set_priority("tn_missing", 1)


def test_sandbox_names_are_unique_per_tenant(store: Store) -> None:
    a, _, _ = store.create_tenant("a", 10, 4.0, 4096)
    b, _, _ = store.create_tenant("b", 10, 4.0, 4096)
    store.add_sandbox(sandbox(a.id, "sb1", "web"))
    store.add_sandbox(sandbox(b.id, "sb2", "web"))  # another tenant may use the name
    store.add_sandbox(sandbox(a.id, "sb3", None))
    store.add_sandbox(sandbox(a.id, "sb4", None))  # unnamed sandboxes never collide
    with pytest.raises(IntegrityError):
        store.add_sandbox(sandbox(a.id, "sb5", "web"))
    with pytest.raises(IntegrityError):
        store.add_sandbox(sandbox("tn_missing", "sb6", "x"))  # no such tenant
    assert store.sandbox_by_name(a.id, "web") == store.sandbox("sb1")
    assert [s.id for s in store.sandboxes(a.id)] == ["sb1", "sb3", "sb4"]
    assert len(store.sandboxes()) == 4
    store.update_limits("sb1", 2.0, 2048)
    assert (store.sandbox("sb1").cpu, store.sandbox("sb1").memory_mb) == (2.0, 2048)  # type: ignore[union-attr]
    assert store.sandbox("sb1").metadata == {"team": "a"}  # type: ignore[union-attr]
    store.delete_sandbox("sb1")
    assert store.sandbox("sb1") is None
    store.add_sandbox(sandbox(a.id, "sb7", "web"))  # the name is free again


def test_timestamps_and_sizes_round_trip_exactly(store: Store) -> None:
    """Seconds with microseconds and sizes past 2^31 come back as written (PostgreSQL's
    REAL and INTEGER would round and overflow them)."""
    tenant, _, _ = store.create_tenant("a", 10, 4.0, 4096)
    assert store.tenant(tenant.id).created_at == tenant.created_at  # type: ignore[union-attr]
    row = SnapshotRow("snap_1", tenant.id, "big", "m" * 64, "sb1", "base", 5 << 30, 1_700_000_000.123456)
    store.add_snapshot(row)
    assert store.snapshot("snap_1") == row


def test_apps_get_the_next_version_on_every_deploy(store: Store) -> None:
    tenant, _, _ = store.create_tenant("a", 10, 4.0, 4096)
    first = store.put_app(tenant.id, "chat", {"image": "v1"})
    second = store.put_app(tenant.id, "chat", {"image": "v2"})
    assert (first.version, second.version) == (1, 2)
    assert second.created_at == first.created_at and second.updated_at >= first.updated_at
    assert store.app(tenant.id, "chat") == second
    store.put_app(tenant.id, "batch", {})
    assert [a.name for a in store.apps(tenant.id)] == ["batch", "chat"]
    store.delete_app(tenant.id, "batch")
    assert store.app(tenant.id, "batch") is None


def test_agents_are_one_per_app_and_key(store: Store) -> None:
    tenant, _, _ = store.create_tenant("a", 10, 4.0, 4096)
    row = AgentRow(tenant.id, "chat", "user-1", "sb1", 1, time.time())
    store.add_agent(row)
    with pytest.raises(IntegrityError):
        store.add_agent(AgentRow(tenant.id, "chat", "user-1", "sb2", 1, time.time()))
    store.add_agent(AgentRow(tenant.id, "chat", "user-0", "sb3", 1, time.time()))
    assert store.agent(tenant.id, "chat", "user-1") == row
    assert [a.key for a in store.agents(tenant.id, "chat")] == ["user-0", "user-1"]
    store.set_agent_version(tenant.id, "chat", "user-1", 4)
    assert store.agent(tenant.id, "chat", "user-1").app_version == 4  # type: ignore[union-attr]
    store.delete_agent(tenant.id, "chat", "user-1")
    assert store.agent(tenant.id, "chat", "user-1") is None


def test_snapshot_names_are_unique_and_manifests_pinned(store: Store) -> None:
    tenant, _, _ = store.create_tenant("a", 10, 4.0, 4096)
    store.add_snapshot(SnapshotRow("snap_1", tenant.id, "before", "m1", "sb1", "base", 10, 1.0))
    with pytest.raises(IntegrityError):
        store.add_snapshot(SnapshotRow("snap_2", tenant.id, "before", "m2", "sb1", "base", 10, 2.0))
    store.add_snapshot(SnapshotRow("snap_3", tenant.id, "after", "m3", "sb1", "base", 10, 3.0))
    assert store.snapshot_by_name(tenant.id, "after").id == "snap_3"  # type: ignore[union-attr]
    assert [s.id for s in store.snapshots(tenant.id)] == ["snap_1", "snap_3"]
    assert store.snapshot_manifests() == {"m1", "m3"}
    store.delete_snapshot("snap_1")
    assert store.snapshot_manifests() == {"m3"}


def test_secrets_rows_and_rewrapping(store: Store) -> None:
    tenant, _, _ = store.create_tenant("a", 10, 4.0, 4096)
    row = SecretRow(tenant.id, "OPENAI", b"\x00cipher\xff", ["api.openai.com"], 1.5, 1.5)
    store.add_secret(row)
    with pytest.raises(IntegrityError):
        store.add_secret(row)
    assert store.secret(tenant.id, "OPENAI") == row
    assert store.update_secret(tenant.id, "OPENAI", b"new", ["*.openai.com"])
    assert not store.update_secret(tenant.id, "MISSING", b"x", [])
    assert store.secret(tenant.id, "OPENAI").hosts == ["*.openai.com"]  # type: ignore[union-attr]
    store.add_secret(SecretRow(tenant.id, "ANTHROPIC", b"old", [], 2.0, 2.0))
    assert [s.name for s in store.secrets(tenant.id)] == ["ANTHROPIC", "OPENAI"]
    assert store.reencrypt_secrets(lambda c: b"v2:" + c) == 2
    assert store.secret(tenant.id, "ANTHROPIC").ciphertext == b"v2:old"  # type: ignore[union-attr]
    with pytest.raises(ZeroDivisionError):  # a failing rewrap changes nothing
        store.reencrypt_secrets(lambda c: bytes(1 // 0))
    assert store.secret(tenant.id, "ANTHROPIC").ciphertext == b"v2:old"  # type: ignore[union-attr]
    assert store.delete_secret(tenant.id, "OPENAI") and not store.delete_secret(tenant.id, "OPENAI")
    assert store.secret_count() == 1


def test_e2b_table_beside_the_records(store: Store) -> None:
    """An API layer's own table (E2B's tokens) works on either engine through `query`."""
    tenant, _, _ = store.create_tenant("a", 10, 4.0, 4096)
    e2b = E2bStore(store)
    row = e2b.ensure("sb1", tenant.id, "base", "tt", auto_resume=True, idempotency_key="k1")
    assert E2bStore(store).get("sb1") == row  # a fresh cache reads it back
    assert e2b.ensure("sb1", "tn_other", "base", "tt2").tenant_id == "tn_other"  # replaced
    assert E2bStore(store).by_idempotency_key("tn_other", "k1") is None
    assert e2b.sandbox_ids() == ["sb1"]


def test_racing_writers_of_one_name_one_wins(store: Store) -> None:
    tenant, _, _ = store.create_tenant("a", 10, 4.0, 4096)
    outcomes: list[str] = []

    def create(i: int) -> None:
        try:
            store.add_sandbox(sandbox(tenant.id, f"sb{i}", "web"))
            outcomes.append("won")
        except IntegrityError:
            outcomes.append("taken")

    race(8, create)
    assert sorted(outcomes) == ["taken"] * 7 + ["won"]
    assert [s.name for s in store.sandboxes(tenant.id)] == ["web"]


def test_racing_deploys_each_get_a_version(store: Store) -> None:
    tenant, _, _ = store.create_tenant("a", 10, 4.0, 4096)
    versions: list[int] = []
    race(6, lambda i: versions.append(store.put_app(tenant.id, "chat", {"i": i}).version))
    assert sorted(versions) == [1, 2, 3, 4, 5, 6]


def test_writes_survive_reopening(open_store: Callable[..., Store]) -> None:
    first = open_store()
    tenant, _, key = first.create_tenant("a", 10, 4.0, 4096)
    first.close()
    assert open_store().authenticate(key) == tenant
