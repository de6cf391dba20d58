"""Typed models for the JSON objects the Cloche API returns.

All models are immutable pydantic models that ignore unknown fields, so a newer server
that adds fields does not break an older SDK.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "AgentInfo",
    "AgentResponse",
    "ApiKey",
    "App",
    "AppSpec",
    "ArchiveResult",
    "BatchResult",
    "Entry",
    "ExecEvent",
    "ExecExit",
    "ExecOutput",
    "ExecResult",
    "ExecStart",
    "Health",
    "IdlePolicy",
    "KeyInfo",
    "KeyPage",
    "LogEntry",
    "LogPage",
    "NetworkCounters",
    "NetworkPolicy",
    "NetworkRule",
    "NetworkSpec",
    "NetworkStatus",
    "NewTenant",
    "NodeInfo",
    "PoolInfo",
    "PortUrls",
    "Resources",
    "SandboxInfo",
    "SandboxState",
    "SecretInfo",
    "SecretKeyRotation",
    "SkippedMember",
    "SnapshotInfo",
    "StateValue",
    "Tenant",
    "WriteResult",
]

SandboxState = Literal["creating", "running", "paused", "hibernated", "stopped"]
"""The lifecycle states a sandbox can be in."""


class _Model(BaseModel):
    """Base for API models: frozen, ignores unknown fields."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Health(_Model):
    """Answer of ``GET /healthz``."""

    status: str


class IdlePolicy(_Model):
    """When an idle sandbox goes to sleep: no exec, file or API activity for this long.

    ``None`` leaves that step out (never paused, or never hibernated).
    """

    pause_after_s: float | None = Field(None, description="Freeze the processes after this many idle seconds.")
    hibernate_after_s: float | None = Field(
        None, description="Snapshot the files and release CPU and memory after this many idle seconds."
    )


class NetworkRule(BaseModel):
    """One egress rule with a port or protocol restriction.

    A plain string is a rule too and usually enough: ``"198.51.100.0/24"``,
    ``"api.example.com"``, ``"*.example.com"`` (every name below it),
    ``"api.example.com:443"`` or ``"198.51.100.10:8000-8100"``.

    Unknown fields are rejected, so a misspelt option cannot silently widen a policy.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    to: str = Field(description="IPv4 address, CIDR, host name or *.wildcard name.")
    ports: int | str | None = Field(None, description='A port, or an inclusive range like "8000-8100"; all if None.')
    protocol: Literal["tcp", "udp"] | None = Field(None, description="tcp or udp; both (and any other) if None.")


Rule = str | NetworkRule
"""An egress rule: a string such as ``"api.example.com:443"`` or a :class:`NetworkRule`."""


class EgressProxyTLS(BaseModel):
    """TLS to the egress proxy: always verified, TLS 1.2 or newer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    server_name: str | None = Field(None, description="SNI and certificate name (default: the proxy's host).")
    ca_cert: str | None = Field(None, description="PEM CA certificates; they replace the system trust store.")


class EgressProxy(BaseModel):
    """A SOCKS5 proxy you run, through which the sandbox's outbound TCP is tunnelled
    (after the policy's filtering). Egress fails closed when it is down. The server
    never returns ``password`` or ``tls.ca_cert``.

    Example::

        EgressProxy(address="proxy.example.com:1080", username="u", password="p", tls=True)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str = Field(..., description='"host:port"; must resolve to a public address.')
    username: str | None = Field(None, description="RFC 1929 username.")
    password: str | None = Field(None, description="RFC 1929 password.")
    tls: bool | EgressProxyTLS = Field(False, description="TLS to the proxy.")


class HostRule(BaseModel):
    """A transform the node's egress proxy applies to requests to one host: set these
    headers. Values may name a tenant secret as ``${secret:NAME}``; the value is filled
    in outside the sandbox, and only for hosts the secret allows.

    Example::

        HostRule(headers={"Authorization": "Bearer ${secret:gh_token}"})
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    headers: dict[str, str] = Field(default_factory=dict, description="Headers to set (replacing the sandbox's).")

    def to_json(self) -> dict[str, Any]:
        return {"transform": {"headers": self.headers}}


