"""OpenAPI links: which operations take an identifier from which response, so clients and
stateful API tests (schemathesis) can follow a create to the resource it made."""

from __future__ import annotations

import re
from typing import Any

SANDBOX_OPERATIONS = [
    ("get", "/v1/sandboxes/{sandbox_id}"), ("patch", "/v1/sandboxes/{sandbox_id}"),
    ("get", "/v1/sandboxes/{sandbox_id}/network"), ("put", "/v1/sandboxes/{sandbox_id}/network"),
    ("post", "/v1/sandboxes/{sandbox_id}/timeout"), ("post", "/v1/sandboxes/{sandbox_id}/pause"),
    ("post", "/v1/sandboxes/{sandbox_id}/resume"), ("post", "/v1/sandboxes/{sandbox_id}/hibernate"),
    ("post", "/v1/sandboxes/{sandbox_id}/fork"), ("post", "/v1/sandboxes/{sandbox_id}/snapshots"),
    ("post", "/v1/sandboxes/{sandbox_id}/exec"), ("get", "/v1/sandboxes/{sandbox_id}/files"),
    ("put", "/v1/sandboxes/{sandbox_id}/files"), ("get", "/v1/sandboxes/{sandbox_id}/files/stat"),
    ("post", "/v1/sandboxes/{sandbox_id}/files/mkdir"), ("get", "/v1/sandboxes/{sandbox_id}/urls/{port}"),
    ("delete", "/v1/sandboxes/{sandbox_id}"),
]  # fmt: skip
SNAPSHOT_OPERATIONS = [("get", "/v1/snapshots/{snapshot_id}"), ("delete", "/v1/snapshots/{snapshot_id}")]
SECRET_OPERATIONS = [("get", "/v1/secrets/{name}"), ("put", "/v1/secrets/{name}"), ("delete", "/v1/secrets/{name}")]


def links(parameter: str, field: str, operations: list[tuple[str, str]]) -> dict[str, Any]:
    """A response's `links`: each operation gets `parameter` from the body's `field`."""
    return {
        re.sub(r"[^A-Za-z0-9]+", "_", f"{method}{path}").strip("_"): {
            "operationRef": "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method,
            "parameters": {parameter: f"$response.body#/{field}"},
        }
        for method, path in operations
    }


SANDBOX = links("sandbox_id", "id", SANDBOX_OPERATIONS)
SNAPSHOT = links("snapshot_id", "id", SNAPSHOT_OPERATIONS)
SECRET = links("name", "name", SECRET_OPERATIONS)
