"""The official E2B JavaScript SDKs (`e2b`, `@e2b/code-interpreter`, pinned in
tests/e2b/js/package-lock.json and installed by `make setup`), unchanged, against a real
`cloche up`: `node --test` runs tests/e2b/js/*.test.mjs with the environment the e2b
fixture sets (E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2b.conftest import E2bEnv

JS = Path(__file__).parent / "js"


def test_js_sdk(e2b: E2bEnv):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the E2B JS SDK needs node >= 20.18.1)")
    if not (JS / "node_modules" / "e2b").is_dir():
        pytest.fail(f"the E2B JS SDKs are not installed: run `make setup` (npm ci in {JS})")
    proc = subprocess.run([node, "--test", "--test-reporter=spec"], cwd=JS, env={**os.environ, "NO_COLOR": "1"},
                          capture_output=True, text=True, timeout=240)  # fmt: skip
    assert proc.returncode == 0, f"node --test failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
