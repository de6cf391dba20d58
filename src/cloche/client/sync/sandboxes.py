"""The blocking face of sandboxes: ``client.sandboxes`` and the :class:`Sandbox` handle.

Every method is its signature and docstring over one call (or shared flow) of
:mod:`cloche.client._api`; :mod:`cloche.client.async_.sandboxes` mirrors it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import IO, TYPE_CHECKING

from .. import _api, _flows
from .._base import ProgressCallback, SandboxBase
from .._spec import SandboxSpec
from ..models import (
    ArchiveResult,
    CodeResult,
    ExecEvent,
    ExecResult,
    IdlePolicy,
    NetworkSpec,
    NetworkStatus,
    PortUrls,
    SandboxInfo,
    SnapshotInfo,
)
from ._sender import Sender
from .files import Files

if TYPE_CHECKING:
    from websockets.sync.client import ClientConnection


class Sandboxes:
    """``client.sandboxes``: create, look up and list sandboxes."""

    def __init__(self, client: Sender) -> None:
        self._client = client

    def create(
        self,
        template: str | None = None,
        cpu: float | None = None,
        memory_mb: int | None = None,
        disk_mb: int | None = None,
        timeout_s: float | None = None,
        name: str | None = None,
        metadata: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        idle: IdlePolicy | Mapping[str, float | None] | None = None,
        on_timeout: str | None = None,
        on_resume: str | None = None,
        snapshot: str | None = None,
        wait_s: float | None = None,
        region: str | None = None,
        network: NetworkSpec | None = None,
        isolation: str | None = None,
        regions: Sequence[str] | None = None,
    ) -> Sandbox:
        """Create a sandbox and return its handle once it is running.

        Args:
            template: Root file-system template (server default if omitted).
            cpu: CPU cores (may be fractional).
            memory_mb: Memory limit in MiB.
            disk_mb: Disk quota in MiB.
            timeout_s: Seconds until the sandbox expires unless extended.
            name: Unique per tenant; creating an existing name returns that sandbox.
            metadata: Free-form string labels, filterable in :meth:`list`.
            env: Environment variables for every command run in the sandbox.
            idle: Idle policy, e.g. ``{"pause_after_s": 60, "hibernate_after_s": 900}``
                (template defaults if omitted).
            on_timeout: What happens at ``timeout_s``: ``"kill"`` (default) or
                ``"hibernate"``.
            on_resume: Shell command run after each wake from hibernated or stopped
                (processes are restarted, not restored).
            snapshot: Start from the files of this named snapshot (its id).
            wait_s: Seconds to wait in the admission queue when the node is full (server
                default if omitted); then :class:`Unavailable` with ``retry_after``.
            region: The user's region, a hint to place the sandbox close to them.
            network: ``"none"`` (loopback only), ``"internet"``, or a policy: a
                :class:`NetworkPolicy` or the same as a dict, e.g.
                ``{"allow_out": ["pypi.org", "*.pythonhosted.org"]}`` (server default
                if omitted, normally ``"internet"``).
            isolation: ``"runc"`` (namespaces and seccomp on the host kernel) or
                ``"gvisor"`` (a user-space kernel: stronger, slower; see the README's
                "Isolation tiers"). Server default if omitted.
            regions: Data residency, in a cluster: only nodes in these regions run it
                (then :class:`Unavailable`, code ``region_full``, when they have no room).

        Raises:
            QuotaExceeded: The tenant is at its sandbox, CPU or memory quota.
            Unavailable: No room came free within ``wait_s``.
            InvalidRequest: A parameter is out of range, the template is unknown, or
                the network policy is malformed (code ``invalid_spec``, the message
                names the field, e.g. ``network.allow_out[0]: ...``).
        """
        call = _api.create_sandbox(SandboxSpec.of(locals()))
        return Sandbox(self._client, self._client._call(call))

    def get(self, sandbox_id: str) -> Sandbox:
        """Return a handle for an existing sandbox.

        Raises:
            NotFound: No such sandbox for this API key.
        """
        return Sandbox(self._client, self._client._call(_api.get_sandbox(sandbox_id)))

    def connect(self, sandbox_id: str) -> Sandbox:
        """Return a handle for an existing sandbox, resuming it first if it is paused."""
        return Sandbox(self._client, self._client._run(_flows.connect(sandbox_id)))

    def list(self, state: str | None = None, metadata: Mapping[str, str] | None = None) -> list[Sandbox]:
        """List this tenant's sandboxes, optionally only those in ``state`` and whose
        metadata contains every ``metadata`` key with the given value."""
        infos = self._client._call(_api.list_sandboxes(state, metadata))
        return [Sandbox(self._client, info) for info in infos]


class Sandbox(SandboxBase):
    """Handle for one sandbox; cheap to create, holds no connection of its own.

    Used as a context manager, the sandbox is killed when the block exits.

    Attributes:
        files: File operations inside this sandbox.
    """

    def __init__(self, client: Sender, info: SandboxInfo) -> None:
        super().__init__(info)
        self._client = client
        self.files = Files(client, info.id)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill(missing_ok=True)

    def refresh(self) -> Sandbox:
        """Re-read the sandbox from the server (updates :attr:`info`/:attr:`state`)."""
        self._info = self._client._call(_api.get_sandbox(self.id))
        return self

    def exec(
        self,
        cmd: str | Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | None = None,
        timeout_s: float | None = None,
    ) -> ExecResult:
        """Run a command to completion and return its exit status and output.

        Args:
            cmd: An argv list, or a string run by ``/bin/sh -c``.
            env: Extra environment variables.
            cwd: Working directory (default ``/workspace``).
            stdin: Text fed to the command's standard input.
            timeout_s: Kill the command after this many seconds (``timed_out`` is set).

        Raises:
            InvalidState: The sandbox is paused or stopped.
        """
        return self._client._call(_api.exec_(self.id, cmd, env=env, cwd=cwd, stdin=stdin, timeout_s=timeout_s))

    def run_code(self, code: str, env: Mapping[str, str] | None = None, timeout_s: float | None = None) -> CodeResult:
        """Run Python in the sandbox's kernel, which keeps its variables, imports and
        definitions between calls (it runs as root in /workspace and is restarted,
        empty, after the sandbox paused or hibernated).

        Args:
            code: Python source; the value of a last expression is in ``results``.
            env: Environment variables during this cell.
            timeout_s: Interrupt the cell after this many seconds (``error`` says so).

        An exception in the code is ``result.error``, not a raised error.
        """
        return self._client._call(_api.run_code(self.id, code, env=env, timeout_s=timeout_s))

    def exec_stream(
        self,
        cmd: str | Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | None = None,
        timeout_s: float | None = None,
    ) -> Iterator[ExecEvent]:
        """Run a command and yield its events as they happen.

        Yields :class:`ExecStart`, then :class:`ExecOutput` chunks (``type`` is
        ``"stdout"`` or ``"stderr"``), then one :class:`ExecExit`.  The request is sent
        when iteration starts; stop early with ``close()`` on the returned iterator.
        """
        return self._client._events(_api.exec_stream(self.id, cmd, env=env, cwd=cwd, stdin=stdin, timeout_s=timeout_s))

    def upload_tar(
        self, path: str, data: bytes | IO[bytes], on_progress: ProgressCallback | None = None
    ) -> ArchiveResult:
        """Extract a tar (optionally gzipped) archive into the directory ``path``.

        Unsafe members (absolute paths, ``..``, device nodes) are skipped and reported
        in :attr:`ArchiveResult.skipped`.
        """
        return self._client._call(_api.upload_tar(self.id, path, data), on_progress)

    def download_tar(self, path: str) -> bytes:
        """Return a tar archive of the directory (or file) at ``path``."""
        return self._client._call(_api.download_tar(self.id, path))

    def download_tar_to(self, path: str, dest: IO[bytes], on_progress: ProgressCallback | None = None) -> int:
        """Stream a tar archive of ``path`` into ``dest``; return the bytes written."""
        return self._client._download(_api.download_tar(self.id, path), dest, on_progress)

    def pause(self) -> Sandbox:
        """Freeze every process in the sandbox (no CPU use; memory is kept)."""
        self._info = self._client._call(_api.pause(self.id))
        return self

    def resume(self) -> Sandbox:
        """Thaw a paused sandbox (or start a stopped one)."""
        self._info = self._client._call(_api.resume(self.id))
        return self

    def resize(
        self,
        cpu: float | None = None,
        memory_mb: int | None = None,
        pids: int | None = None,
        allow_move: bool = False,
    ) -> Sandbox:
        """Change the sandbox's cpu, memory and pids limits in place, without a restart.

        Only the limits given change.  A running sandbox is admitted when its node has
        room for the difference; a stopped or hibernated one gets the new limits when it
        next starts.  :attr:`info` shows the new ``cpu`` and ``memory_mb``.

        Args:
            cpu: CPU cores (may be fractional).
            memory_mb: Memory limit in MiB.
            pids: Maximum number of processes and threads.
            allow_move: If the node has no room, move the sandbox (hibernate, then resume
                on a node that fits) instead of failing.

        Raises:
            Conflict: The node has no room for the new limits (``insufficient_capacity``),
                or the sandbox uses more memory than the new limit (``in_use``).
            QuotaExceeded: The tenant's CPU or memory quota would be exceeded.
            InvalidRequest: A limit is out of range.
        """
        call = _api.resize_sandbox(self.id, cpu=cpu, memory_mb=memory_mb, pids=pids, allow_move=allow_move)
        self._info = self._client._call(call)
        return self

    def set_timeout(self, timeout_s: float) -> Sandbox:
        """Make the sandbox expire ``timeout_s`` seconds from now."""
        self._info = self._client._call(_api.set_timeout(self.id, timeout_s))
        return self

    def hibernate(self, keep_local: bool = True) -> Sandbox:
        """Snapshot the sandbox's files and release its CPU, memory and processes.

        Any later call that needs it running (exec, files, :meth:`resume`) wakes it with
        every file intact; processes are restarted, not restored.

        Args:
            keep_local: Keep the node's copy of the files too, for the fastest wake
                (``False``: the next wake restores them from the snapshot store).
        """
        self._info = self._client._call(_api.hibernate(self.id, keep_local))
        return self

    def fork(self, name: str | None = None, metadata: Mapping[str, str] | None = None) -> Sandbox:
        """Start a new sandbox with this one's current files (running or hibernated).

        Args:
            name: Name of the new sandbox.
            metadata: Its labels (default: this sandbox's).
        """
        return Sandbox(self._client, self._client._call(_api.fork(self.id, name, metadata)))

    def snapshot(self, name: str) -> SnapshotInfo:
        """Save the sandbox's current files as the named snapshot ``name``; start new
        sandboxes from it with ``client.sandboxes.create(snapshot=info.id)``.

        Raises:
            Conflict: The tenant already has a snapshot with this name.
        """
        return self._client._call(_api.create_snapshot(self.id, name))

    def network(self) -> NetworkStatus:
        """The sandbox's network: the policy in force, its address and its traffic and
        DNS counters (also kept in :attr:`info`)."""
        return self._noted(self._client._call(_api.get_network(self.id)))

    def set_network(self, policy: NetworkSpec) -> NetworkStatus:
        """Replace the sandbox's network policy atomically; it is in force at once.

        Open connections the new policy denies are cut.  A paused or hibernated sandbox
        gets it when it wakes; it survives pause, hibernate and fork.

        Args:
            policy: ``"none"``, ``"internet"``, a :class:`NetworkPolicy` or the same as a
                dict (it replaces the old policy entirely, nothing is merged).

        Returns:
            The new status (the normalised policy, the address and the counters).

        Raises:
            InvalidRequest: The policy is malformed (code ``invalid_spec``; the message
                names the field, e.g. ``network.deny_out[2]: ...``).
        """
        return self._noted(self._client._call(_api.set_network(self.id, policy)))

    def port_urls(self, port: int, *, expires_s: int = 3600) -> PortUrls:
        """Where ``port`` (a server the sandbox runs) is reachable from outside.

        Args:
            port: The port inside the sandbox (1-65535).
            expires_s: Lifetime of the signed URL in the answer, in seconds.

        Returns:
            The host-form and path-form URLs, the traffic token (send it as
            ``X-Cloche-Traffic-Token``; ``None`` for a ``public`` sandbox) and a signed URL.

        Raises:
            ValueError: ``port`` is not a valid port number.
        """
        return self._client._call(_api.port_urls(self.id, port, expires_s))

    def url(self, port: int, *, signed: bool = False, expires_s: int = 3600) -> str:
        """The host-form URL of ``port``, e.g. ``http://8000-sb_x.localhost:8787/``.

        Unless the sandbox's policy is ``public``, requests to it need the traffic token
        (see :meth:`port_urls`), or use ``signed=True``.

        Args:
            port: The port inside the sandbox (1-65535).
            signed: Return the signed URL instead, which needs no token until it
                expires (a public sandbox's plain URL when the server signs none).
            expires_s: Lifetime of the signed URL, in seconds.
        """
        return self._client._run(_flows.url(self.id, port, signed, expires_s))

    def kill(self, missing_ok: bool = False) -> None:
        """Destroy the sandbox and its files.

        Args:
            missing_ok: Do not raise :class:`NotFound` if it is already gone.
        """
        self._client._run(_flows.kill(self.id, missing_ok))

    def pty_url(self, cmd: str | None = None, rows: int = 24, cols: int = 80, cwd: str | None = None) -> str:
        """The WebSocket URL of an interactive terminal running ``cmd`` (a shell-quoted
        command line; the server's login shell if omitted)."""
        return _api.pty_url(self._client.url, self.id, cmd=cmd, rows=rows, cols=cols, cwd=cwd)

    def pty(self, cmd: str | None = None, rows: int = 24, cols: int = 80, cwd: str | None = None) -> ClientConnection:
        """Open an interactive terminal; use as ``with sbx.pty() as ws: ...``.

        Send keystrokes as binary frames and resizes as text frames
        ``{"type": "resize", "rows": R, "cols": C}``; the server sends terminal output
        as binary frames and finally a text frame ``{"type": "exit", "exit_code": N}``.
        """
        from websockets.sync.client import connect

        return connect(**self._client._pty_args(self.id, cmd, rows, cols, cwd))
