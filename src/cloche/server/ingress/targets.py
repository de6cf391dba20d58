"""Which requests are ingress, and what they ask for: the sandbox, the port and the path.

Kept apart so that the cheap question ("is this request for a sandbox's port?") can be
asked without the proxy: the KV fast path asks it of every request it sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from starlette.types import Scope

PATH_PREFIX = b"/v1/sandboxes/"
PATH_TEMPLATE = "/v1/sandboxes/{sandbox_id}/ports/{port}/{path}"  # as the access log names them
HOST_TEMPLATE = "{port}-{sandbox_id}.{ingress_domain}/{path}"


@dataclass(slots=True)
class Target:
    sandbox_id: str
    port: int  # 0 when malformed or out of range (answered 400)
    path: bytes  # the request path inside the sandbox, raw as sent
    by_path: bool  # the /v1/sandboxes/{id}/ports/{port}/ form, else by host name

    @property
    def prefix(self) -> str:
        return f"/v1/sandboxes/{self.sandbox_id}/ports/{self.port}"


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of header `name` (lowercase) in an ASGI header list."""
    for key, value in headers:
        if key == name:
            return value
    return None


def secure(scope: Scope) -> bool:
    """Whether the client reached us over TLS."""
    return scope.get("scheme") in ("https", "wss")


def _port(text: bytes) -> int:
    if not text.isdigit() or len(text) > 5:
        return 0
    port = int(text)
    return port if 1 <= port <= 65535 else 0


def _raw_path(scope: Scope) -> bytes:
    return scope.get("raw_path") or quote(scope["path"]).encode()


def match_host(scope: Scope, suffix: bytes) -> Target | None:
    """`{port}-{id}.{domain}[:port]` -> the target; any other host -> None."""
    host = header(scope["headers"], b"host")
    if not host:
        return None
    name = host.rsplit(b":", 1)[0].lower() if host[-1:] != b"]" else host
    if not name.endswith(suffix):
        return None
    port, dash, sandbox_id = name[: -len(suffix)].partition(b"-")
    if not dash or not port.isdigit() or not sandbox_id or b"." in sandbox_id:
        return None
    return Target(sandbox_id.decode("latin-1"), _port(port), _raw_path(scope), False)


def match_path(scope: Scope) -> Target | None:
    """`/v1/sandboxes/{id}/ports/{port}[/path]` -> the target (path "/" when absent)."""
    raw = _raw_path(scope)
    if not raw.startswith(PATH_PREFIX):
        return None
    sandbox_id, _, rest = raw[len(PATH_PREFIX) :].partition(b"/")
    if not sandbox_id or not rest.startswith(b"ports/"):
        return None
    port, _, tail = rest[len(b"ports/") :].partition(b"/")
    if not port:
        return None
    return Target(sandbox_id.decode("latin-1"), _port(port), b"/" + tail, True)
