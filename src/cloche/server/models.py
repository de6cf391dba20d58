"""Request and response bodies (pydantic). Unknown fields are rejected, so a
`tenant_id` or other privileged field in a body is an error, never obeyed."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from fastapi import Body
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from cloche.constants import DAY_S, MAX_TIMEOUT_S
from cloche.node.spec import MAX_CPU, MAX_DISK_MB, MAX_MEMORY_MB, MIN_CPU, MIN_DISK_MB, MIN_MEMORY_MB

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


M = TypeVar("M", bound=BaseModel)
# `body: Omittable[Model]`: a request may leave the body out (no body, no Content-Type) and
# gets exactly what `{}` gives: the defaults, or a 422 naming the fields it must have.
Omittable = Annotated[M, Body(default_factory=dict, validate_default=True)]


Isolation = Literal["runc", "gvisor"]
# Data residency: the only regions where it runs (and, with per-region stores, keeps its
# snapshots); placement never leaves them, and answers 503 region_full when they are full.
REGION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"  # us-east-1, eu, local
RegionName = Annotated[str, Field(pattern=REGION_PATTERN)]
Regions = Annotated[list[RegionName], Field(max_length=32)]
REGIONS_HELP = (
    "data residency: it runs only in these regions (503 region_full when they have no room; "
    "400 unknown_region on one machine whose node is in none of them)"
)


class TenantCreate(Strict):
    name: str = Field(..., min_length=1, max_length=128, pattern=NAME_PATTERN)
    max_sandboxes: int | None = Field(None, ge=0, le=100_000)
    max_cpu: float | None = Field(None, ge=0, le=100_000)
    max_memory_mb: int | None = Field(None, ge=0, le=1 << 30)
    priority: int = Field(
        0, ge=-1000, le=1000, description="scheduling priority: higher is admitted first, preempted last"
    )
    isolation: list[Isolation] = Field(
        default_factory=list, max_length=2, description="isolation tiers its sandboxes may use (empty: any)"
    )


class TenantCreated(BaseModel):
    id: str
    name: str
    api_key: str
    key_id: str


class TenantOut(BaseModel):
    id: str
    name: str
    max_sandboxes: int
    max_cpu: float
    max_memory_mb: int
    created_at: float
    priority: int = 0
    isolation: list[str] = Field(default_factory=list, description="allowed isolation tiers (empty: any)")


class KeyCreated(BaseModel):
    id: str
    api_key: str


class IdleBody(Strict):
    pause_after_s: float | None = Field(None, gt=0, le=MAX_TIMEOUT_S, description="freeze after this long idle")
    hibernate_after_s: float | None = Field(None, gt=0, le=MAX_TIMEOUT_S, description="hibernate after this long idle")


class RuleBody(Strict):
    to: str = Field(..., max_length=260, description="IPv4 address, CIDR, host name or *.wildcard name")
    ports: int | str | None = Field(None, description='a port, or a range like "8000-8100"')
    protocol: Literal["tcp", "udp"] | None = None


Rule = str | RuleBody


class HeaderTransform(Strict):
    headers: dict[str, str] | None = Field(
        None, description='headers to set, e.g. {"Authorization": "Bearer ${secret:gh_token}"}'
    )


class HostRule(Strict):
    transform: HeaderTransform | None = None


class EgressProxyTls(Strict):
    server_name: str | None = Field(None, max_length=253, description="SNI and certificate name (default: the host)")
    ca_cert: str | None = Field(None, max_length=8192, description="PEM CA certificates; replace the system store")


class EgressProxyBody(Strict):
    address: str = Field(..., max_length=260, description='the SOCKS5 proxy, "host:port" (a public address)')
    username: str | None = Field(None, max_length=255, description="RFC 1929 username")
    password: str | None = Field(None, max_length=255, description="RFC 1929 password (never returned)")
    tls: bool | EgressProxyTls = Field(False, description="TLS to the proxy (always verified)")


class NetworkBody(Strict):
    """A network policy. Rules are evaluated: always-denied ranges, then allow_out
    (an allow beats a deny), then deny_out, then the default: everything, unless
    allow_out is given without deny_out (a pure allow list)."""

    egress: bool = Field(True, description="false: no egress at all (loopback only, like network: none)")
    allow_out: list[Rule] | None = Field(
        None, max_length=256, description='e.g. ["198.51.100.0/24", "api.example.com:443", "*.pypi.org"]'
    )
    deny_out: list[Rule] | None = Field(None, max_length=256)
    dns_servers: list[str] | None = Field(None, max_length=4, description="upstream resolvers for this sandbox")
    max_connections: int | None = Field(None, description="cap on concurrent outbound connections")
    egress_mbps: float | None = Field(None, description="upload bandwidth limit, Mbit/s")
    ingress_mbps: float | None = Field(None, description="download bandwidth limit, Mbit/s")
    public: bool = Field(False, description="exposed ports reachable without the traffic token")
    mask_request_host: str | None = Field(
        None, max_length=253, description="Host header sent to exposed ports (${PORT} is replaced)"
    )
    rules: dict[str, list[HostRule]] | None = Field(
        None,
        description="per-host request transforms done by the node's egress proxy, outside the sandbox; "
        "header values may name a secret as ${secret:NAME}; a host here must also be allowed by the policy",
    )
    egress_proxy: EgressProxyBody | None = Field(
        None, description="tunnel the sandbox's outbound TCP through this SOCKS5 proxy (fails closed)"
    )
    https_ports: list[int] | None = Field(
        None, max_length=64, description="exposed ports the ingress reaches over TLS (not verified)"
    )


Network = Literal["none", "internet"] | NetworkBody


class NetworkCounters(BaseModel):
    bytes_out: int
    packets_out: int
    bytes_in: int
    packets_in: int
    denied_connections: int
    dns_queries: int = 0
    dns_refused: int = 0
    dns_rate_limited: int = 0


class NetworkOut(BaseModel):
    policy: dict[str, Any] = Field(..., description="the policy in force (normalised)")
    address: str | None = Field(None, description="the sandbox's IPv4 address while it runs")
    counters: NetworkCounters | None = None


class SandboxCreate(Strict):
    template: str | None = Field(None, max_length=63)
    cpu: float | None = Field(None, ge=MIN_CPU, le=MAX_CPU)
    memory_mb: int | None = Field(None, ge=MIN_MEMORY_MB, le=MAX_MEMORY_MB)
    disk_mb: int | None = Field(None, ge=MIN_DISK_MB, le=MAX_DISK_MB)
    timeout_s: float | None = Field(None, gt=0, le=MAX_TIMEOUT_S)
    name: str | None = Field(None, min_length=1, max_length=128, pattern=NAME_PATTERN)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=64)
    env: dict[str, str] = Field(default_factory=dict, max_length=256)
    idle: IdleBody | None = None
    on_timeout: Literal["kill", "hibernate"] = "kill"
    on_resume: str | None = Field(
        None, min_length=1, max_length=4096, description="shell command run after waking from stopped or hibernated"
    )
    snapshot: str | None = Field(None, max_length=64, description="id of a named snapshot to start from")
    wait_s: float | None = Field(
        None, ge=0, le=3600, description="seconds to wait for room (then 503 + Retry-After); default: the server's"
    )
    region: str | None = Field(
        None, pattern=REGION_PATTERN, description="the user's region (client-location hint): placed close to it"
    )
    regions: Regions = Field(default_factory=list, description=REGIONS_HELP)
    network: Network | None = Field(None, description='"internet", "none" or a policy; default: the server\'s')
    isolation: Isolation | None = Field(None, description="runc or gvisor (user-space kernel); default: the server's")


class Recovery(BaseModel):
    """A sandbox's last loss of its node: it resumed (or resumes on its next wake) on
    another node from its last checkpoint, losing the work done since."""

    lost_at: float = Field(description="when its node's lease expired (unix time)")
    lost_work_s: float | None = Field(description="seconds of work since its last checkpoint, lost with the node")
    checkpoint_at: float | None = Field(description="when the checkpoint it resumes from was taken (None: none was)")


class SandboxOut(BaseModel):
    id: str
    name: str | None
    state: str
    template: str
    cpu: float
    memory_mb: int
    disk_mb: int
    timeout_s: float | None
    metadata: dict[str, str]
    created_at: float
    expires_at: float | None
    last_active_at: float
    idle: IdleBody
    on_timeout: str
    on_resume: str | None
    node: str = Field(description='the node it runs on ("local" on one machine; "" while its node is lost)')
    recovery: Recovery | None = Field(None, description="its last loss of a node (cluster mode), if any")
    region: str = Field("", description='the region of its node ("" while it is on none)')
    home_region: str | None = Field(None, description="the region it was first placed in")
    regions: list[str] = Field(default_factory=list, description=REGIONS_HELP)
    isolation: str = Field("runc", description="runc, or gvisor (runsc: a user-space kernel)")
    placement: dict[str, Any] | None = Field(None, description="why the scheduler chose this node")
    network: NetworkOut | None = None


class SandboxList(BaseModel):
    items: list[SandboxOut]


class SandboxResize(Strict):
    cpu: float | None = Field(None, ge=MIN_CPU, le=MAX_CPU)
    memory_mb: int | None = Field(None, ge=MIN_MEMORY_MB, le=MAX_MEMORY_MB)
    pids: int | None = Field(None, ge=8, le=65536)
    allow_move: bool = Field(
        False, description="no room on its node: move it (hibernate, resume on a node that fits) instead of 409"
    )


class TimeoutUpdate(Strict):
    timeout_s: float | None = Field(..., gt=0, le=MAX_TIMEOUT_S)


class ExecBody(Strict):
    cmd: list[str] | str = Field(..., description="argv list, or a shell string run with /bin/sh -c")
    env: dict[str, str] = Field(default_factory=dict, max_length=256)
    cwd: str = Field("/workspace", min_length=1, max_length=4096)
    stdin: str | None = Field(None, max_length=8 << 20)
    timeout_s: float | None = Field(None, gt=0, le=DAY_S)


class ExecOut(BaseModel):
    exit_code: int
    signal: int
    stdout: str
    stderr: str
    duration_ms: float
    truncated: bool
    timed_out: bool


class EntryOut(BaseModel):
    name: str
    path: str
    type: str
    size: int
    mode: int
    mtime: float
    target: str | None = None


class DirListing(BaseModel):
    path: str
    entries: list[EntryOut]


class WriteResult(BaseModel):
    path: str
    size: int


class PathBody(Strict):
    path: str = Field(..., min_length=1, max_length=4096)


class RenameBody(Strict):
    src: str = Field(..., min_length=1, max_length=4096)
    dst: str = Field(..., min_length=1, max_length=4096)


class Skipped(BaseModel):
    name: str
    reason: str


class UploadOut(BaseModel):
    files: int
    dirs: int
    links: int
    bytes: int
    skipped: list[Skipped]


class Health(BaseModel):
    status: str


class ForkBody(Strict):
    name: str | None = Field(None, min_length=1, max_length=128, pattern=NAME_PATTERN)
    metadata: dict[str, str] | None = Field(None, max_length=64)


class SnapshotCreate(Strict):
    name: str = Field(..., min_length=1, max_length=128, pattern=NAME_PATTERN)


class SnapshotOut(BaseModel):
    id: str
    name: str
    sandbox_id: str
    template: str
    bytes: int
    created_at: float


class SnapshotList(BaseModel):
    items: list[SnapshotOut]


class SecretCreate(Strict):
    name: str = Field(..., description="letters, digits, _ . - (64 at most); used as ${secret:NAME}")
    value: SecretStr = Field(..., description="at most 8 KiB, one line; stored encrypted and never returned")
    hosts: list[str] = Field(..., description="host names or *.wildcard names the value may be sent to")


class SecretUpdate(Strict):
    value: SecretStr | None = Field(None, description="the new value (omit to keep the current one)")
    hosts: list[str] | None = Field(None, description="the new host names (omit to keep the current ones)")


class SecretOut(BaseModel):
    name: str
    hosts: list[str]
    created_at: float
    updated_at: float


class SecretList(BaseModel):
    items: list[SecretOut]


class KeyRotation(BaseModel):
    secrets: int = Field(..., description="secrets re-encrypted under the new key")
    keys: int = Field(..., description="keys in the key file now, newest first")
    dropped: int = Field(..., description="old keys removed from the key file")