class NetworkPolicy(BaseModel):
    """What a sandbox may reach over the network, how fast, and who may reach its ports.

    A connection is judged in this order: the server's always-denied ranges (cloud
    metadata, link-local, the node, other sandboxes, private ranges); then a matching
    ``allow_out`` rule accepts it (an allow beats a deny); then a matching ``deny_out``
    rule rejects it; otherwise it is accepted, unless ``allow_out`` was given without
    ``deny_out`` (a pure allow list), which rejects everything it does not name.

    ``NetworkPolicy()`` is the open internet; ``NetworkPolicy(egress=False)`` is
    loopback only (like ``network="none"``).  Unknown fields are rejected when you build
    a policy, and dropped when a newer server reports one.

    Example::

        NetworkPolicy(allow_out=["pypi.org", "*.pythonhosted.org", NetworkRule(to="198.51.100.7", ports=443)])
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    egress: bool = Field(True, description="False: no egress at all (loopback only, no DNS).")
    allow_out: list[Rule] | None = Field(
        None, description="Destinations always accepted; given without deny_out, the only ones (None: not given)."
    )
    deny_out: list[Rule] = Field(default_factory=list, description="Destinations rejected unless allow_out names them.")
    dns_servers: list[str] = Field(
        default_factory=list, description="Upstream IPv4 resolvers for this sandbox (empty: the node's)."
    )
    max_connections: int | None = Field(None, description="Cap on concurrent outbound connections.")
    egress_mbps: float | None = Field(None, description="Upload bandwidth limit in Mbit/s.")
    ingress_mbps: float | None = Field(None, description="Download bandwidth limit in Mbit/s.")
    public: bool = Field(False, description="Exposed ports are reachable without the traffic token.")
    mask_request_host: str | None = Field(
        None, description="Host header sent to exposed ports (``${PORT}`` is replaced by the port)."
    )
    rules: dict[str, list[HostRule]] = Field(
        default_factory=dict, description="Per-host request transforms (secrets injected outside the sandbox)."
    )
    egress_proxy: EgressProxy | None = Field(None, description="Tunnel outbound TCP through your SOCKS5 proxy.")
    https_ports: list[int] = Field(default_factory=list, description="Exposed ports reached over TLS (not verified).")

    @field_validator("rules", mode="before")
    @classmethod
    def _rules_from_api(cls, value: Any) -> Any:
        """Accept the API's form, ``{"host": [{"transform": {"headers": {...}}}]}``, too."""
        if not isinstance(value, dict):
            return value
        return {host: [r.get("transform", r) if isinstance(r, dict) else r for r in rules]
                for host, rules in value.items()}  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """The policy as the API's ``network`` object (unset optional fields left out)."""
        out = self.model_dump(mode="json", exclude_none=True, exclude={"rules", "https_ports"})
        if self.rules:
            out["rules"] = {host: [r.to_json() for r in rules] for host, rules in self.rules.items()}
        if self.https_ports:
            out["https_ports"] = self.https_ports
        return out


NetworkSpec = Literal["none", "internet"] | NetworkPolicy | Mapping[str, Any]
"""What ``network=`` accepts: ``"none"`` (loopback only), ``"internet"``, a
:class:`NetworkPolicy` or the same policy as a plain dict (checked by the server)."""


def _known(model: type[BaseModel], value: Any) -> Any:
    """``value`` without the keys ``model`` does not know (what a newer server adds)."""
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k in model.model_fields}
    return value


class NetworkCounters(_Model):
    """A sandbox's traffic and DNS counters since it (last) started."""

    bytes_out: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    packets_in: int = 0
    denied_connections: int = Field(0, description="Outbound connections the policy rejected.")
    dns_queries: int = 0
    dns_refused: int = Field(0, description="Names the policy refused to resolve.")
    dns_rate_limited: int = Field(0, description="Queries dropped by the per-sandbox DNS rate limit.")


