"""Schemathesis against the live server's OpenAPI spec: whatever it generates, the
server never answers 5xx, and following the spec's links (create a sandbox, then act on
it by id; snapshots, secrets) a resource is there after its create and gone after its
delete. Agent invocation is excluded: it runs the generated command as an agent server
and waits for it to start. Stateful scenarios are capped at 4 steps to bound the run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import Server


def test_no_server_errors_for_generated_requests(server: Server, tmp_path: Path):
    _, key = server.tenant(max_sandboxes=20)
    cli = Path(sys.executable).parent / "schemathesis"
    config = tmp_path / "schemathesis.toml"
    config.write_text("[phases.stateful]\nmax-steps = 4\n")
    proc = subprocess.run(
        [str(cli), "--config-file", str(config), "run", f"{server.url}/openapi.json", "--max-examples", "5",
         "--checks", "not_a_server_error,use_after_free,ensure_resource_availability",
         "--exclude-path-regex", "/invoke", "-H", f"Authorization: Bearer {key}",
         "--request-timeout", "60", "--generation-deterministic", "--continue-on-failure",
         "--suppress-health-check", "all", "--phases", "examples,coverage,fuzzing,stateful"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )  # fmt: skip
    failures = proc.stdout[proc.stdout.find("FAILURES") :][:6000] if "FAILURES" in proc.stdout else proc.stdout[-6000:]
    assert proc.returncode == 0, failures + proc.stderr[-2000:]
