"""Data residency on one machine (`cloche up`): its one node is in the server's region
(CLOCHE_REGION, "local" when unset), so a sandbox or app pinned elsewhere is refused
with 400 unknown_region (it can never run there), and every answer names the region."""

from __future__ import annotations

import httpx


def test_a_sandbox_pinned_elsewhere_is_refused_and_one_pinned_here_runs(tenant_client: httpx.Client) -> None:
    refused = tenant_client.post("/v1/sandboxes", json={"regions": ["eu"]})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "unknown_region"
    assert "'local'" in refused.json()["error"]["message"] and "eu" in refused.json()["error"]["message"]
    made = tenant_client.post("/v1/sandboxes", json={"regions": ["eu", "local"]})
    assert made.status_code == 201, made.text
    view = made.json()
    try:
        assert view["regions"] == ["eu", "local"] and view["region"] == view["home_region"] == "local"
        assert made.headers["cloche-region"] == "local"
    finally:
        tenant_client.delete(f"/v1/sandboxes/{view['id']}")
    garbled = tenant_client.post("/v1/sandboxes", json={"regions": ["eu west"]})
    assert garbled.status_code == 422 and "regions" in garbled.text  # not a region name at all
    unknown = tenant_client.get("/v1/sandboxes", headers={"cloche-region": "atlantis"})
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "unknown_region"
