"""``cloche sandbox``: create, list, inspect, run commands in (``exec``, from
:mod:`cloche.cli.run`) and control sandboxes: kill, pause, resume, hibernate, fork,
resize and timeout."""

from __future__ import annotations

import enum
from typing import Annotated

import typer
from rich.table import Table

from cloche.cli import netpolicy, ui
from cloche.cli.netpolicy import AllowOutOpt, DenyOutOpt, PublicOpt
from cloche.cli.options import JsonOpt, KeyOpt, SandboxId, UrlOpt, connect, handle, idle_policy, pairs
from cloche.cli.run import sandbox_exec
from cloche.client._spec import SandboxSpec
from cloche.client.models import SandboxInfo

app = typer.Typer(help="Create, inspect, run commands in and control sandboxes.", no_args_is_help=True)


def _sandbox_table(infos: list[SandboxInfo]) -> Table:
    table = ui.table("ID", "NAME", "STATE", "TEMPLATE", "CPU", "MEMORY", "DISK", "CREATED", "EXPIRES")
    for s in infos:
        table.add_row(
            s.id,
            s.name or "-",
            ui.styled_state(s.state),
            s.template or "-",
            ui.cores(s.cpu),
            ui.mib(s.memory_mb),
            ui.mib(s.disk_mb),
            ui.when(s.created_at),
            ui.when(s.expires_at),
        )
    return table


def _sandbox_detail(s: SandboxInfo) -> Table:
    rows: list[tuple[str, str]] = [
        ("id", s.id),
        ("name", s.name or "-"),
        ("state", s.state),
        ("template", s.template or "-"),
        ("cpu", ui.cores(s.cpu)),
        ("memory", ui.mib(s.memory_mb)),
        ("disk", ui.mib(s.disk_mb)),
        ("timeout", f"{s.timeout_s:g}s" if s.timeout_s is not None else "none"),
        ("created", f"{s.created_at:%Y-%m-%d %H:%M:%S} UTC ({ui.when(s.created_at)})" if s.created_at else "-"),
        ("expires", f"{s.expires_at:%Y-%m-%d %H:%M:%S} UTC ({ui.when(s.expires_at)})" if s.expires_at else "never"),
        ("last active", ui.when(s.last_active_at)),
        ("idle", ui.idle_text(s.idle)),
        ("on timeout", s.on_timeout or "-"),
        ("on resume", s.on_resume or "-"),
        ("node", s.node or "-"),
    ]
    if s.network is not None:
        rows += [("network", netpolicy.policy_summary(s.network.policy)), ("address", s.network.address or "-")]
    rows += [(f"metadata.{k}", v) for k, v in sorted(s.metadata.items())]
    return ui.details(rows, wrap=False)


class OnTimeout(enum.StrEnum):
    """What ``--on-timeout`` may ask for."""

    kill = "kill"
    hibernate = "hibernate"


