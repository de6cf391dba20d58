"""E2B's users inside a sandbox: `user` (uid 1000, home /home/user, the default) and
`root` (uid 0); other names are looked up in the sandbox's /etc/passwd."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from fastapi import Request

from cloche.node.api import SandboxFiles
from cloche.node.errors import FileError

DEFAULT_USER = "user"


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: str


ROOT = User("root", 0, 0, "/root")
USER = User("user", 1000, 1000, "/home/user")
KNOWN = {"root": ROOT, "user": USER}


def name_from(request: Request) -> str:
    """The user an envd request acts as: `username` in the query, else HTTP Basic
    `user:` in Authorization (how envd's RPC clients send it), else the default."""
    name = request.query_params.get("username")
    if name:
        return name
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return DEFAULT_USER
        return decoded.partition(":")[0] or DEFAULT_USER
    return DEFAULT_USER


async def resolve(name: str, files: SandboxFiles) -> User | None:
    if name in KNOWN:
        return KNOWN[name]
    try:
        passwd = (await files.read_all("/etc/passwd", 1 << 20)).decode(errors="replace")
    except FileError:
        return None
    for line in passwd.splitlines():
        parts = line.split(":")
        if len(parts) >= 6 and parts[0] == name and parts[2].isdigit() and parts[3].isdigit():
            return User(name, int(parts[2]), int(parts[3]), parts[5] or "/")
    return None


def uid_name(uid: int) -> str:
    return {0: "root", 1000: "user"}.get(uid, str(uid))
