"""E2B's control-plane endpoints that the SDKs reach only through their generated API
client (metrics of many sandboxes, logs, refreshes, resume) or that cloche does not
serve (volumes, secrets, the template build API), each parsed by the SDK's own models."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from e2b import ConnectionConfig, Sandbox, Secret, SecretException, Template, TemplateException, Volume, VolumeException
from e2b.api.client.api.sandboxes import (
    get_sandboxes_metrics,
    get_sandboxes_sandbox_id_logs,
    get_sandboxes_sandbox_id_metrics,
    get_v_2_sandboxes_sandbox_id_logs,
    post_sandboxes_sandbox_id_pause,
    post_sandboxes_sandbox_id_refreshes,
    post_sandboxes_sandbox_id_resume,
)
from e2b.api.client.models import (
    ResumedSandbox,
    SandboxesWithMetrics,
    SandboxLogs,
    SandboxLogsV2Response,
    SandboxMetric,
    SandboxPauseRequest,
    SandboxRefreshRequest,
)
from e2b.api.client.models import Sandbox as SandboxModel
from e2b.api.client_sync import get_api_client

from tests.e2b.conftest import E2bEnv


@pytest.fixture(scope="module")
def api(e2b: E2bEnv) -> Iterator[object]:
    client = get_api_client(ConnectionConfig())
    yield client
    client.get_httpx_client().close()


@pytest.fixture(scope="module")
def sbx(e2b: E2bEnv) -> Iterator[Sandbox]:
    sandbox = Sandbox.create(timeout=300)
    yield sandbox
    sandbox.kill()


def test_metrics_of_one_and_of_many(api, sbx: Sandbox, e2b: E2bEnv):
    sbx.commands.run("timeout 2.5 sh -c 'while :; do :; done'", background=True)
    time.sleep(2.2)  # the scheduler reads each cgroup every second
    many = get_sandboxes_metrics.sync_detailed(client=api, sandbox_ids=[sbx.sandbox_id, "sb_0000000000000000"])
    assert many.status_code == 200 and isinstance(many.parsed, SandboxesWithMetrics)
    assert set(many.parsed.sandboxes) == {sbx.sandbox_id}  # unknown ids are left out
    metric = SandboxMetric.from_dict(many.parsed.sandboxes[sbx.sandbox_id])
    assert metric.cpu_count >= 1 and 10 < metric.cpu_used_pct <= 100
    assert 0 < metric.mem_used < metric.mem_total and metric.mem_cache >= 0
    assert 0 < metric.disk_used < metric.disk_total
    assert abs(metric.timestamp_unix - time.time()) < 5

    now = int(time.time())
    one = get_sandboxes_sandbox_id_metrics.sync_detailed(sbx.sandbox_id, client=api, start=now - 60)
    assert one.status_code == 200 and [m.cpu_count for m in one.parsed] == [metric.cpu_count]
    before = get_sandboxes_sandbox_id_metrics.sync_detailed(sbx.sandbox_id, client=api, start=now - 60, end=now - 30)
    assert before.status_code == 200 and before.parsed == []  # only the current sample is kept
    assert get_sandboxes_sandbox_id_metrics.sync_detailed("sb_0000000000000000", client=api).status_code == 404
    # another tenant's sandbox is not there either
    _, other_key = e2b.server.tenant()
    other = get_api_client(ConnectionConfig(api_key=other_key))
    try:
        assert get_sandboxes_metrics.sync(client=other, sandbox_ids=[sbx.sandbox_id]).sandboxes == {}
        assert get_sandboxes_sandbox_id_metrics.sync_detailed(sbx.sandbox_id, client=other).status_code == 404
    finally:
        other.get_httpx_client().close()


def test_logs_are_an_empty_list(api, sbx: Sandbox):
    v1 = get_sandboxes_sandbox_id_logs.sync_detailed(sbx.sandbox_id, client=api)
    assert v1.status_code == 200 and isinstance(v1.parsed, SandboxLogs)
    assert v1.parsed.logs == [] and v1.parsed.log_entries == []
    v2 = get_v_2_sandboxes_sandbox_id_logs.sync_detailed(sbx.sandbox_id, client=api, limit=10)
    assert v2.status_code == 200 and isinstance(v2.parsed, SandboxLogsV2Response) and v2.parsed.logs == []
    assert get_v_2_sandboxes_sandbox_id_logs.sync_detailed("sb_0000000000000000", client=api).status_code == 404


def test_refresh_pause_and_resume(api, e2b: E2bEnv):
    s = Sandbox.create(timeout=30)
    try:
        ends = s.get_info().end_at
        refreshed = post_sandboxes_sandbox_id_refreshes.sync_detailed(
            s.sandbox_id, client=api, body=SandboxRefreshRequest(duration=120)
        )
        assert refreshed.status_code == 204 and (s.get_info().end_at - ends).total_seconds() > 60
        assert (
            post_sandboxes_sandbox_id_pause.sync_detailed(
                s.sandbox_id, client=api, body=SandboxPauseRequest()
            ).status_code
            == 204
        )
        resumed = post_sandboxes_sandbox_id_resume.sync_detailed(
            s.sandbox_id, client=api, body=ResumedSandbox(timeout=60)
        )
        assert resumed.status_code == 201 and isinstance(resumed.parsed, SandboxModel)
        assert resumed.parsed.sandbox_id == s.sandbox_id and resumed.parsed.envd_access_token
        assert s.commands.run("echo back").stdout == "back\n"
        again = post_sandboxes_sandbox_id_resume.sync_detailed(s.sandbox_id, client=api, body=ResumedSandbox())
        assert again.status_code == 409 and "already running" in again.content.decode()
    finally:
        s.kill()


def test_what_cloche_does_not_serve_is_a_readable_error(e2b: E2bEnv):
    with pytest.raises(SecretException, match="400: E2B's secrets API is not supported by cloche"):
        Secret.list().next_items()
    with pytest.raises(TemplateException, match="400: E2B's template build API is not supported"):
        Template.exists("anything")
    with pytest.raises(VolumeException, match="400: E2B volumes are not supported by cloche"):
        Volume.create("data")
