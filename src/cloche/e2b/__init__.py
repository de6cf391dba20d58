"""E2B compatibility: the official `e2b` and `e2b-code-interpreter` SDKs work against
`cloche up` unchanged, with E2B_API_URL and E2B_SANDBOX_URL set to cloche's URL and
E2B_API_KEY to a cloche API key.

- `sandboxes`, `metrics`, `lifecycle` (over `api`): E2B's control plane
  (/v2/sandboxes, /sandboxes/{id}/..., snapshots) on cloche's tenancy and lifecycle;
- `envd`: the in-sandbox protocol routed by the E2b-Sandbox-Id header: /health,
  /files, and Connect RPC for `process.Process` and `filesystem.Filesystem`;
- `jupyter`: the code interpreter's /execute and /contexts (port 49999), on the
  kernels of `interpreter`.
"""

from __future__ import annotations

from fastapi import APIRouter

from cloche.e2b import envd, jupyter, lifecycle, metrics, sandboxes

router = APIRouter()
router.include_router(sandboxes.router)
router.include_router(metrics.router)  # /sandboxes/metrics before /sandboxes/{id}
router.include_router(lifecycle.router)
router.include_router(envd.router)
router.include_router(jupyter.router)

__all__ = ["router"]
