"""Frames spoken with cloche-init (see supervisor/cloche-init.c for the wire format)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

FLAG_PTY = 1
FLAG_DETACH = 2
FLAG_STDIN = 4
HEADER = struct.Struct(">cI")
MAX_FRAME = 8 << 20


@dataclass
class ExecRequest:
    """One command to run in a sandbox."""

    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/workspace"
    stdin: bytes | None = None
    timeout_s: float | None = None
    output_cap: int = 10 << 20
    pty: bool = False
    rows: int = 24
    cols: int = 80
    uid: int = 0
    gid: int = 0
    detach: bool = False
    interactive: bool = False  # the caller will stream stdin frames

    def encode(self) -> bytes:
        flags = (FLAG_PTY if self.pty else 0) | (FLAG_DETACH if self.detach else 0)
        if self.stdin is not None or self.interactive:
            flags |= FLAG_STDIN
        timeout_ms = max(1, int(self.timeout_s * 1000)) if self.timeout_s else 0
        parts = [struct.pack(">IIQHHII", flags, timeout_ms, self.output_cap, self.rows,
                             self.cols, self.uid, self.gid)]  # fmt: skip
        parts.append(_strings(self.cmd))
        parts.append(_strings([f"{k}={v}" for k, v in self.env.items()]))
        parts.append(_string(self.cwd))
        return frame(b"E", b"".join(parts))


def _string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">I", len(raw)) + raw


def _strings(items: list[str]) -> bytes:
    return struct.pack(">I", len(items)) + b"".join(_string(s) for s in items)


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


def chunks(kind: bytes, data: bytes, size: int = 1 << 20) -> bytes:
    return b"".join(frame(kind, data[i : i + size]) for i in range(0, len(data), size))