@app.command("create")
def sandbox_create(
    template: Annotated[str | None, typer.Option(help="Root file-system template (default: server's).")] = None,
    cpu: Annotated[float | None, typer.Option(help="CPU cores (fractions allowed).")] = None,
    memory_mb: Annotated[int | None, typer.Option("--memory-mb", help="Memory limit in MiB.")] = None,
    disk_mb: Annotated[int | None, typer.Option("--disk-mb", help="Disk quota in MiB.")] = None,
    timeout_s: Annotated[float | None, typer.Option("--timeout", help="Seconds until the sandbox expires.")] = None,
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
    wait_s: Annotated[
        float | None,
        typer.Option("--wait", help="Seconds to wait for room when the node is full (default: the server's)."),
    ] = None,
    region: Annotated[
        str | None, typer.Option("--region", help="Your region: the sandbox is placed close to it.")
    ] = None,
    pin_region: Annotated[
        list[str] | None,
        typer.Option("--pin-region", help="Data residency: it runs only in this region (repeatable; cluster)."),
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
    spec = SandboxSpec.of(
        locals(),
        env=pairs(env, "--env") or None,
        metadata=pairs(metadata, "--metadata") or None,
        network=netpolicy.network_spec(
            netpolicy.parse_network(network, "--network"), allow_out, deny_out, public, "--network"
        ),
        idle=idle_policy(idle_pause, idle_hibernate),
        on_timeout=on_timeout.value if on_timeout else None,
        regions=pin_region or None,
    )
    with connect(url, api_key) as client, ui.spinner("Creating sandbox…"):
        sbx = client.sandboxes.create(**spec.kwargs())
    ui.created(sbx.info, sbx.id, as_json)


@app.command("ls")
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
    with connect(url, api_key) as client:
        sandboxes = client.sandboxes.list(state=state, metadata=pairs(metadata, "--metadata") or None)
    infos = [s.info for s in sandboxes]
    ui.show(infos, as_json, _sandbox_table, empty="no sandboxes")


@app.command("get")
def sandbox_get(sandbox_id: SandboxId, as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Show one sandbox."""
    with connect(url, api_key) as client:
        info = client.sandboxes.get(sandbox_id).info
    ui.show(info, as_json, _sandbox_detail)


app.command("exec", epilog="Example: cloche sandbox exec ID -- python3 -c 'print(6*7)'")(sandbox_exec)


@app.command("kill")
def sandbox_kill(
    sandbox_ids: Annotated[list[str], typer.Argument(help="Sandbox id(s).", show_default=False)],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Destroy sandboxes and their files."""
    with connect(url, api_key) as client:
        for sandbox_id in sandbox_ids:
            handle(client, sandbox_id).kill()
            ui.err.print(f"killed {sandbox_id}", highlight=False)


@app.command("pause")
def sandbox_pause(sandbox_id: SandboxId, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Freeze a sandbox's processes (memory and files are kept)."""
    with connect(url, api_key) as client, ui.spinner("Pausing…"):
        sbx = handle(client, sandbox_id).pause()
    ui.out.print(f"{sbx.id} {sbx.state}", highlight=False)


@app.command("resume")
def sandbox_resume(sandbox_id: SandboxId, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Thaw a paused sandbox (or start a stopped one)."""
    with connect(url, api_key) as client, ui.spinner("Resuming…"):
        sbx = handle(client, sandbox_id).resume()
    ui.out.print(f"{sbx.id} {sbx.state}", highlight=False)


@app.command("hibernate")
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
    with connect(url, api_key) as client, ui.spinner("Hibernating…"):
        sbx = handle(client, sandbox_id).hibernate(keep_local=not drop_local)
    ui.out.print(f"{sbx.id} {sbx.state}", highlight=False)


@app.command("fork")
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
    labels = pairs(metadata, "--metadata")
    with connect(url, api_key) as client, ui.spinner("Forking…"):
        forked = handle(client, sandbox_id).fork(name=name, metadata=labels or None)
    ui.created(forked.info, forked.id, as_json)


@app.command("resize", epilog="Example: cloche sandbox resize ID --memory-mb 2048 --cpu 2")
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
    with connect(url, api_key) as client, ui.spinner("Resizing…"):
        info = handle(client, sandbox_id).resize(cpu=cpu, memory_mb=memory_mb, pids=pids, allow_move=allow_move).info
    if as_json:
        ui.print_json(info)
    else:
        cpu_text = ui.cores(info.cpu)
        mem_text = ui.mib(info.memory_mb)
        ui.out.print(f"{info.id} {info.state} cpu={cpu_text} memory={mem_text}", highlight=False)


@app.command("timeout")
def sandbox_timeout(
    sandbox_id: SandboxId,
    seconds: Annotated[float, typer.Argument(help="New timeout, counted from now.", show_default=False)],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Change when a sandbox expires."""
    with connect(url, api_key) as client:
        info = handle(client, sandbox_id).set_timeout(seconds).info
    ui.out.print(f"{info.id} expires {ui.when(info.expires_at)}", highlight=False)
