"""Schemathesis against the live server's OpenAPI spec: whatever it generates, the
server never answers 5xx. Agent invocation is excluded: it runs the generated command
as an agent server and waits for it to start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import Server


def test_no_server_errors_for_generated_requests(server: Server, tmp_path: Path):
    _, key = server.tenant(max_sandboxes=20)
    cli = Path(sys.executable).parent / "schemathesis"
    proc = subprocess.run(
        [str(cli), "run", f"{server.url}/openapi.json", "--checks", "not_a_server_error",
         "--max-examples", "6", "--exclude-path-regex", "/invoke", "-H", f"Authorization: Bearer {key}",
         "--request-timeout", "60", "--generation-deterministic", "--continue-on-failure",
         "--suppress-health-check", "all", "--phases", "examples,coverage,fuzzing"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )  # fmt: skip
    failures = proc.stdout[proc.stdout.find("FAILURES"):][:6000] if "FAILURES" in proc.stdout else proc.stdout[-6000:]
    assert proc.returncode == 0, failures + proc.stderr[-2000:]
