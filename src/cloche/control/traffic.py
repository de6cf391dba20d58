"""Traffic tokens: who may reach a sandbox's exposed ports.

A sandbox's traffic token is an HMAC-SHA256 of its id under one secret per server, so
nothing is stored per sandbox and every token is known the moment the sandbox exists:
there is no table to keep in step with creates, forks and deletes, and a restart keeps
every token valid. Rotating the secret (deleting `DATA_DIR/traffic-key`) revokes them all.

Browsers cannot send a header, so a URL can carry a signature instead: an HMAC over the
sandbox id, the port and an expiry time, checked the same way. Each kind of MAC has its
own prefix, so a signature can never be replayed as a token or the other way round.
Every check compares in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

KEY_BYTES = 32
_TOKEN = b"cloche traffic token\0"
_SIGNED = b"cloche signed url\0"


class TrafficTokens:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: bytes | None = None

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = _load_or_create(self.path)
        return self._key

    def _mac(self, message: bytes) -> str:
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()

    def token(self, sandbox_id: str) -> str:
        """The sandbox's traffic token (64 hex digits), the same on every call."""
        return self._mac(_TOKEN + sandbox_id.encode())

    def check(self, sandbox_id: str, presented: str | bytes) -> bool:
        return hmac.compare_digest(self.token(sandbox_id).encode(), _bytes(presented))

    def sign(self, sandbox_id: str, port: int, expires_at: int) -> str:
        """A signature for URLs to `port` of the sandbox, valid until `expires_at` (unix seconds)."""
        return self._mac(_SIGNED + f"{sandbox_id}\0{port}\0{int(expires_at)}".encode())

    def check_signed(self, sandbox_id: str, port: int, expires_at: int | str | bytes,
                     signature: str | bytes, now: float | None = None) -> bool:  # fmt: skip
        """True for a signature of (sandbox, port, expires_at) that has not expired yet."""
        try:
            expiry = int(expires_at)
        except ValueError:
            return False
        if expiry < (time.time() if now is None else now):
            return False
        return hmac.compare_digest(self.sign(sandbox_id, port, expiry).encode(), _bytes(signature))


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "replace")


def _load_or_create(path: Path) -> bytes:
    """Read the secret; on first use create it (0600). Concurrent creators agree: each
    writes a private temp file and links it into place, and only the first link wins."""
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (secrets.token_hex(KEY_BYTES) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return _read(path)


def _read(path: Path) -> bytes:
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise RuntimeError(f"{path} does not hold a traffic secret (hex, at least 16 bytes); delete it to make one")
    return key