class NetworkStatus(_Model):
    """A sandbox's network: the policy in force, its address and its counters.

    Attributes:
        policy: The policy in force, normalised by the server (``"none"`` reads back as
            ``egress=False``, ``"internet"`` as the default policy).
        address: The sandbox's IPv4 address while it runs, else ``None``.
        counters: Traffic and DNS counters (``None`` when it is not running, and in
            sandbox listings).
    """

    policy: NetworkPolicy
    address: str | None = None
    counters: NetworkCounters | None = None

    @field_validator("policy", mode="before")
    @classmethod
    def _drop_unknown(cls, value: Any) -> Any:
        value = _known(NetworkPolicy, value)
        if isinstance(value, dict):
            for key in ("allow_out", "deny_out"):
                if isinstance(value.get(key), list):
                    value[key] = [_known(NetworkRule, rule) for rule in value[key]]
        return value


class PortUrls(_Model):
    """Where a port the sandbox listens on is reachable from outside.

    Attributes:
        port: The port inside the sandbox.
        url: Host-form URL, e.g. ``http://8000-sb_x.localhost:8787/``.
        path_url: Path-form URL under the API server, for when wildcard host names do
            not resolve, e.g. ``http://127.0.0.1:8787/v1/sandboxes/sb_x/ports/8000/``.
        token: The traffic token to send as ``X-Cloche-Traffic-Token`` (``None`` when the
            sandbox's policy is ``public``).
        signed_url: ``url`` with a signature that stands in for the token until it expires.
        public: Whether the port is reachable without the token.
    """

    port: int
    url: str
    path_url: str | None = None
    token: str | None = None
    signed_url: str | None = None
    public: bool = False


class SandboxInfo(_Model):
    """A sandbox as the server describes it."""

    id: str
    state: str = Field(description="One of creating, running, paused, hibernated, stopped.")
    name: str | None = None
    template: str | None = None
    cpu: float | None = None
    memory_mb: int | None = None
    disk_mb: int | None = None
    timeout_s: float | None = Field(None, description="Idle/lifetime timeout in seconds.")
    metadata: dict[str, str] = Field(default_factory=dict)
    created_at: datetime | None = None
    expires_at: datetime | None = None
    last_active_at: datetime | None = Field(None, description="Last exec, file or API activity.")
    idle: IdlePolicy = Field(default_factory=IdlePolicy)
    on_timeout: str | None = Field(None, description="What happens at the timeout: kill or hibernate.")
    on_resume: str | None = Field(None, description="Shell command run after waking from stopped or hibernated.")
    node: str | None = None
    isolation: str | None = Field(None, description='"runc" or "gvisor" (runsc, a user-space kernel).')
    placement: dict[str, Any] | None = Field(
        None, description="Why the scheduler chose this node (free-form; absent without a scheduler)."
    )
    network: NetworkStatus | None = Field(
        None, description="Network policy and address (counters only when fetched alone, see ``network()``)."
    )


class ExecResult(_Model):
    """The outcome of a finished command (``POST /v1/sandboxes/{id}/exec``)."""

    exit_code: int | None
    signal: int | str | None = None
    stdout: str = ""
    stderr: str = ""
    duration_ms: float = 0
    truncated: bool = False
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """True when the command exited with status 0 and did not time out."""
        return self.exit_code == 0 and not self.timed_out


class CodeError(_Model):
    """An exception the code raised: its class name, ``str()`` and traceback."""

    name: str
    value: str
    traceback: str = ""


class CodeResult(_Model):
    """What a cell of Python did (``POST /v1/sandboxes/{id}/code``)."""

    stdout: str = ""
    stderr: str = ""
    results: list[dict[str, Any]] = Field(default_factory=list)
    """The last expression's value and ``display()`` calls: ``text`` (repr), and ``html``,
    ``png`` (base64)... when the object has them; ``is_main_result`` marks the former."""
    error: CodeError | None = None
    execution_count: int | None = None

    @property
    def text(self) -> str | None:
        """The repr of the last expression's value, if it had one."""
        return next((r.get("text") for r in self.results if r.get("is_main_result")), None)


