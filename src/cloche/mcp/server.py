"""The MCP tools: sandboxes, exec, files, code, ports, hibernation and agent state.

Every tool is a thin call through the SDK (`cloche.AsyncClient`), so its inputs are
checked twice (the tool's JSON schema, then the API) and its failures are the API's:
a `ClocheError` becomes a tool error (`isError`) whose text is the server's message,
such as "sandbox sb_x not found (not_found)". Which client, hence which key, a call
uses is the transport's business: `build` takes a `ClientSource`.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from cloche import __version__
from cloche.client import AsyncClient, ClocheError
from cloche.client.models import (
    CodeResult,
    Entry,
    ExecExit,
    ExecOutput,
    ExecResult,
    NetworkPolicy,
    PortUrls,
    SandboxInfo,
    WriteResult,
)
from cloche.constants import MAX_SIGNED_URL_S

ClientSource = Callable[[Context], AbstractAsyncContextManager[AsyncClient]]
"""Gives the client one tool call runs with (scoped to that caller's API key)."""

MAX_OUTPUT = 1 << 20
"""Characters of stdout and of stderr an exec result keeps (the rest only streams by)."""

INSTRUCTIONS = """cloche runs isolated Linux sandboxes. Create one (create_sandbox), then run
commands (exec), move files (read_file, write_file, list_files), run stateful Python
(run_code), reach a server inside it (expose_port), and hibernate or kill it when done.
A hibernated sandbox keeps its files and wakes on the next call. put_state/get_state keep
values outside any sandbox."""

SandboxId = Annotated[str, Field(description="The sandbox's id (sb_...), from create_sandbox")]
Path = Annotated[str, Field(description="Path inside the sandbox; relative paths are under /workspace")]
Encoding = Annotated[Literal["utf-8", "base64"], Field(description="utf-8 text, or base64 for binary content")]


class StateEntry(BaseModel):
    """A state value (`value` is null when the key does not exist)."""

    namespace: str
    key: str
    value: str | None
    version: int | None = Field(..., description="pass as if_match to put_state for compare-and-set")


def _message(exc: ClocheError) -> str:
    return f"{exc.message} ({exc.code})"


def build(clients: ClientSource) -> MCPServer:
    """The MCP server with cloche's tools, each call's client coming from `clients`."""
    # WARNING: MCPServer configures the root logger (if unset); INFO would log every call.
    mcp = MCPServer("cloche", instructions=INSTRUCTIONS, version=__version__, log_level="WARNING")

    @asynccontextmanager
    async def cloche(ctx: Context) -> AsyncIterator[AsyncClient]:
        try:
            async with clients(ctx) as client:
                yield client
        except ClocheError as exc:
            raise ToolError(_message(exc)) from exc

    @mcp.tool()
    async def create_sandbox(
        ctx: Context,
        template: Annotated[str | None, Field(description="Template name (default: base)")] = None,
        cpu: Annotated[float | None, Field(description="CPU cores", gt=0)] = None,
        memory_mb: Annotated[int | None, Field(description="Memory limit in MiB", gt=0)] = None,
        disk_mb: Annotated[int | None, Field(description="Disk size in MiB", gt=0)] = None,
        timeout_s: Annotated[float | None, Field(description="Lifetime in seconds before on_timeout", gt=0)] = None,
        network: Annotated[
            Literal["none", "internet"] | NetworkPolicy | None,
            Field(description='"none" (loopback only), "internet", or a policy (allow_out, deny_out, ...)'),
        ] = None,
        metadata: Annotated[dict[str, str] | None, Field(description="Labels to find the sandbox by")] = None,
    ) -> SandboxInfo:
        """Create a sandbox and return its id and state."""
        async with cloche(ctx) as client:
            sandbox = await client.sandboxes.create(template=template, cpu=cpu, memory_mb=memory_mb,
                                                    disk_mb=disk_mb, timeout_s=timeout_s, network=network,
                                                    metadata=metadata)  # fmt: skip
            return sandbox.info

    @mcp.tool(name="exec")
    async def exec_command(
        ctx: Context,
        sandbox_id: SandboxId,
        cmd: Annotated[str | list[str], Field(description="A shell command line, or an argv list")],
        cwd: Annotated[str, Field(description="Working directory")] = "/workspace",
        env: Annotated[dict[str, str] | None, Field(description="Extra environment variables")] = None,
        timeout_s: Annotated[float | None, Field(description="Kill the command after this many seconds", gt=0)] = None,
    ) -> ExecResult:
        """Run a command in the sandbox (waking it if it sleeps) and return its exit code
        and output. Output is sent as progress notifications while it arrives."""
        out: dict[str, list[str]] = {"stdout": [], "stderr": []}
        kept = {"stdout": 0, "stderr": 0}
        seen = 0
        end = ExecExit()
        async with cloche(ctx) as client:
            sandbox = await client.sandboxes.get(sandbox_id)
            async for event in sandbox.exec_stream(cmd, env=env, cwd=cwd, timeout_s=timeout_s):
                if isinstance(event, ExecOutput):
                    seen += len(event.data)
                    await ctx.report_progress(seen, message=event.data)
                    room = MAX_OUTPUT - kept[event.type]
                    out[event.type].append(event.data[:room])
                    kept[event.type] += min(room, len(event.data))
                elif isinstance(event, ExecExit):
                    end = event
        truncated = end.truncated or any(n >= MAX_OUTPUT for n in kept.values())
        return ExecResult(exit_code=end.exit_code, signal=end.signal, stdout="".join(out["stdout"]),
                          stderr="".join(out["stderr"]), truncated=truncated, timed_out=end.timed_out)  # fmt: skip

    @mcp.tool()
    async def read_file(ctx: Context, sandbox_id: SandboxId, path: Path, encoding: Encoding = "utf-8") -> str:
        """Read a file of the sandbox (utf-8 text, undecodable bytes replaced; or base64)."""
        async with cloche(ctx) as client:
            data = await (await client.sandboxes.get(sandbox_id)).files.read(path)
        return base64.b64encode(data).decode() if encoding == "base64" else data.decode(errors="replace")

    @mcp.tool()
    async def write_file(
        ctx: Context,
        sandbox_id: SandboxId,
        path: Path,
        content: Annotated[str, Field(description="The new content")],
        encoding: Encoding = "utf-8",
    ) -> WriteResult:
        """Create or replace a file (atomically; missing parent directories are created)."""
        try:
            data = base64.b64decode(content, validate=True) if encoding == "base64" else content.encode()
        except ValueError as exc:
            raise ToolError(f"content is not valid base64: {exc}") from exc
        async with cloche(ctx) as client:
            return await (await client.sandboxes.get(sandbox_id)).files.write(path, data)

    @mcp.tool()
    async def list_files(ctx: Context, sandbox_id: SandboxId, path: Path = "/workspace") -> list[Entry]:
        """List a directory of the sandbox: name, path, type (file, dir, symlink), size."""
        async with cloche(ctx) as client:
            return await (await client.sandboxes.get(sandbox_id)).files.list(path)

    @mcp.tool()
    async def run_code(
        ctx: Context,
        sandbox_id: SandboxId,
        code: Annotated[str, Field(description="Python source; the last expression's value is returned")],
        timeout_s: Annotated[float | None, Field(description="Interrupt it after this many seconds", gt=0)] = None,
    ) -> CodeResult:
        """Run Python in the sandbox's kernel, which keeps variables, imports and functions
        between calls (until the sandbox sleeps). An exception is a tool error with its
        traceback and the output printed before it."""
        async with cloche(ctx) as client:
            result = await (await client.sandboxes.get(sandbox_id)).run_code(code, timeout_s=timeout_s)
        if result.error is not None:
            printed = "".join(f"{name}:\n{text}\n" for name, text in (("stdout", result.stdout),
                                                                       ("stderr", result.stderr)) if text)  # fmt: skip
            raise ToolError(f"{printed}{result.error.name}: {result.error.value}\n{result.error.traceback}")
        return result

    @mcp.tool()
    async def expose_port(
        ctx: Context,
        sandbox_id: SandboxId,
        port: Annotated[int, Field(description="A port a process in the sandbox listens on (0.0.0.0)", ge=1, le=65535)],
        expires_s: Annotated[int, Field(description="How long signed_url works", ge=1, le=MAX_SIGNED_URL_S)] = 3600,
    ) -> PortUrls:
        """The URLs that reach a port of the sandbox from outside: `signed_url` works as
        is until it expires; `url` and `path_url` need the `token` (header
        X-Cloche-Traffic-Token) unless the sandbox is public."""
        async with cloche(ctx) as client:
            return await (await client.sandboxes.get(sandbox_id)).port_urls(port, expires_s=expires_s)

    @mcp.tool()
    async def hibernate(ctx: Context, sandbox_id: SandboxId) -> SandboxInfo:
        """Put the sandbox to sleep: files are kept, processes end, no CPU or memory is
        held. The next exec, file or code call wakes it."""
        async with cloche(ctx) as client:
            return (await (await client.sandboxes.get(sandbox_id)).hibernate()).info

    @mcp.tool()
    async def kill(ctx: Context, sandbox_id: SandboxId) -> str:
        """Destroy the sandbox and its files."""
        async with cloche(ctx) as client:
            await (await client.sandboxes.get(sandbox_id)).kill()
        return f"sandbox {sandbox_id} killed"

    @mcp.tool()
    async def get_state(
        ctx: Context,
        namespace: Annotated[str, Field(description="State namespace, e.g. the agent's name")],
        key: Annotated[str, Field(description="Key within the namespace")],
    ) -> StateEntry:
        """Read a value of the durable key-value state (kept outside any sandbox)."""
        async with cloche(ctx) as client:
            found = await client.state(namespace).get(key)
        if found is None:
            return StateEntry(namespace=namespace, key=key, value=None, version=None)
        return StateEntry(namespace=namespace, key=key, value=found.value.decode(errors="replace"),
                          version=found.version)  # fmt: skip

    @mcp.tool()
    async def put_state(
        ctx: Context,
        namespace: Annotated[str, Field(description="State namespace, e.g. the agent's name")],
        key: Annotated[str, Field(description="Key within the namespace")],
        value: Annotated[str, Field(description="The value (text)")],
        if_match: Annotated[int | None, Field(description="Only if the current version is this")] = None,
    ) -> StateEntry:
        """Store a value in the durable key-value state; returns its new version."""
        async with cloche(ctx) as client:
            version = await client.state(namespace).put(key, value, if_match=if_match)
        return StateEntry(namespace=namespace, key=key, value=value, version=version)

    return mcp
