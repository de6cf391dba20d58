"""The ``cloche`` command line: run the server; drive sandboxes, their network and ports,
files, snapshots, apps, agents, state and tenants; ``cloche demo``.

Every command that talks to a server takes ``--url`` and ``--api-key``, defaulting to
the ``CLOCHE_URL`` and ``CLOCHE_API_KEY`` environment variables.  Results go to stdout
(ids, tables, JSON, file contents); progress, spinners and errors go to stderr, so the
output composes with pipes: ``ID=$(cloche sandbox create)``.
"""

from __future__ import annotations

import enum
import io
import json
import os
import select
import shlex
import shutil
import signal
import stat
import sys
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from cloche import __version__
from cloche.client import Client, ClocheError, Sandbox
from cloche.client._base import DEFAULT_URL, ENV_API_KEY, ENV_URL
from cloche.client.models import (
    AgentInfo,
    App,
    EgressProxy,
    Entry,
    ExecExit,
    ExecOutput,
    IdlePolicy,
    LogEntry,
    NetworkPolicy,
    NetworkRule,
    NetworkStatus,
    PortUrls,
    SandboxInfo,
    SecretInfo,
    SnapshotInfo,
)

if TYPE_CHECKING:
    from pydantic import BaseModel

EXIT_API_ERROR = 125
"""``sandbox exec`` exit status when the command could not be run at all (like docker)."""


def _console(stream: IO[str]) -> Console:
    # Off a terminal (pipes, tests) render tables wide enough that ids are never cut.
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(file=stream, width=200 if wide else None, soft_wrap=False)


out = _console(sys.stdout)
err = _console(sys.stderr)

app = typer.Typer(
    name="cloche",
    help="Cloche: isolated, durable, per-user sandboxes for AI agents.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)
sandbox_app = typer.Typer(help="Create, inspect, run commands in and control sandboxes.", no_args_is_help=True)
files_app = typer.Typer(help="Read, write and list files inside a sandbox.", no_args_is_help=True)
tenant_app = typer.Typer(help="Manage tenants and their API keys (admin key required).", no_args_is_help=True)
node_app = typer.Typer(help="Inspect worker nodes (admin key required); clean up after vanished ones.",
                       no_args_is_help=True)  # fmt: skip
template_app = typer.Typer(help="List, import and delete templates (importing needs the admin key).",
                           no_args_is_help=True)  # fmt: skip
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(files_app, name="files")
app.add_typer(tenant_app, name="tenant")
app.add_typer(node_app, name="node")
app.add_typer(template_app, name="template")
snapshot_app = typer.Typer(help="Named snapshots of sandboxes' files.", no_args_is_help=True)
app_app = typer.Typer(help="Deploy apps: one agent per key, created on first invocation.", no_args_is_help=True)
agent_app = typer.Typer(help="Invoke, list and remove an app's per-key agents.", no_args_is_help=True)
state_app = typer.Typer(
    help="Durable state: a versioned KV and an append-only log per namespace.", no_args_is_help=True
)
network_app = typer.Typer(
    help="Show and change a sandbox's network policy (what it may reach), address and counters.",
    no_args_is_help=True,
)
app.add_typer(network_app, name="network")
app.add_typer(snapshot_app, name="snapshot")
app.add_typer(app_app, name="app")
app.add_typer(agent_app, name="agent")
app.add_typer(state_app, name="state")
secret_app = typer.Typer(
    help="Secrets: values sandboxes send as ${secret:NAME} in network.rules headers without ever holding them.",
    no_args_is_help=True,
)
app.add_typer(secret_app, name="secret")

# --- shared options ----------------------------------------------------------------------

UrlOpt = Annotated[
    str | None,
    typer.Option("--url", envvar=ENV_URL, show_envvar=True, help=f"Server URL (default: {DEFAULT_URL})."),
]
KeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", envvar=ENV_API_KEY, show_envvar=True, help="API key (tenant or admin)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a human-readable view.")]
SandboxId = Annotated[str, typer.Argument(help="Sandbox id.", show_default=False)]


def _client(url: str | None, api_key: str | None) -> Client:
    return Client(url=url, api_key=api_key)


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    """Parse repeated ``K=V`` options into a dict."""
    result: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=what)
        result[key] = value
    return result


def _print_json(value: BaseModel | list[Any] | dict[str, Any]) -> None:
    def dump(v: Any) -> Any:
        return v.model_dump(mode="json") if hasattr(v, "model_dump") else v

    data = [dump(v) for v in value] if isinstance(value, list) else dump(value)
    out.print_json(json.dumps(data), highlight=False)


def _when(dt: datetime | None) -> str:
    """A short relative time: ``12s ago`` or ``in 4m``."""
    if dt is None:
        return "-"
    delta = (dt - datetime.now(UTC)).total_seconds()
    n = abs(delta)
    text = (
        f"{n:.0f}s"
        if n < 60
        else f"{n / 60:.0f}m"
        if n < 3600
        else f"{n / 3600:.0f}h"
        if n < 86400
        else f"{n / 86400:.0f}d"
    )
    return f"in {text}" if delta > 0 else f"{text} ago"


def _size(n: float) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def _state_style(state: str) -> str:
    styles = {"running": "green", "paused": "yellow", "hibernated": "blue", "creating": "cyan", "stopped": "dim"}
    return styles.get(state, "")