class ExecStart(_Model):
    """First streamed event: the command started with process id ``pid``."""

    type: Literal["start"] = "start"
    pid: int | None = None


class ExecOutput(_Model):
    """A chunk of output; ``type`` says whether it came from stdout or stderr."""

    type: Literal["stdout", "stderr"]
    data: str


class ExecExit(_Model):
    """Last streamed event: the command finished."""

    type: Literal["exit"] = "exit"
    exit_code: int | None = None
    signal: int | str | None = None
    truncated: bool = False
    timed_out: bool = False


ExecEvent = Annotated[ExecStart | ExecOutput | ExecExit, Field(discriminator="type")]
"""One event of ``exec_stream``: :class:`ExecStart`, :class:`ExecOutput` or :class:`ExecExit`."""


class Entry(_Model):
    """A file-system entry inside a sandbox."""

    name: str
    path: str
    type: str = Field(description="One of file, dir, symlink, other.")
    size: int = 0
    mode: int = 0
    mtime: float = 0.0
    target: str | None = Field(None, description="Link target, for symlinks.")

    @property
    def is_dir(self) -> bool:
        """True for directories."""
        return self.type == "dir"

    @property
    def is_file(self) -> bool:
        """True for regular files."""
        return self.type == "file"


class WriteResult(_Model):
    """Answer of a file write: the normalized path and the bytes written."""

    path: str
    size: int


class SkippedMember(_Model):
    """An archive member the server refused to extract, and why."""

    name: str
    reason: str


class ArchiveResult(_Model):
    """Summary of an extracted tar upload."""

    files: int = 0
    dirs: int = 0
    links: int = 0
    bytes: int = 0
    skipped: list[SkippedMember] = Field(default_factory=list)


class Tenant(_Model):
    """A tenant and its quotas (``None`` means unlimited / server default)."""

    id: str
    name: str
    max_sandboxes: int | None = None
    max_cpu: float | None = None
    max_memory_mb: int | None = None
    created_at: datetime | None = None


class NewTenant(_Model):
    """A freshly created tenant with its first API key (shown only once)."""

    id: str
    name: str
    api_key: str
    key_id: str | None = None


class ApiKey(_Model):
    """A freshly created API key (the secret is shown only once)."""

    id: str
    api_key: str


class Resources(_Model):
    """An amount of CPU and memory."""

    cpu: float = 0
    memory_mb: int = 0


class PoolInfo(_Model):
    """A node's warm pool for one template."""

    template: str
    ready: int = 0
    size: int = 0


class TemplateInfo(_Model):
    """A template sandboxes can be created from."""

    name: str
    on_base: bool = False


class NodeInfo(_Model):
    """A worker node, its capacity and what is allocated on it."""

    id: str
    state: str
    capacity: Resources = Field(default_factory=Resources)
    allocated: Resources = Field(default_factory=Resources)
    sandboxes: int = 0
    pools: list[PoolInfo] = Field(default_factory=list)


class SnapshotInfo(_Model):
    """A named snapshot of a sandbox's files; new sandboxes can start from it."""

    id: str
    name: str
    sandbox_id: str = Field(description="The sandbox it was taken from.")
    template: str | None = None
    bytes: int = Field(0, description="Size of the files it holds.")
    created_at: datetime | None = None


class SecretInfo(_Model):
    """A tenant's secret as the API shows it: never its value."""

    name: str = Field(description="Referenced as ``${secret:NAME}`` in ``network.rules`` headers.")
    hosts: list[str] = Field(description="Host names (or ``*.wildcard`` names) the value may be sent to.")
    created_at: datetime | None = None
    updated_at: datetime | None = None


