"""Example agents shipped with cloche, and the app specs that deploy them."""

from __future__ import annotations

import base64
from importlib.resources import files
from typing import Any


def memo_app(template: str = "base", **overrides: Any) -> dict[str, Any]:
    """The app spec for the memo agent: its source is written into each new instance by
    the setup command, and python3 from the template serves it."""
    source = (files("cloche.examples") / "memo_agent.py").read_bytes()
    encoded = base64.b64encode(source).decode()
    spec: dict[str, Any] = {
        "template": template,
        "command": ["python3", "/workspace/agent.py"],
        "setup": f"echo {encoded} | base64 -d > /workspace/agent.py",
        "idle": {"pause_after_s": 30, "hibernate_after_s": 300},
    }
    spec.update(overrides)
    return spec