@contextmanager
def _transfer(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr; yields an ``advance(nbytes)`` callback. Once every
    byte of a known total is sent, the line says the server is still working on them."""
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    with progress:
        task = progress.add_task(description, total=total)
        sent = 0

        def advance(n: int) -> None:
            nonlocal sent
            sent += n
            progress.advance(task, n)
            if total and sent >= total:
                progress.update(task, description=f"{description}: sent, the server is working on it")

        yield advance


@contextmanager
def _spinner(message: str) -> Iterator[None]:
    """A spinner with the elapsed time on stderr while a long call runs (a terminal only:
    piped output stays free of control codes)."""
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                        transient=True, disable=not err.is_terminal)  # fmt: skip
    with progress:
        progress.add_task(message, total=None)
        yield


# --- server ------------------------------------------------------------------------------


@app.command()
def up(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", envvar="CLOCHE_DATA_DIR", help="Where sandboxes, the database and keys live.")
    ] = Path(".cloche"),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8787,
    pool_size: Annotated[int, typer.Option("--pool-size", help="Warm sandboxes kept ready for fast creates.")] = 2,
) -> None:
    """Run the API server with an embedded node on this host (needs root and runc).

    On first start an admin key is written to DATA_DIR/admin-key.
    """
    from cloche.server.runner import serve

    serve(data_dir, host, port, pool_size)


@app.command()
def health(url: UrlOpt = None) -> None:
    """Check that the server is up."""
    with _client(url, None) as client:
        status = client.health().status
    out.print(status)
    if status != "ok":
        raise typer.Exit(1)


@app.command()
def mcp(url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Serve MCP (Model Context Protocol) on stdin/stdout, for MCP clients that launch it.

    Tools: create_sandbox, exec, read_file, write_file, list_files, run_code,
    expose_port, hibernate, kill, get_state, put_state; each acts with this API key.
    `cloche up` also serves MCP over streamable HTTP at /mcp (Authorization: Bearer KEY).
    """
    import asyncio

    from cloche.mcp.stdio import serve

    asyncio.run(serve(url, api_key))


def _version(value: bool) -> None:
    if value:
        out.print(f"cloche {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Cloche: isolated, durable, per-user sandboxes for AI agents.

    Point the CLI at a server with CLOCHE_URL and CLOCHE_API_KEY (or --url/--api-key).
    """


# --- sandboxes ---------------------------------------------------------------------------


def _handle(client: Client, sandbox_id: str) -> Sandbox:
    """A handle without a round trip (state unknown); the first real call reports a bad id."""
    return Sandbox(client, SandboxInfo(id=sandbox_id, state="unknown"))


def _sandbox_table(infos: list[SandboxInfo]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("ID", "NAME", "STATE", "TEMPLATE", "CPU", "MEMORY", "DISK", "CREATED", "EXPIRES"):
        table.add_column(col, no_wrap=True)
    for s in infos:
        table.add_row(
            s.id,
            s.name or "-",
            f"[{_state_style(s.state)}]{s.state}[/]" if _state_style(s.state) else s.state,
            s.template or "-",
            f"{s.cpu:g}" if s.cpu is not None else "-",
            f"{s.memory_mb} MiB" if s.memory_mb is not None else "-",
            f"{s.disk_mb} MiB" if s.disk_mb is not None else "-",
            _when(s.created_at),
            _when(s.expires_at),
        )
    return table


def _sandbox_detail(s: SandboxInfo) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(no_wrap=True)
    rows: list[tuple[str, str]] = [
        ("id", s.id),
        ("name", s.name or "-"),
        ("state", s.state),
        ("template", s.template or "-"),
        ("cpu", f"{s.cpu:g}" if s.cpu is not None else "-"),
        ("memory", f"{s.memory_mb} MiB" if s.memory_mb is not None else "-"),
        ("disk", f"{s.disk_mb} MiB" if s.disk_mb is not None else "-"),
        ("timeout", f"{s.timeout_s:g}s" if s.timeout_s is not None else "none"),
        ("created", f"{s.created_at:%Y-%m-%d %H:%M:%S} UTC ({_when(s.created_at)})" if s.created_at else "-"),
        ("expires", f"{s.expires_at:%Y-%m-%d %H:%M:%S} UTC ({_when(s.expires_at)})" if s.expires_at else "never"),
        ("last active", _when(s.last_active_at)),
        ("idle", _idle_text(s.idle)),
        ("on timeout", s.on_timeout or "-"),
        ("on resume", s.on_resume or "-"),
        ("node", s.node or "-"),
    ]
    if s.network is not None:
        rows += [("network", _policy_summary(s.network.policy)), ("address", s.network.address or "-")]
    rows += [(f"metadata.{k}", v) for k, v in sorted(s.metadata.items())]
    for key, value in rows:
        table.add_row(key, value)
    return table


# --- network policies --------------------------------------------------------------------

RULE_HELP = (
    "HOST, *.DOMAIN, IP or CIDR, optionally with :PORT or :LOW-HIGH and /tcp or /udp "
    "(e.g. api.example.com:443, 198.51.100.0/24, 10.0.0.1:53/udp), or a JSON rule object (repeatable)."
)
AllowOutOpt = Annotated[
    list[str] | None,
    typer.Option("--allow-out", metavar="RULE", help=f"Always allow this destination: {RULE_HELP}"),
]
DenyOutOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--deny-out", metavar="RULE", help=f"Deny this destination unless an allow rule names it: {RULE_HELP}"
    ),
]
PublicOpt = Annotated[bool, typer.Option("--public", help="Exposed ports are reachable without the traffic token.")]


def _parse_network(value: str | None, param: str) -> str | dict[str, Any] | None:
    """``none``, ``internet``, ``@file.json`` (``@-``: stdin) or inline JSON -> a network value."""
    if value is None:
        return None
    text = value.strip()
    if text in ("none", "internet"):
        return text
    if text.startswith("@"):
        source = text[1:]
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text()
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {source}: {exc.strerror or exc}", param_hint=param) from None
    elif not text.startswith(("{", '"')):
        raise typer.BadParameter(
            f"expected none, internet, @policy.json or a JSON policy, got {value!r}", param_hint=param
        )
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint=param) from None
    if not isinstance(parsed, str | dict):
        raise typer.BadParameter('a policy is "none", "internet" or a JSON object', param_hint=param)
    return parsed


def _cli_rule(text: str, param: str) -> str | dict[str, Any]:
    """A rule from the command line: the API's string form, ``...:PORTS/udp``, or JSON."""
    text = text.strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise typer.BadParameter(f"not a valid JSON rule: {exc}", param_hint=param) from None
        if not isinstance(obj, dict):
            raise typer.BadParameter("a JSON rule is an object", param_hint=param)
        return obj
    for protocol in ("tcp", "udp"):
        if text.endswith(f"/{protocol}"):
            target, _, ports = text.removesuffix(f"/{protocol}").partition(":")
            rule: dict[str, Any] = {"to": target, "protocol": protocol}
            if ports:
                rule["ports"] = ports
            return rule
    return text


def _network_spec(
    base: str | dict[str, Any] | None,
    allow_out: list[str] | None,
    deny_out: list[str] | None,
    public: bool,
    param: str,
) -> str | dict[str, Any] | None:
    """``base`` with the --allow-out/--deny-out/--public flags added (over the internet)."""
    if not (allow_out or deny_out or public):
        return base
    if base == "none" or (isinstance(base, dict) and base.get("egress") is False):
        raise typer.BadParameter("--allow-out, --deny-out and --public need egress, not none", param_hint=param)
    policy: dict[str, Any] = dict(base) if isinstance(base, dict) else {}
    for key, rules, flag in (("allow_out", allow_out, "--allow-out"), ("deny_out", deny_out, "--deny-out")):
        if rules:
            previous = policy.get(key) or []
            if not isinstance(previous, list):
                raise typer.BadParameter(f"{key} in the policy must be a list", param_hint=param)
            policy[key] = [*previous, *(_cli_rule(rule, flag) for rule in rules)]
    if public:
        policy["public"] = True
    return policy


def _rule_text(rule: str | NetworkRule) -> str:
    if isinstance(rule, str):
        return rule
    text = rule.to if rule.ports is None else f"{rule.to}:{rule.ports}"
    return f"{text}/{rule.protocol}" if rule.protocol else text


def _rules_text(rules: list[str | NetworkRule] | None) -> str:
    return ", ".join(_rule_text(r) for r in rules) if rules else "-"


def _policy_summary(policy: NetworkPolicy) -> str:
    """One line: ``none``, ``internet``, ``allow list (3 rules)``, ..."""
    if not policy.egress:
        return "none (loopback only)"
    if policy.allow_out is not None and not policy.deny_out:
        kind = f"allow list ({len(policy.allow_out)} rules)"
    elif policy.allow_out or policy.deny_out:
        kind = f"internet with {len(policy.allow_out or [])} allow, {len(policy.deny_out)} deny rules"
    else:
        kind = "internet"
    return f"{kind}, public" if policy.public else kind


def _mbps(value: float | None) -> str:
    return f"{value:g} Mbit/s" if value is not None else "unlimited"


def _proxy_text(proxy: EgressProxy | None) -> str:
    if proxy is None:
        return "- (direct)"
    user = f"{proxy.username}@" if proxy.username else ""
    return f"socks5{'+tls' if proxy.tls else ''}://{user}{proxy.address}"


def _network_detail(status: NetworkStatus) -> Table:
    policy, counters = status.policy, status.counters
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    rows: list[tuple[str, str]] = [
        ("policy", _policy_summary(policy)),
        ("egress", "yes" if policy.egress else "no"),
        ("allow out", _rules_text(policy.allow_out) if policy.allow_out is not None else "- (not given)"),
        ("deny out", _rules_text(policy.deny_out)),
        ("dns servers", ", ".join(policy.dns_servers) or "node default"),
        ("max connections", str(policy.max_connections) if policy.max_connections is not None else "server default"),
        ("egress limit", _mbps(policy.egress_mbps)),
        ("ingress limit", _mbps(policy.ingress_mbps)),
        ("public ports", "yes (no token needed)" if policy.public else "no (traffic token needed)"),
        ("request host", policy.mask_request_host or "-"),
        ("https ports", ", ".join(map(str, policy.https_ports)) or "-"),
        ("request rules", "; ".join(f"{host}: set {', '.join(h for r in rules for h in r.headers)}"
                                    for host, rules in policy.rules.items()) or "-"),
        ("egress proxy", _proxy_text(policy.egress_proxy)),
        ("address", status.address or "- (not running)"),
    ]
    if counters is None:
        rows.append(("counters", "- (not running)"))
    else:
        rows += [
            ("sent", f"{_size(counters.bytes_out)} in {counters.packets_out} packets"),
            ("received", f"{_size(counters.bytes_in)} in {counters.packets_in} packets"),
            ("denied connections", str(counters.denied_connections)),
            ("dns queries", f"{counters.dns_queries} ({counters.dns_refused} refused, "
                            f"{counters.dns_rate_limited} rate limited)"),
        ]  # fmt: skip
    for key, value in rows:
        table.add_row(key, value)
    return table


class OnTimeout(enum.StrEnum):
    kill = "kill"
    hibernate = "hibernate"


@sandbox_app.command("create")
def sandbox_create(
    template: Annotated[str | None, typer.Option(help="Root file-system template (default: server's).")] = None,
    cpu: Annotated[float | None, typer.Option(help="CPU cores (fractions allowed).")] = None,
    memory_mb: Annotated[int | None, typer.Option("--memory-mb", help="Memory limit in MiB.")] = None,
    disk_mb: Annotated[int | None, typer.Option("--disk-mb", help="Disk quota in MiB.")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds until the sandbox expires.")] = None,
    name: Annotated[
        str | None, typer.Option(help="Unique name; if one with this name exists, it is returned instead.")
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE environment variable (repeatable).")
    ] = None,
    metadata: Annotated[
        list[str] | None, typer.Option("--metadata", "-m", help="KEY=VALUE label (repeatable).")
    ] = None,
    snapshot: Annotated[str | None, typer.Option("--snapshot", help="Start from this named snapshot (id).")] = None,
    idle_pause: Annotated[
        float | None, typer.Option("--idle-pause", help="Pause after this many idle seconds.")
    ] = None,
    idle_hibernate: Annotated[
        float | None, typer.Option("--idle-hibernate", help="Hibernate after this many idle seconds.")
    ] = None,
    on_timeout: Annotated[
        OnTimeout | None, typer.Option("--on-timeout", help="What happens at --timeout (default: kill).")
    ] = None,
    on_resume: Annotated[
        str | None, typer.Option("--on-resume", help="Shell command run after each wake from hibernation.")
    ] = None,
    wait: Annotated[
        float | None,
        typer.Option("--wait", help="Seconds to wait for room when the node is full (default: the server's)."),
    ] = None,
    region: Annotated[
        str | None, typer.Option("--region", help="Your region: the sandbox is placed close to it.")
    ] = None,
    network: Annotated[
        str | None,
        typer.Option(
            "--network",
            help="Network policy: none (loopback only), internet, @policy.json or an inline JSON policy "
            "(default: the server's).",
        ),
    ] = None,
    allow_out: AllowOutOpt = None,
    deny_out: DenyOutOpt = None,
    public: PublicOpt = False,
    isolation: Annotated[
        str | None,
        typer.Option("--isolation", help="runc, or gvisor (a user-space kernel; default: the server's)."),
    ] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Create a sandbox and print its id.

    --allow-out, --deny-out and --public build a policy over the open internet, or add
    to the one --network gives.
    """
    env_vars, labels = _pairs(env, "--env"), _pairs(metadata, "--metadata")
    network_spec = _network_spec(_parse_network(network, "--network"), allow_out, deny_out, public, "--network")
    with _client(url, api_key) as client, _spinner("Creating sandbox…"):
        sbx = client.sandboxes.create(
            template=template,
            cpu=cpu,
            memory_mb=memory_mb,
            disk_mb=disk_mb,
            timeout_s=timeout,
            name=name,
            metadata=labels or None,
            env=env_vars or None,
            idle=_idle(idle_pause, idle_hibernate),
            on_timeout=on_timeout.value if on_timeout else None,
            on_resume=on_resume,
            snapshot=snapshot,
            wait_s=wait,
            region=region,
            network=network_spec,
            isolation=isolation,
        )
    if as_json:
        _print_json(sbx.info)
    else:
        out.print(sbx.id, highlight=False)


@sandbox_app.command("ls")
def sandbox_ls(
    state: Annotated[
        str | None, typer.Option(help="Only sandboxes in this state (creating, running, paused, stopped).")
    ] = None,
    metadata: Annotated[
        list[str] | None, typer.Option("--metadata", "-m", help="Only sandboxes with this KEY=VALUE label.")
    ] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """List your sandboxes."""
    with _client(url, api_key) as client:
        sandboxes = client.sandboxes.list(state=state, metadata=_pairs(metadata, "--metadata") or None)
    infos = [s.info for s in sandboxes]
    if as_json:
        _print_json(infos)
    elif not infos:
        err.print("no sandboxes")
    else:
        out.print(_sandbox_table(infos))


@sandbox_app.command("get")
def sandbox_get(sandbox_id: SandboxId, as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Show one sandbox."""
    with _client(url, api_key) as client:
        info = client.sandboxes.get(sandbox_id).info
    if as_json:
        _print_json(info)
    else:
        out.print(_sandbox_detail(info))


@sandbox_app.command("exec", epilog="Example: cloche sandbox exec ID -- python3 -c 'print(6*7)'")
def sandbox_exec(
    sandbox_id: SandboxId,
    cmd: Annotated[
        list[str],
        typer.Argument(
            help="Command and arguments (put them after --). A single argument containing "
            "spaces is run as a shell command line (sh -c).",
            show_default=False,
        ),
    ],
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE (repeatable).")] = None,
    cwd: Annotated[str | None, typer.Option(help="Working directory (default: /workspace).")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Kill the command after N seconds.")] = None,
    interactive: Annotated[
        bool, typer.Option("--stdin", "-i", help="Send this process's stdin to the command.")
    ] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Run a command in a sandbox, streaming its output; exit with its exit code.

    Exits 125 if the command could not be run (unknown sandbox, bad key, ...).
    """
    command: str | list[str] = cmd[0] if len(cmd) == 1 and any(c.isspace() for c in cmd[0]) else cmd
    stdin = sys.stdin.read() if interactive else None
    env_vars = _pairs(env, "--env")
    code: int | None = None
    try:
        with _client(url, api_key) as client:
            sbx = _handle(client, sandbox_id)
            events = sbx.exec_stream(command, env=env_vars or None, cwd=cwd, stdin=stdin, timeout_s=timeout)
            for event in events:
                if isinstance(event, ExecOutput):
                    stream = sys.stdout if event.type == "stdout" else sys.stderr
                    stream.write(event.data)
                    stream.flush()
                elif isinstance(event, ExecExit):
                    code = _exit_status(event)
    except ClocheError as exc:
        _print_error(exc)
        raise typer.Exit(EXIT_API_ERROR) from None
    if code is None:
        err.print("[red]error:[/] the output stream ended before the command exited")
        raise typer.Exit(EXIT_API_ERROR)
    raise typer.Exit(code)


def _exit_status(event: ExecExit) -> int:
    if event.timed_out:
        err.print(f"[yellow]command timed out[/] (exit {event.exit_code})")
    if event.truncated:
        err.print("[yellow]output was truncated[/]")
    if event.exit_code is not None:
        return event.exit_code
    return 128 + event.signal if isinstance(event.signal, int) else 1


@sandbox_app.command("kill")
def sandbox_kill(
    sandbox_ids: Annotated[list[str], typer.Argument(help="Sandbox id(s).", show_default=False)],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Destroy sandboxes and their files."""
    with _client(url, api_key) as client:
        for sandbox_id in sandbox_ids:
            _handle(client, sandbox_id).kill()
            err.print(f"killed {sandbox_id}", highlight=False)


@sandbox_app.command("pause")
def sandbox_pause(sandbox_id: SandboxId, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Freeze a sandbox's processes (memory and files are kept)."""
    with _client(url, api_key) as client, _spinner("Pausing…"):
        sbx = _handle(client, sandbox_id).pause()
    out.print(f"{sbx.id} {sbx.state}", highlight=False)


@sandbox_app.command("resume")
def sandbox_resume(sandbox_id: SandboxId, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Thaw a paused sandbox (or start a stopped one)."""
    with _client(url, api_key) as client, _spinner("Resuming…"):
        sbx = _handle(client, sandbox_id).resume()
    out.print(f"{sbx.id} {sbx.state}", highlight=False)


@sandbox_app.command("hibernate")
def sandbox_hibernate(
    sandbox_id: SandboxId,
    drop_local: Annotated[
        bool, typer.Option("--drop-local", help="Drop the node's copy too: the next wake restores from snapshots.")
    ] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Snapshot a sandbox's files and release its CPU, memory and processes.

    Any later exec, file access or resume wakes it with every file intact.
    """
    with _client(url, api_key) as client, _spinner("Hibernating…"):
        sbx = _handle(client, sandbox_id).hibernate(keep_local=not drop_local)
    out.print(f"{sbx.id} {sbx.state}", highlight=False)


@sandbox_app.command("fork")
def sandbox_fork(
    sandbox_id: SandboxId,
    name: Annotated[str | None, typer.Option(help="Name of the new sandbox.")] = None,
    metadata: Annotated[
        list[str] | None, typer.Option("--metadata", "-m", help="KEY=VALUE label (default: the source's).")
    ] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Start a new sandbox with the current files of this one; print its id."""
    labels = _pairs(metadata, "--metadata")
    with _client(url, api_key) as client, _spinner("Forking…"):
        forked = _handle(client, sandbox_id).fork(name=name, metadata=labels or None)
    if as_json:
        _print_json(forked.info)
    else:
        out.print(forked.id, highlight=False)


@sandbox_app.command("resize", epilog="Example: cloche sandbox resize ID --memory-mb 2048 --cpu 2")
def sandbox_resize(
    sandbox_id: SandboxId,
    cpu: Annotated[float | None, typer.Option(help="CPU cores (fractions allowed).")] = None,
    memory_mb: Annotated[int | None, typer.Option("--memory-mb", help="Memory limit in MiB.")] = None,
    pids: Annotated[int | None, typer.Option(help="Maximum number of processes and threads.")] = None,
    allow_move: Annotated[
        bool, typer.Option("--allow-move", help="No room on its node: move it to one that fits instead of failing.")
    ] = False,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Change a sandbox's cpu, memory and pids limits in place, without a restart.

    Fails (409) when its node has no room, or when it uses more memory than the new limit.
    """
    if cpu is None and memory_mb is None and pids is None:
        raise typer.BadParameter("give at least one of --cpu, --memory-mb, --pids")
    with _client(url, api_key) as client, _spinner("Resizing…"):
        info = _handle(client, sandbox_id).resize(cpu=cpu, memory_mb=memory_mb, pids=pids, allow_move=allow_move).info
    if as_json:
        _print_json(info)
    else:
        cpu_text = f"{info.cpu:g}" if info.cpu is not None else "-"
        mem_text = f"{info.memory_mb} MiB" if info.memory_mb is not None else "-"
        out.print(f"{info.id} {info.state} cpu={cpu_text} memory={mem_text}", highlight=False)


@sandbox_app.command("timeout")
def sandbox_timeout(
    sandbox_id: SandboxId,
    seconds: Annotated[float, typer.Argument(help="New timeout, counted from now.", show_default=False)],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Change when a sandbox expires."""
    with _client(url, api_key) as client:
        info = _handle(client, sandbox_id).set_timeout(seconds).info
    out.print(f"{info.id} expires {_when(info.expires_at)}", highlight=False)


@network_app.command("show")
def network_show(sandbox_id: SandboxId, as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Show a sandbox's network policy, address and traffic and DNS counters."""
    with _client(url, api_key) as client:
        status = _handle(client, sandbox_id).network()
    if as_json:
        _print_json(status)
    else:
        out.print(_network_detail(status))


@network_app.command(
    "set",
    epilog="Examples: cloche network set ID --none; cloche network set ID --allow-out pypi.org "
    "--allow-out '*.pythonhosted.org'; cloche network set ID --policy @policy.json",
)
def network_set(
    sandbox_id: SandboxId,
    none: Annotated[bool, typer.Option("--none", help="No network at all (loopback only).")] = False,
    internet: Annotated[bool, typer.Option("--internet", help="The open internet (no rules).")] = False,
    policy: Annotated[
        str | None,
        typer.Option("--policy", help="The whole policy: @policy.json (@- for stdin) or inline JSON."),
    ] = None,
    allow_out: AllowOutOpt = None,
    deny_out: DenyOutOpt = None,
    public: PublicOpt = False,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Replace a sandbox's network policy; it is in force at once.

    Open connections the new policy denies are cut; nothing of the old policy is kept.
    --allow-out, --deny-out and --public build a policy over the open internet (or add
    to --policy). With --allow-out alone, only what it names is reachable.
    """
    modes = [flag for flag, given in (("--none", none), ("--internet", internet), ("--policy", policy is not None))
             if given]  # fmt: skip
    if len(modes) > 1:
        raise typer.BadParameter(f"{' and '.join(modes)} cannot be combined", param_hint=modes[0])
    if not modes and not (allow_out or deny_out or public):
        raise typer.BadParameter("give --none, --internet, --policy or rules (--allow-out, --deny-out, --public)")
    base = "none" if none else "internet" if internet else _parse_network(policy, "--policy")
    spec = _network_spec(base, allow_out, deny_out, public, modes[0] if modes else "--allow-out")
    assert spec is not None
    with _client(url, api_key) as client:
        status = _handle(client, sandbox_id).set_network(spec)
    if as_json:
        _print_json(status)
    else:
        out.print(_network_detail(status))


@app.command("port", epilog='Example: curl -H "X-Cloche-Traffic-Token: $TOKEN" $(cloche port ID 8000)')
def port_url(
    sandbox_id: SandboxId,
    port: Annotated[
        int, typer.Argument(min=1, max=65535, help="Port a server in the sandbox listens on.", show_default=False)
    ],
    signed: Annotated[
        bool, typer.Option("--signed", help="Print a signed URL that needs no token until it expires.")
    ] = False,
    expires: Annotated[int, typer.Option("--expires", min=1, help="Lifetime of the signed URL in seconds.")] = 3600,
    path_form: Annotated[
        bool,
        typer.Option("--path", help="Print the URL under the API server's path instead of the {port}-{id} host."),
    ] = False,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Print the URL where a port of a sandbox is reachable from outside.

    The URL goes to stdout; how to send the traffic token (unless the sandbox is public
    or the URL is signed) goes to stderr.
    """
    with _client(url, api_key) as client:
        urls = _handle(client, sandbox_id).port_urls(port, expires_s=expires)
    if as_json:
        _print_json(urls)
        return
    link = _port_link(urls, signed, path_form)
    out.print(link, highlight=False, markup=False, soft_wrap=True)
    if signed and urls.signed_url:
        err.print(f"signed, valid for {expires}s; no token needed", highlight=False)
    elif urls.public or not urls.token:
        err.print("public: no token needed", highlight=False)
    else:
        err.print(f"curl -H 'X-Cloche-Traffic-Token: {urls.token}' {shlex.quote(link)}",
                  highlight=False, markup=False, soft_wrap=True)  # fmt: skip


def _port_link(urls: PortUrls, signed: bool, path_form: bool) -> str:
    if signed and urls.signed_url:
        return urls.signed_url
    if path_form and urls.path_url:
        return urls.path_url
    return urls.url


# --- files -------------------------------------------------------------------------------


def _mode_string(entry: Entry) -> str:
    kind = {"dir": "d", "symlink": "l", "file": "-"}.get(entry.type, "?")
    bits = "".join(ch if entry.mode & (1 << (8 - i)) else "-" for i, ch in enumerate("rwxrwxrwx"))
    return kind + bits


def _entry_table(entries: list[Entry]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("MODE", no_wrap=True)
    table.add_column("SIZE", justify="right", no_wrap=True)
    table.add_column("MODIFIED", no_wrap=True)
    table.add_column("NAME", no_wrap=True)
    for e in sorted(entries, key=lambda e: (not e.is_dir, e.name)):
        name = f"[bold blue]{e.name}/[/]" if e.is_dir else e.name
        if e.type == "symlink":
            name = f"[cyan]{e.name}[/] -> {e.target}"
        modified = datetime.fromtimestamp(e.mtime).strftime("%Y-%m-%d %H:%M")
        table.add_row(_mode_string(e), _size(e.size), modified, name)
    return table


@files_app.command("get")
def files_get(
    sandbox_id: SandboxId,
    path: Annotated[str, typer.Argument(help="File in the sandbox.", show_default=False)],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this local file (or into this directory) instead of stdout."),
    ] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Download a file (to stdout, or to a local file with -o)."""
    if output is not None and output.is_dir():
        output = output / PurePosixPath(path).name
    with _client(url, api_key) as client:
        files = _handle(client, sandbox_id).files
        if output is None:
            sys.stdout.flush()
            files.download(path, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            return
        total = files.stat(path).size
        partial = output.with_name(f".{output.name}.part")
        try:
            with partial.open("wb") as f, _transfer(f"get {path}", total) as advance:
                n = files.download(path, f, on_progress=advance)
            partial.replace(output)
        finally:
            partial.unlink(missing_ok=True)
    err.print(f"wrote {_size(n)} to {output}", highlight=False)


@files_app.command("put")
def files_put(
    sandbox_id: SandboxId,
    local: Annotated[str, typer.Argument(help="Local file, or - for stdin.", show_default=False)],
    path: Annotated[str, typer.Argument(help="Destination path in the sandbox.", show_default=False)],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Upload a local file (or stdin) to a path in the sandbox.

    A PATH ending in / is a directory: the file keeps its local name there.
    """
    if path.endswith("/") and local != "-":
        path += Path(local).name
    with _client(url, api_key) as client:
        files = _handle(client, sandbox_id).files
        if local == "-":
            result = files.write(path, sys.stdin.buffer.read())
        else:
            src = Path(local)
            if src.is_dir():
                raise typer.BadParameter(f"{local} is a directory; use `cloche files upload`", param_hint="LOCAL")
            with src.open("rb") as f, _transfer(f"put {src.name}", src.stat().st_size) as advance:
                result = files.write(path, f, on_progress=advance)
    err.print(f"wrote {_size(result.size)} to {result.path}", highlight=False)


@files_app.command("ls")
def files_ls(
    sandbox_id: SandboxId,
    path: Annotated[str, typer.Argument(help="Directory in the sandbox.")] = "/workspace",
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """List a directory."""
    with _client(url, api_key) as client:
        entries = _handle(client, sandbox_id).files.list(path)
    if as_json:
        _print_json(entries)
    else:
        out.print(_entry_table(entries))


@files_app.command("rm")
def files_rm(
    sandbox_id: SandboxId,
    path: Annotated[str, typer.Argument(help="File or directory in the sandbox.", show_default=False)],
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Remove directories and their contents.")
    ] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Delete a file (or, with -r, a directory tree)."""
    with _client(url, api_key) as client:
        _handle(client, sandbox_id).files.remove(path, recursive=recursive)


@files_app.command("mkdir")
def files_mkdir(
    sandbox_id: SandboxId,
    path: Annotated[str, typer.Argument(help="Directory to create.", show_default=False)],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Create a directory."""
    with _client(url, api_key) as client:
        _handle(client, sandbox_id).files.mkdir(path)


@files_app.command("mv")
def files_mv(
    sandbox_id: SandboxId,
    src: Annotated[str, typer.Argument(help="Existing path.", show_default=False)],
    dst: Annotated[str, typer.Argument(help="New path.", show_default=False)],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Rename or move a file or directory."""
    with _client(url, api_key) as client:
        _handle(client, sandbox_id).files.rename(src, dst)


@files_app.command("upload")
def files_upload(
    sandbox_id: SandboxId,
    local: Annotated[
        Path, typer.Argument(help="Local directory, or a .tar/.tar.gz archive.", exists=True, show_default=False)
    ],
    path: Annotated[str, typer.Argument(help="Directory in the sandbox to extract into.")] = "/workspace",
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Upload a directory tree (or a tar archive) and extract it in the sandbox."""
    with tempfile.TemporaryFile() if local.is_dir() else local.open("rb") as body:
        if local.is_dir():
            with _spinner(f"Packing {local}…"), tarfile.open(fileobj=body, mode="w:gz") as tar:
                for child in sorted(local.iterdir()):
                    tar.add(child, arcname=child.name)
            body.seek(0)
        size = body.seek(0, io.SEEK_END)
        body.seek(0)
        with _client(url, api_key) as client, _transfer(f"upload {local.name}", size) as advance:
            report = _handle(client, sandbox_id).upload_tar(path, body, on_progress=advance)
    err.print(
        f"extracted {report.files} files, {report.dirs} dirs, {report.links} links ({_size(report.bytes)}) into {path}",
        highlight=False,
    )
    for skipped in report.skipped:
        err.print(f"[yellow]skipped[/] {skipped.name}: {skipped.reason}", highlight=False)


@files_app.command("download")
def files_download(
    sandbox_id: SandboxId,
    path: Annotated[str, typer.Argument(help="Directory (or file) in the sandbox.")] = "/workspace",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the tar here ('-' for stdout).")] = None,
    extract: Annotated[
        Path | None, typer.Option("--extract", "-x", help="Extract into this local directory instead.")
    ] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Download a directory tree as a tar archive (or extract it locally with -x)."""
    if output is not None and extract is not None:
        raise typer.BadParameter("use either --output or --extract", param_hint="--output")
    with _client(url, api_key) as client:
        sbx = _handle(client, sandbox_id)
        if extract is not None:
            with tempfile.TemporaryFile() as spool:
                with _transfer(f"download {path}", None) as advance:
                    n = sbx.download_tar_to(path, spool, on_progress=advance)
                spool.seek(0)
                extract.mkdir(parents=True, exist_ok=True)
                with tarfile.open(fileobj=spool, mode="r:*") as tar:
                    tar.extractall(extract, filter="data")
            err.print(f"extracted {_size(n)} into {extract}", highlight=False)
            return
        if output is None or str(output) == "-":
            if sys.stdout.isatty():
                raise typer.BadParameter("refusing to write a tar to a terminal; use -o FILE or -x DIR")
            n = sbx.download_tar_to(path, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            return
        with output.open("wb") as f, _transfer(f"download {path}", None) as advance:
            n = sbx.download_tar_to(path, f, on_progress=advance)
    err.print(f"wrote {_size(n)} to {output}", highlight=False)


# --- snapshots ---------------------------------------------------------------------------


def _snapshot_table(snapshots: list[SnapshotInfo]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("ID", "NAME", "SANDBOX", "TEMPLATE", "SIZE", "CREATED"):
        table.add_column(col, no_wrap=True)
    for s in snapshots:
        table.add_row(s.id, s.name, s.sandbox_id, s.template or "-", _size(s.bytes), _when(s.created_at))
    return table


@snapshot_app.command("create")
def snapshot_create(
    sandbox_id: SandboxId,
    name: Annotated[str, typer.Argument(help="Snapshot name (unique per tenant).", show_default=False)],
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Save a sandbox's current files as a named snapshot; print its id.

    Start sandboxes from it with `cloche sandbox create --snapshot ID`.
    """
    with _client(url, api_key) as client, _spinner("Snapshotting…"):
        snap = client.snapshots.create(sandbox_id, name)
    if as_json:
        _print_json(snap)
    else:
        out.print(snap.id, highlight=False)


@snapshot_app.command("ls")
def snapshot_ls(as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """List your snapshots."""
    with _client(url, api_key) as client:
        snapshots = client.snapshots.list()
    if as_json:
        _print_json(snapshots)
    elif not snapshots:
        err.print("no snapshots")
    else:
        out.print(_snapshot_table(snapshots))


@snapshot_app.command("get")
def snapshot_get(
    snapshot_id: Annotated[str, typer.Argument(help="Snapshot id.", show_default=False)],
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Show one snapshot."""
    with _client(url, api_key) as client:
        snap = client.snapshots.get(snapshot_id)
    if as_json:
        _print_json(snap)
    else:
        out.print(_snapshot_table([snap]))


@snapshot_app.command("rm")
def snapshot_rm(
    snapshot_ids: Annotated[list[str], typer.Argument(help="Snapshot id(s).", show_default=False)],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Delete snapshots (sandboxes created from them keep their files)."""
    with _client(url, api_key) as client:
        for snapshot_id in snapshot_ids:
            client.snapshots.delete(snapshot_id)
            err.print(f"deleted {snapshot_id}", highlight=False)


# --- secrets -----------------------------------------------------------------------------


def _secret_table(secrets: list[SecretInfo]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("NAME", "HOSTS", "CREATED", "UPDATED"):
        table.add_column(col, no_wrap=True)
    for s in secrets:
        table.add_row(s.name, ", ".join(s.hosts), _when(s.created_at), _when(s.updated_at))
    return table


def _one_line(text: str) -> str:
    """A value read from a file or a pipe, without the newline that ends its last line."""
    return text.removesuffix("\n").removesuffix("\r")


def _secret_value(value: str | None, value_file: Path | None) -> str:
    if value is not None and value_file is not None:
        err.print("[red]error:[/] give --value or --value-file, not both")
        raise typer.Exit(2)
    if value is not None:
        err.print("[yellow]warning:[/] --value leaves the secret in your shell history and the process list; "
                  "prefer --value-file or stdin")  # fmt: skip
        return value
    if value_file is not None:
        return _one_line(sys.stdin.read() if str(value_file) == "-" else value_file.read_text())
    if not sys.stdin.isatty():
        return _one_line(sys.stdin.read())
    return typer.prompt("Value", hide_input=True, confirmation_prompt=True, err=True)


@secret_app.command("add", epilog="Example: cloche secret add gh_token --host api.github.com < token.txt")
def secret_add(
    name: Annotated[str, typer.Argument(help="Secret name, used as ${secret:NAME}.", show_default=False)],
    hosts: Annotated[list[str], typer.Option("--host", help="Host name or *.wildcard the value may be sent to "
                                             "(repeat for more).", show_default=False)],  # fmt: skip
    value_file: Annotated[Path | None, typer.Option("--value-file", help="Read the value from this file ('-': stdin).",
                                                    show_default=False)] = None,  # fmt: skip
    value: Annotated[str | None, typer.Option("--value", help="The value itself (discouraged: shell history).",
                                              show_default=False)] = None,  # fmt: skip
    replace: Annotated[bool, typer.Option("--replace", help="Replace the value and hosts if the secret exists.")]
    = False,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Store a secret, encrypted; it is never shown again.

    The value comes from --value-file, else from stdin (when not a terminal), else from a hidden prompt.
    One line, at most 8 KiB; a final newline is dropped.
    """
    secret = _secret_value(value, value_file)
    with _client(url, api_key) as client:
        info = client.secrets.update(name, secret, hosts) if replace else client.secrets.create(name, secret, hosts)
    if as_json:
        _print_json(info)
    else:
        err.print(f"stored {info.name} (sent only to {', '.join(info.hosts)})", highlight=False)


@secret_app.command("list")
def secret_list(as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """List your secrets: names and hosts (values are never returned)."""
    with _client(url, api_key) as client:
        secrets = client.secrets.list()
    if as_json:
        _print_json(secrets)
    elif not secrets:
        err.print("no secrets")
    else:
        out.print(_secret_table(secrets))


secret_app.command("ls", hidden=True)(secret_list)


@secret_app.command("rm")
def secret_rm(
    names: Annotated[list[str], typer.Argument(help="Secret name(s).", show_default=False)],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Delete secrets; sandbox requests that use them are refused from then on."""
    with _client(url, api_key) as client:
        for name in names:
            client.secrets.delete(name)
            err.print(f"deleted {name}", highlight=False)


@secret_app.command("rotate-key")
def secret_rotate_key(
    drop_old: Annotated[bool, typer.Option("--drop-old", help="Then remove the old keys from the key file "
                                           "(backups taken before need them).")] = False,  # fmt: skip
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Admin: encrypt every secret under a new key, first in the server's key file.

    Old keys stay in the file (so nothing is ever unreadable, even after a crash) unless
    --drop-old, which removes them once every secret is re-encrypted.
    """
    with _client(url, api_key) as client:
        done = client.secrets.rotate_key(drop_old)
    if as_json:
        _print_json(done)
    else:
        err.print(f"re-encrypted {done.secrets} secret(s); {done.keys} key(s) in the key file, "
                  f"{done.dropped} dropped", highlight=False)  # fmt: skip


# --- apps and agents ---------------------------------------------------------------------

EXAMPLES = ("memo",)
"""Example agents ``cloche app deploy NAME --example`` knows."""


def _idle(pause: float | None, hibernate: float | None) -> dict[str, float] | None:
    policy = {k: v for k, v in (("pause_after_s", pause), ("hibernate_after_s", hibernate)) if v is not None}
    return policy or None


def _app_table(apps: list[App]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("NAME", "VERSION", "COMMAND", "TEMPLATE", "IDLE", "UPDATED"):
        table.add_column(col, no_wrap=True)
    for a in apps:
        command = shlex.join(a.spec.command)
        table.add_row(
            a.name,
            str(a.version),
            command if len(command) <= 60 else command[:57] + "...",
            a.spec.template or "-",
            _idle_text(a.spec.idle),
            _when(a.updated_at),
        )
    return table


def _idle_text(idle: IdlePolicy | None) -> str:
    if idle is None:
        return "default"
    parts = []
    if idle.pause_after_s is not None:
        parts.append(f"pause {idle.pause_after_s:g}s")
    if idle.hibernate_after_s is not None:
        parts.append(f"hibernate {idle.hibernate_after_s:g}s")
    return ", ".join(parts) or "never"


def _app_detail(a: App) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    spec = a.spec
    setup = spec.setup if isinstance(spec.setup, str) or spec.setup is None else shlex.join(spec.setup)
    rows: list[tuple[str, str]] = [
        ("name", a.name),
        ("version", str(a.version)),
        ("command", shlex.join(spec.command)),
        ("template", spec.template or "-"),
        ("setup", "-" if setup is None else setup if len(setup) <= 100 else f"{setup[:97]}..."),
        ("idle", _idle_text(spec.idle)),
        ("max concurrency", str(spec.max_concurrency)),
        ("startup timeout", f"{spec.startup_timeout_s:g}s"),
        ("cpu", f"{spec.cpu:g}" if spec.cpu is not None else "-"),
        ("memory", f"{spec.memory_mb} MiB" if spec.memory_mb is not None else "-"),
        ("updated", _when(a.updated_at)),
    ]
    rows += [(f"env.{k}", v) for k, v in sorted(spec.env.items())]
    for key, value in rows:
        table.add_row(key, value)
    return table


@app_app.command("deploy", epilog="Example: cloche app deploy memo --example memo")
def app_deploy(
    name: Annotated[str, typer.Argument(help="App name (lowercase letters, digits, -).", show_default=False)],
    command: Annotated[
        str | None,
        typer.Option(
            "--command", "-c", help="The agent's server, a command line; it must serve HTTP on $CLOCHE_AGENT_SOCKET."
        ),
    ] = None,
    example: Annotated[
        str | None, typer.Option("--example", help=f"Deploy a bundled example agent: {', '.join(EXAMPLES)}.")
    ] = None,
    template: Annotated[str | None, typer.Option(help="Template of the agents' sandboxes.")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE for the agents (repeatable).")] = None,
    setup: Annotated[str | None, typer.Option("--setup", help="Shell command run once in each new instance.")] = None,
    idle_pause: Annotated[
        float | None, typer.Option("--idle-pause", help="Pause an agent after this many idle seconds.")
    ] = None,
    idle_hibernate: Annotated[
        float | None, typer.Option("--idle-hibernate", help="Hibernate an agent after this many idle seconds.")
    ] = None,
    max_concurrency: Annotated[
        int | None, typer.Option("--max-concurrency", help="Invocations delivered at once to one agent.")
    ] = None,
    startup_timeout: Annotated[
        float | None, typer.Option("--startup-timeout", help="Seconds to wait for the agent's socket.")
    ] = None,
    cpu: Annotated[float | None, typer.Option(help="CPU cores per agent.")] = None,
    memory_mb: Annotated[int | None, typer.Option("--memory-mb", help="Memory per agent in MiB.")] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Deploy an app (or redeploy it as a new version).

    Each key gets its own agent, a sandbox running the command, created on its first
    invocation (`cloche agent invoke APP KEY`).
    """
    if (command is None) == (example is None):
        raise typer.BadParameter("give either --command or --example", param_hint="--command")
    spec: dict[str, Any] = {}
    if example is not None:
        if example not in EXAMPLES:
            raise typer.BadParameter(f"unknown example {example!r}; known: {', '.join(EXAMPLES)}")
        from cloche.examples import memo_app

        spec = memo_app(**({"template": template} if template else {}))
    else:
        argv = shlex.split(command or "")
        if not argv:
            raise typer.BadParameter("the command is empty", param_hint="--command")
        spec = {"command": argv, "template": template}
    env_vars = _pairs(env, "--env")
    if env_vars:
        spec["env"] = {**spec.get("env", {}), **env_vars}
    if setup is not None:
        spec["setup"] = setup
    idle = _idle(idle_pause, idle_hibernate)
    if idle is not None:
        spec["idle"] = idle
    extra = {
        "max_concurrency": max_concurrency,
        "startup_timeout_s": startup_timeout,
        "cpu": cpu,
        "memory_mb": memory_mb,
    }
    spec.update({k: v for k, v in extra.items() if v is not None})
    with _client(url, api_key) as client:
        deployed = client.apps.deploy(name, **spec)
    if as_json:
        _print_json(deployed)
    else:
        out.print(f"{deployed.name} version {deployed.version}", highlight=False)
        err.print(f"[dim]try: cloche agent invoke {deployed.name} alice -m hello[/]", highlight=False)


@app_app.command("ls")
def app_ls(as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """List your apps."""
    with _client(url, api_key) as client:
        apps = client.apps.list()
    if as_json:
        _print_json(apps)
    elif not apps:
        err.print("no apps")
    else:
        out.print(_app_table(apps))


@app_app.command("get")
def app_get(
    name: Annotated[str, typer.Argument(help="App name.", show_default=False)],
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Show one app and its spec."""
    with _client(url, api_key) as client:
        deployed = client.apps.get(name)
    if as_json:
        _print_json(deployed)
    else:
        out.print(_app_detail(deployed))


@app_app.command("rm")
def app_rm(
    name: Annotated[str, typer.Argument(help="App name.", show_default=False)],
    state: Annotated[bool, typer.Option("--state", help="Also delete every agent's state.")] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Delete an app and all its agents' sandboxes."""
    with _client(url, api_key) as client, _spinner(f"Deleting {name}…"):
        client.apps.delete(name, state=state)
    err.print(f"deleted {name}", highlight=False)


AppArg = Annotated[str, typer.Argument(help="App name.", show_default=False)]
AgentKey = Annotated[str, typer.Argument(help="Agent key (one per user).", show_default=False)]


def _agent_table(agents: list[AgentInfo]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("KEY", "STATE", "SANDBOX", "VERSION", "LAST ACTIVITY", "CREATED"):
        table.add_column(col, no_wrap=True)
    for a in agents:
        style = _state_style(a.state)
        table.add_row(
            a.key,
            f"[{style}]{a.state}[/]" if style else a.state,
            a.sandbox_id,
            str(a.app_version),
            _when(a.last_active_at),
            _when(a.created_at),
        )
    return table


def _piped_stdin() -> bool:
    """Whether stdin is a pipe or a file (not a terminal, not /dev/null)."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


def _invoke_body(data: str | None, message: str | None) -> tuple[bytes | None, str | None]:
    """The request body and its content type from -d / -m / stdin (None: no body)."""
    if message is not None:
        if data is not None:
            raise typer.BadParameter("give either --data or --message", param_hint="--data")
        return json.dumps({"message": message}).encode(), "application/json"
    if data is None:
        body = sys.stdin.buffer.read() if _piped_stdin() else None
    elif data in ("-", "@-"):
        body = sys.stdin.buffer.read()
    elif data.startswith("@"):
        try:
            body = Path(data[1:]).read_bytes()
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {data[1:]}: {exc.strerror}", param_hint="--data") from None
    else:
        body = data.encode()
    if body is None:
        return None, None
    try:
        json.loads(body)
    except ValueError:
        return body, "application/octet-stream"
    return body, "application/json"


@agent_app.command(
    "invoke",
    epilog="Examples: cloche agent invoke memo alice -m 'remember I like tea'  |  "
    "cloche agent invoke memo alice -d '{\"message\": \"recall\"}'  |  echo '{...}' | cloche agent invoke memo alice",
)
def agent_invoke(
    app_name: AppArg,
    key: AgentKey,
    data: Annotated[
        str | None,
        typer.Option("--data", "-d", help="Request body: text/JSON, @FILE, or - for stdin (default: piped stdin)."),
    ] = None,
    message: Annotated[
        str | None, typer.Option("--message", "-m", help='Send {"message": TEXT} (the memo agent\'s format).')
    ] = None,
    path: Annotated[str, typer.Option("--path", help="Path below the agent's root.")] = "",
    method: Annotated[str, typer.Option("--method", "-X", help="HTTP method.")] = "POST",
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="'Name: value' header for the agent (repeatable).")
    ] = None,
    include: Annotated[
        bool, typer.Option("--include", "-i", help="Print the agent's status and headers (to stderr).")
    ] = False,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds to wait for the answer.")] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Send a request to the KEY's agent of APP (created or woken as needed) and print
    its answer as it streams.

    Exits 0 if the agent answered 2xx, 1 otherwise.
    """
    body, content_type = _invoke_body(data, message)
    headers: dict[str, str] = {}
    if content_type:
        headers["Content-Type"] = content_type
    for item in header or []:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise typer.BadParameter(f"expected 'Name: value', got {item!r}", param_hint="--header")
        headers[name.strip()] = value.strip()
    with _client(url, api_key) as client:
        agent = client.agents(app_name)[key]
        kwargs: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
        with agent.invoke_stream(body or b"", path=path, method=method, headers=headers, **kwargs) as stream:
            status = stream.status_code
            if include:
                err.print(f"HTTP {status}", highlight=False)
                for name, value in stream.headers.items():
                    err.print(f"{name}: {value}", highlight=False)
            last = b"\n"
            for chunk in stream:
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
                last = chunk or last
    if sys.stdout.isatty() and not last.endswith(b"\n"):
        sys.stdout.write("\n")
    if not 200 <= status < 300:
        err.print(f"[red]error:[/] the agent answered HTTP {status}", highlight=False)
        raise typer.Exit(1)


@agent_app.command("ls")
def agent_ls(app_name: AppArg, as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """List an app's agents: key, state, sandbox, version and last activity."""
    with _client(url, api_key) as client:
        agents = client.agents(app_name).list()
    if as_json:
        _print_json(agents)
    elif not agents:
        err.print(f"no agents yet; the first `cloche agent invoke {app_name} KEY` creates one")
    else:
        out.print(_agent_table(agents))


@agent_app.command("get")
def agent_get(
    app_name: AppArg, key: AgentKey, as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None
) -> None:
    """Show one agent."""
    with _client(url, api_key) as client:
        info = client.agents(app_name)[key].info()
    if as_json:
        _print_json(info)
    else:
        out.print(_agent_table([info]))


@agent_app.command("rm")
def agent_rm(
    app_name: AppArg,
    key: AgentKey,
    state: Annotated[bool, typer.Option("--state", help="Also delete the agent's state.")] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Remove an agent's instance (its next invocation starts afresh)."""
    with _client(url, api_key) as client:
        client.agents(app_name)[key].delete(state=state)
    err.print(f"deleted {app_name}/{key}", highlight=False)


# --- state -------------------------------------------------------------------------------

Namespace = Annotated[str, typer.Argument(help="State namespace (a sandbox id is its own).", show_default=False)]
StateKey = Annotated[str, typer.Argument(help="Key.", show_default=False)]


def _value(value: str | None, file: Path | None, what: str) -> bytes:
    """The bytes to store: the argument, --file, or stdin (for '-' or when piped)."""
    if file is not None:
        if value is not None:
            raise typer.BadParameter(f"give either {what} or --file", param_hint="--file")
        return file.read_bytes()
    if value == "-" or (value is None and _piped_stdin()):
        return sys.stdin.buffer.read()
    if value is None:
        raise typer.BadParameter(f"give {what}, --file, or pipe it on stdin", param_hint=what)
    return value.encode()


@state_app.command("get")
def state_get(
    namespace: Namespace,
    key: StateKey,
    show_version: Annotated[bool, typer.Option("--show-version", "-v", help="Print the version on stderr.")] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Print a key's value (exit 1 if it does not exist)."""
    with _client(url, api_key) as client:
        item = client.state(namespace).get(key)
    if item is None:
        err.print(f"[red]error:[/] key {key!r} not found in {namespace!r}", highlight=False)
        raise typer.Exit(1)
    sys.stdout.buffer.write(item.value)
    sys.stdout.buffer.flush()
    if show_version:
        err.print(f"version {item.version}", highlight=False)


@state_app.command("put")
def state_put(
    namespace: Namespace,
    key: StateKey,
    value: Annotated[str | None, typer.Argument(help="The value; - or none: stdin.", show_default=False)] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Read the value from this file.")] = None,
    if_match: Annotated[int | None, typer.Option("--if-match", help="Only if the key is at this version.")] = None,
    if_none_match: Annotated[bool, typer.Option("--if-none-match", help="Only if the key does not exist.")] = False,
    ttl: Annotated[float | None, typer.Option("--ttl", help="Expire the key after this many seconds.")] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Store a value and print its new version (exit 1 if a condition fails)."""
    data = _value(value, file, "VALUE")
    with _client(url, api_key) as client:
        version = client.state(namespace).put(key, data, if_match=if_match, if_none_match=if_none_match, ttl_s=ttl)
    out.print(str(version), highlight=False)


@state_app.command("rm")
def state_rm(
    namespace: Namespace,
    key: StateKey,
    if_match: Annotated[int | None, typer.Option("--if-match", help="Only if the key is at this version.")] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Delete a key (no error if it does not exist, unless --if-match is given)."""
    with _client(url, api_key) as client:
        client.state(namespace).delete(key, if_match=if_match)


state_app.command("del", hidden=True)(state_rm)


@state_app.command("ls")
def state_ls(
    namespace: Namespace,
    prefix: Annotated[str, typer.Argument(help="Only keys starting with this.")] = "",
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """List the live keys of a namespace (all pages)."""
    with _client(url, api_key) as client:
        keys = list(client.state(namespace).list(prefix, page_size=1000))
    if as_json:
        _print_json(keys)
        return
    if not keys:
        err.print("no keys")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("KEY", no_wrap=True)
    table.add_column("VERSION", justify="right", no_wrap=True)
    table.add_column("SIZE", justify="right", no_wrap=True)
    for k in keys:
        table.add_row(k.key, str(k.version), _size(k.size))
    out.print(table, highlight=False)


@state_app.command("append")
def state_append(
    namespace: Namespace,
    data: Annotated[str | None, typer.Argument(help="The entry; - or none: stdin.", show_default=False)] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Read the entry from this file.")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", "-k", help="A retry with the same key adds nothing.")
    ] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Append an entry to the namespace's log and print its sequence number."""
    entry = _value(data, file, "DATA")
    with _client(url, api_key) as client:
        seq = client.state(namespace).append(entry, idempotency_key=idempotency_key)
    out.print(str(seq), highlight=False)


@state_app.command("read")
def state_read(
    namespace: Namespace,
    after: Annotated[int, typer.Option("--after", help="Entries with a sequence number above this.")] = 0,
    limit: Annotated[int, typer.Option("--limit", help="Most entries to print (without --follow).")] = 100,
    wait: Annotated[float, typer.Option("--wait", help="Wait up to this long for a new entry.")] = 0,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new entries.")] = False,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Print log entries as SEQ<TAB>DATA lines (--json: one JSON object per line)."""

    def emit(entry: LogEntry) -> None:
        if as_json:
            text = entry.data.decode(errors="replace")
            sys.stdout.write(json.dumps({"seq": entry.seq, "data": text}) + "\n")
        else:
            sys.stdout.buffer.write(b"%d\t%s\n" % (entry.seq, entry.data))
        sys.stdout.flush()

    with _client(url, api_key) as client:
        log = client.state(namespace)
        if follow:
            try:
                for entry in log.follow(after):
                    emit(entry)
            except KeyboardInterrupt:
                raise typer.Exit(130) from None
            return
        page = log.wait(after, wait, limit) if wait > 0 else log.read(after, limit)
        for entry in page.items:
            emit(entry)


@state_app.command("trim")
def state_trim(
    namespace: Namespace,
    upto: Annotated[int, typer.Argument(help="Drop entries up to this sequence number.", show_default=False)],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Drop log entries up to UPTO and print the oldest sequence number kept."""
    with _client(url, api_key) as client:
        first = client.state(namespace).trim(upto)
    out.print(str(first), highlight=False)


@state_app.command("grant")
def state_grant(namespace: Namespace, sandbox_id: SandboxId, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Let one of your sandboxes use the namespace from inside (cloche-state -n NS)."""
    with _client(url, api_key) as client:
        client.state(namespace).grant(sandbox_id)


@state_app.command("revoke")
def state_revoke(namespace: Namespace, sandbox_id: SandboxId, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Withdraw a grant."""
    with _client(url, api_key) as client:
        client.state(namespace).revoke(sandbox_id)


@state_app.command("grants")
def state_grants(namespace: Namespace, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """List the sandboxes granted the namespace."""
    with _client(url, api_key) as client:
        for sandbox_id in client.state(namespace).grants():
            out.print(sandbox_id, highlight=False)


# --- demo --------------------------------------------------------------------------------


@app.command()
def demo(
    users: Annotated[int, typer.Option("--users", "-n", min=1, help="Simulated users, driven concurrently.")] = 20,
    rounds: Annotated[int, typer.Option("--rounds", "-r", min=0, help="Talk / sleep / wake rounds per user.")] = 3,
    idle: Annotated[
        float | None,
        typer.Option(
            "--idle",
            help="Sleep by going idle S seconds (the idle policy pauses after S/3 and "
            "hibernates after 2S/3) instead of through the API.",
        ),
    ] = None,
    app_name: Annotated[str | None, typer.Option("--app", help="App name (default: a fresh one).")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the app and its agents afterwards.")] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Deploy the memo agent and drive N users through create, talk, sleep and wake.

    Prints invoke latencies per phase and whether every user's memory survived; exits
    1 if any was lost or any user failed.
    """
    import asyncio

    from cloche.demo import report, run_demo

    def log(line: str) -> None:
        err.print(line, highlight=False)

    result = asyncio.run(
        run_demo(url, api_key, users=users, rounds=rounds, idle=idle, app=app_name, keep=keep, console=err, log=log)
    )
    report(result, out)
    if not result.ok:
        raise typer.Exit(1)


# --- tenants and nodes -------------------------------------------------------------------


@tenant_app.command("create")
def tenant_create(
    name: Annotated[str, typer.Argument(help="Tenant name (letters, digits, . _ : -).", show_default=False)],
    max_sandboxes: Annotated[int | None, typer.Option(help="Most sandboxes at once.")] = None,
    max_cpu: Annotated[float | None, typer.Option(help="Most CPU cores across sandboxes.")] = None,
    max_memory_mb: Annotated[int | None, typer.Option(help="Most memory (MiB) across sandboxes.")] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Create a tenant and print its id and first API key (shown only once)."""
    with _client(url, api_key) as client:
        tenant = client.tenants.create(name, max_sandboxes=max_sandboxes, max_cpu=max_cpu, max_memory_mb=max_memory_mb)
    if as_json:
        _print_json(tenant)
        return
    out.print(f"id:      {tenant.id}", highlight=False)
    out.print(f"api_key: {tenant.api_key}", highlight=False)
    err.print("[dim]store the key now: it cannot be shown again[/]")


@tenant_app.command("ls")
def tenant_ls(as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """List tenants and their quotas."""
    with _client(url, api_key) as client:
        tenants = client.tenants.list()
    if as_json:
        _print_json(tenants)
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("ID", "NAME", "MAX SANDBOXES", "MAX CPU", "MAX MEMORY", "CREATED"):
        table.add_column(col, no_wrap=True)
    for t in tenants:
        table.add_row(
            t.id,
            t.name,
            str(t.max_sandboxes) if t.max_sandboxes is not None else "-",
            f"{t.max_cpu:g}" if t.max_cpu is not None else "-",
            f"{t.max_memory_mb} MiB" if t.max_memory_mb is not None else "-",
            _when(t.created_at),
        )
    out.print(table)


@tenant_app.command("add-key")
def tenant_add_key(
    tenant_id: Annotated[str, typer.Argument(help="Tenant id.", show_default=False)],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Issue another API key for a tenant."""
    with _client(url, api_key) as client:
        key = client.tenants.create_key(tenant_id)
    out.print(f"key_id:  {key.id}", highlight=False)
    out.print(f"api_key: {key.api_key}", highlight=False)


@tenant_app.command("revoke-key")
def tenant_revoke_key(
    tenant_id: Annotated[str, typer.Argument(help="Tenant id.", show_default=False)],
    key_id: Annotated[str, typer.Argument(help="Key id (from add-key).", show_default=False)],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Revoke an API key; it stops working immediately."""
    with _client(url, api_key) as client:
        client.tenants.revoke_key(tenant_id, key_id)
    err.print(f"revoked {key_id}", highlight=False)


@node_app.command("ls")
def node_ls(as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """List worker nodes with capacity, allocation and warm pools."""
    with _client(url, api_key) as client:
        nodes = client.nodes.list()
    if as_json:
        _print_json(nodes)
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("ID", "STATE", "CPU", "MEMORY", "SANDBOXES", "POOLS"):
        table.add_column(col, no_wrap=True)
    for n in nodes:
        pools = ", ".join(f"{p.template} {p.ready}/{p.size}" for p in n.pools) or "-"
        table.add_row(
            n.id,
            n.state,
            f"{n.allocated.cpu:g}/{n.capacity.cpu:g}",
            f"{n.allocated.memory_mb}/{n.capacity.memory_mb} MiB",
            str(n.sandboxes),
            pools,
        )
    out.print(table)


@node_app.command("gc", epilog="Example: sudo cloche node gc --dry-run")
def node_gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be removed; change nothing.")] = False,
    force_unknown: Annotated[
        bool, typer.Option("--force-unknown", help="Also remove nodes with no owner file (whose owner is unknown).")
    ] = False,
    run_root: Annotated[Path, typer.Option("--run-root", help="Where nodes keep their runtime state.")] = Path(
        "/run/cloche"
    ),
    as_json: JsonOpt = False,
) -> None:
    """Remove the containers, mounts, cgroups, links, nft tables and claims of vanished nodes (root).

    A node is gone when its owner file names a data dir that no longer exists, or it has no runtime dir.
    """
    from cloche.node import orphans

    if os.geteuid() != 0:
        err.print("[red]error:[/] cloche node gc needs root")
        raise typer.Exit(1)
    found = orphans.find_orphans(run_root)
    done: list[tuple[orphans.Orphan, str]] = []
    if dry_run:
        done = [(o, "kept (unknown owner)" if o.unknown_owner and not force_unknown else "would remove")
                for o in found]  # fmt: skip
        failures: list[orphans.Failure] = []
    else:
        failures = orphans.remove(found, run_root=run_root, force_unknown=force_unknown,
                                  on_done=lambda o, action: done.append((o, action)))  # fmt: skip
    if as_json:
        _print_json([{**o.to_json(), "action": action} for o, action in done])
    elif done:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for col in ("KIND", "NAME", "NODE", "ACTION", "WHY"):
            table.add_column(col, no_wrap=True)
        for o, action in done:
            style = "red" if action.startswith("FAILED") else "dim" if action.startswith("kept") else ""
            table.add_row(o.kind, o.name, o.key, f"[{style}]{action}[/]" if style else action, o.reason)
        out.print(table, highlight=False)
    _gc_summary(done, failures, dry_run, force_unknown)
    if failures:
        raise typer.Exit(1)


def _gc_summary(done: list[tuple[Any, str]], failures: list[Any], dry_run: bool, force_unknown: bool) -> None:
    kept = sum(1 for _, action in done if action.startswith("kept"))
    gone = sum(1 for _, action in done if action == "already gone")
    acted = [o for o, action in done if not action.startswith(("kept", "FAILED", "already"))]
    nodes = len({o.key for o, action in done if not action.startswith("kept")})
    if not done:
        err.print("nothing to collect: no node on this host lost its data directory", highlight=False)
    elif dry_run:
        err.print(f"dry run: {len(acted)} object(s) of {nodes} node(s) would be removed", highlight=False)
    else:
        also = f"; {gone} were already gone (with their containers)" if gone else ""
        err.print(f"removed {len(acted)} object(s) of {nodes} node(s){also}", highlight=False)
    if kept and not force_unknown:
        err.print(f"kept {kept} object(s) of nodes with no owner file (--force-unknown removes them)",
                  highlight=False)  # fmt: skip
    for f in failures:
        err.print(f"[red]error:[/] could not remove {f.orphan.kind} {f.orphan.name} of node {f.orphan.key}: "
                  f"{f.error}", highlight=False)  # fmt: skip


@template_app.command("ls")
def template_ls(as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """List the templates sandboxes can be created from."""
    with _client(url, api_key) as client:
        templates = client.templates.list()
    if as_json:
        _print_json(templates)
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("NAME", no_wrap=True)
    table.add_column("ON BASE", no_wrap=True)
    for t in templates:
        table.add_row(t.name, "yes" if t.on_base else "no")
    out.print(table)


@template_app.command("import")
def template_import(
    name: Annotated[str, typer.Argument(help="Template name (lowercase letters, digits, . _ -).")],
    archive: Annotated[Path, typer.Argument(help="A rootfs tarball (.tar, .tar.gz, .tar.xz).", exists=True,
                                            dir_okay=False)],  # fmt: skip
    on_base: Annotated[bool, typer.Option("--on-base", help="Lay the files over the base template.")] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Import a rootfs tarball as a template (admin key)."""
    size = archive.stat().st_size
    with _client(url, api_key) as client, archive.open("rb") as f, _transfer(f"import {archive.name}", size) as sent:
        info = client.templates.import_tar(name, f, on_base=on_base, on_progress=sent)
    out.print(info.name, highlight=False)


@template_app.command("rm")
def template_rm(name: Annotated[str, typer.Argument(help="Template name.")], url: UrlOpt = None,
                api_key: KeyOpt = None) -> None:  # fmt: skip
    """Delete a template (refused while sandboxes use it)."""
    with _client(url, api_key) as client:
        client.templates.delete(name)
    err.print(f"deleted template {name}", highlight=False)


# --- interactive shell -------------------------------------------------------------------


@app.command()
def shell(
    sandbox_id: SandboxId,
    cmd: Annotated[str | None, typer.Option("--cmd", help="Command line to run (default: a login shell).")] = None,
    cwd: Annotated[str | None, typer.Option(help="Working directory (default: /workspace).")] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Open an interactive terminal in a sandbox (exits with the shell's exit code).

    With a terminal on stdin it runs in raw mode and follows window resizes; otherwise
    stdin is piped to the shell and the session ends at end of input.
    """
    from websockets.exceptions import InvalidHandshake

    with _client(url, api_key) as client:
        sbx = client.sandboxes.connect(sandbox_id)  # typed errors for a bad id or key
        interactive = sys.stdin.isatty() and sys.stdout.isatty()
        cols, rows = shutil.get_terminal_size() if interactive else (80, 24)
        try:
            with sbx.pty(cmd=cmd, rows=rows, cols=cols, cwd=cwd) as ws:
                code = _PtySession(ws, interactive).run()
        except (InvalidHandshake, OSError, TimeoutError) as exc:
            err.print(f"[red]error:[/] cannot open a terminal: {exc}", highlight=False)
            raise typer.Exit(1) from None
    raise typer.Exit(code)


class _PtySession:
    """Bridges the local terminal (or pipe) and a PTY WebSocket."""

    def __init__(self, ws: Any, interactive: bool) -> None:
        self.ws = ws
        self.interactive = interactive
        self.exit_code = 0
        self.done = threading.Event()

    def _pump_output(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for message in self.ws:
                if isinstance(message, bytes):
                    os.write(sys.stdout.fileno(), message)
                else:
                    control = json.loads(message)
                    if control.get("type") == "exit":
                        code = control.get("exit_code")
                        self.exit_code = code if isinstance(code, int) else 1
        except (ConnectionClosed, OSError):
            pass
        finally:
            self.done.set()

    def _send(self, data: bytes | str) -> bool:
        from websockets.exceptions import ConnectionClosed

        try:
            self.ws.send(data)
        except ConnectionClosed:
            return False
        return True

    def run(self) -> int:
        """Run until the remote side exits; return its exit code."""
        reader = threading.Thread(target=self._pump_output, daemon=True)
        reader.start()
        if self.interactive:
            self._interactive_input()
        else:
            self._piped_input()
        self.done.wait()
        reader.join(5)
        return self.exit_code

    def _piped_input(self) -> None:
        fd = sys.stdin.fileno()
        last = b"\n"
        while not self.done.is_set():
            if not select.select([fd], [], [], 0.1)[0]:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                # End of input: end the line if needed, then EOF (^D) for the shell.
                self._send((b"" if last.endswith(b"\n") else b"\n") + b"\x04")
                return
            last = chunk
            if not self._send(chunk):
                return

    def _interactive_input(self) -> None:
        import termios
        import tty

        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)

        def on_resize(signum: int, frame: Any) -> None:
            cols, rows = shutil.get_terminal_size()
            self._send(json.dumps({"type": "resize", "rows": rows, "cols": cols}))

        previous = signal.signal(signal.SIGWINCH, on_resize)
        try:
            tty.setraw(fd)
            while not self.done.is_set():
                try:
                    ready = select.select([fd], [], [], 0.1)[0]
                except InterruptedError:  # SIGWINCH
                    continue
                if ready:
                    chunk = os.read(fd, 65536)
                    if not chunk or not self._send(chunk):
                        return
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
            signal.signal(signal.SIGWINCH, previous)


# --- scheduler simulator -----------------------------------------------------------------


@app.command("sim")
def sim_command(
    nodes: Annotated[int, typer.Option(help="Simulated nodes, spread over the regions.")] = 24,
    hours: Annotated[float, typer.Option(help="Simulated hours.")] = 6.0,
    load: Annotated[float, typer.Option(help="Offered concurrency / the cluster's capacity without overcommit.")] = 3.0,
    policies: Annotated[str, typer.Option(help="Policies to compare (cloche-no-overcommit: an ablation).")] = (
        "random,first-fit,kubernetes,cloche,cloche-no-overcommit"),
    seed: Annotated[int, typer.Option(help="Workload seed.")] = 1,
    wait_s: Annotated[float, typer.Option("--wait-s", help="How long a create may queue.")] = 30.0,
    trace: Annotated[Path | None, typer.Option(help="Replay this JSON-lines trace instead.")] = None,
    save_trace: Annotated[Path | None, typer.Option("--save-trace", help="Write the workload as a trace.")] = None,
    output: Annotated[Path | None, typer.Option(
        help="Markdown file whose `cloche sim` section is written (implies --write).")] = None,
    write: Annotated[bool, typer.Option("--write/--no-write",
                                        help="Write the section into --output (default BENCHMARKS.md).")] = False,
    plot: Annotated[Path | None, typer.Option(help="Draw admission rate, queue wait and latency to this PNG.")] = None,
) -> None:  # fmt: skip
    """Simulate placement policies side by side with the real scheduler code (random,
    first-fit, Kubernetes-default-like, cloche) and print the comparison table."""
    from cloche.scheduler import sim

    cfg = sim.SimConfig(nodes=nodes, hours=hours, load=load, seed=seed, wait_s=wait_s)
    command = " ".join(["cloche", "sim", *sys.argv[2:]]) if len(sys.argv) > 1 else "cloche sim"
    target = (output or Path("BENCHMARKS.md")) if write or output else None
    with _spinner(f"simulating {hours:g} h on {nodes} nodes"):
        results, section, ok = sim.run(cfg, [p.strip() for p in policies.split(",") if p.strip()], trace,
                                       save_trace, target, command)  # fmt: skip
    out.print(section, markup=False, highlight=False, soft_wrap=True)
    if target is not None:
        err.print(f"wrote the `cloche sim` section of {target}", highlight=False)
    if plot is not None:
        from cloche.scheduler.sim.plot import PlotUnavailable, draw

        try:
            draw(results, plot, f"{hours:g} h on {nodes} nodes at load {load:g}, seed {seed}")
        except PlotUnavailable as exc:
            err.print(f"[red]error:[/] {exc}", highlight=False)
            raise typer.Exit(2) from exc
        err.print(f"drew {plot}", highlight=False)
    if not ok:
        raise typer.Exit(1)


# --- entry point -------------------------------------------------------------------------


def _print_error(exc: ClocheError) -> None:
    err.print(f"[red]error:[/] {exc.message} [dim]({exc.code})[/]", highlight=False)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after:
        err.print(f"[dim]retry after {retry_after:g}s[/]")


def main() -> None:
    """Console-script entry point: run the CLI, turning API errors into short messages."""
    try:
        app()
    except ClocheError as exc:
        _print_error(exc)
        sys.exit(1)
    except BrokenPipeError:
        # The reader went away (e.g. `cloche files get ... | head`): exit quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)


if __name__ == "__main__":
    main()
