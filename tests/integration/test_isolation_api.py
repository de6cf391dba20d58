"""Isolation tiers over the API: `isolation` on create, in the record, the server's
default, and the tenant's allow-list (403 naming the field). Runs one gVisor sandbox."""

from __future__ import annotations

from cloche.client import Client


def test_create_chooses_the_tier_and_the_record_shows_it(server):
    _, key = server.tenant()
    with Client(server.url, api_key=key) as client:
        default = client.sandboxes.create()
        gvisor = client.sandboxes.create(isolation="gvisor")
        try:
            assert (default.info.isolation, gvisor.info.isolation) == ("runc", "gvisor")
            assert client.sandboxes.get(gvisor.id).info.isolation == "gvisor"
            assert gvisor.exec("uname -r").stdout.strip() == "4.4.0"
        finally:
            default.kill()
            gvisor.kill()


def test_a_tier_the_tenant_may_not_use_is_403_naming_the_field(server):
    _, key = server.tenant(isolation=["runc"])
    with server.client(key) as c:
        r = c.post("/v1/sandboxes", json={"isolation": "gvisor"})
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "isolation_not_allowed"
        assert "isolation" in r.json()["error"]["message"]
        r = c.post("/v1/sandboxes", json={"isolation": "kata"})
        assert r.status_code == 422 and "isolation" in r.text
    with server.client() as admin:
        listed = {t["id"]: t for t in admin.get("/v1/tenants").json()["items"]}
        assert ["runc"] in [t["isolation"] for t in listed.values()]