class SecretKeyRotation(_Model):
    """What ``client.secrets.rotate_key()`` did (admin)."""

    secrets: int = Field(description="Secrets re-encrypted under the new key.")
    keys: int = Field(description="Keys in the server's key file now, newest first.")
    dropped: int = Field(0, description="Old keys removed from the key file.")


class AppSpec(_Model):
    """What an app runs in each of its agents' sandboxes (see ``client.apps.deploy``)."""

    command: list[str]
    template: str | None = None
    cpu: float | None = None
    memory_mb: int | None = None
    disk_mb: int | None = None
    env: dict[str, str] = Field(default_factory=dict)
    setup: list[str] | str | None = None
    idle: IdlePolicy | None = None
    max_concurrency: int = 1
    startup_timeout_s: float = 30


class App(_Model):
    """A deployed app; ``version`` goes up with every deploy."""

    name: str
    version: int
    spec: AppSpec
    created_at: datetime | None = None
    updated_at: datetime | None = None


class AgentInfo(_Model):
    """One agent: the instance of an app that serves one key (one user)."""

    key: str
    app: str
    sandbox_id: str
    state: str = Field(description="Its sandbox's state (running, paused, hibernated, ...; deleted if gone).")
    node: str | None = None
    app_version: int = Field(0, description="The app version the instance runs.")
    created_at: datetime | None = None
    last_active_at: datetime | None = None


class StateValue(_Model):
    """A KV value with its version (``put(..., if_match=version)`` for compare-and-set)."""

    key: str
    value: bytes
    version: int
    expires_at: datetime | None = Field(None, description="When a key written with a TTL expires.")

    @property
    def text(self) -> str:
        """The value decoded as UTF-8."""
        return self.value.decode()

    def json(self) -> Any:
        """The value parsed as JSON."""
        return json.loads(self.value)


class KeyInfo(_Model):
    """A live key in a listing."""

    key: str
    version: int
    size: int


class KeyPage(_Model):
    """One page of a key listing; pass ``next_cursor`` back for the next (``None``: the last)."""

    items: list[KeyInfo]
    next_cursor: str | None = None


class BatchResult(_Model):
    """The outcome of one operation of an atomic batch."""

    op: str
    key: str
    version: int | None = Field(
        None, description="put: the new version; delete: the tombstone's; check: the current one."
    )
    existed: bool = Field(True, description="delete and check: whether the key existed.")


class LogEntry(_Model):
    """One entry of a namespace's append-only log."""

    seq: int
    data: bytes

    @property
    def text(self) -> str:
        """The entry decoded as UTF-8."""
        return self.data.decode()


class LogPage(_Model):
    """Log entries after a sequence number, oldest first.

    Attributes:
        last_seq: The newest sequence number in the log (0 when empty); read on with
            ``after=items[-1].seq`` while ``items`` is not empty.
        first_seq: The oldest sequence number still kept (entries before it were trimmed).
    """

    items: list[LogEntry]
    last_seq: int = 0
    first_seq: int = 0


@dataclass(frozen=True)
class AgentResponse:
    """An agent's answer to an invocation, as the agent sent it (like ``httpx.Response``).

    Attributes:
        status_code: The agent's HTTP status.
        headers: The agent's response headers (case-insensitive).
        content: The whole body.
    """

    status_code: int
    headers: httpx.Headers
    content: bytes

    @property
    def status(self) -> int:
        """Alias of :attr:`status_code`."""
        return self.status_code

    @property
    def ok(self) -> bool:
        """True for a 2xx status."""
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        """The body decoded as text (UTF-8 unless the agent named a charset)."""
        charset = httpx.Response(self.status_code, headers=self.headers).charset_encoding or "utf-8"
        return self.content.decode(charset, errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.content)

    def raise_for_status(self) -> AgentResponse:
        """Raise :class:`~cloche.client.errors.AgentError` unless the status is 2xx; return self."""
        if not self.ok:
            from .errors import AgentError

            raise AgentError(self.status_code, self.text[:500])
        return self
