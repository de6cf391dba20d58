"""Tenants' secrets: values a sandbox can use in outgoing HTTP requests without ever
holding them.

A sandbox's network policy names a secret as `${secret:NAME}` in a header of a per-host
rule; the node's egress proxy fills the placeholder in on the way out, so an agent that
is compromised or prompt-injected inside the sandbox has nothing to leak. That only
holds if the value never comes back either: no API returns it, nothing logs it, and it
is stored encrypted (Fernet: AES-128-CBC + HMAC-SHA256) with keys kept apart from the
database, in a file (default `DATA/secret-keys`, 0600, one key per line, newest first).

Each secret is bound to host names (exact or `*.wildcard`): `resolve` refuses to fill it
into a request to any other host, and `check_policy` refuses a policy that would send it
elsewhere, so the mistake shows when the policy is set rather than on the first request.

Key rotation writes a new key at the head of the file (old keys stay, so every
ciphertext stays readable at every moment, crash or not), then re-encrypts every secret
under it in one transaction. With `drop_old` the old keys are removed from the file
afterwards: only then is a database backup taken before the rotation unreadable.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from cloche.control.errors import ApiError
from cloche.node.errors import InvalidSpec
from cloche.node.net.egress.context import SecretDenied
from cloche.node.net.policy import NetworkPolicy
from cloche.node.net.policy_parsing import parse_target
from cloche.node.net.rules import SECRET_NAME, host_matches
from cloche.store.db import IntegrityError, SecretRow, Store

MAX_VALUE_BYTES = 8192
MAX_HOSTS = 32
# Control characters (all but TAB): the value goes into an HTTP header line.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_CACHE_MAX = 4096


@dataclass(frozen=True)
class Rotation:
    """What `rotate_key` did."""

    secrets: int  # re-encrypted under the new key
    keys: int  # keys in the file now (1 after drop_old)
    dropped: int  # old keys removed from the file


class KeyFile:
    """The Fernet keys in one file, newest first; written atomically, mode 0600."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> list[bytes]:
        lines = [line.strip() for line in self.path.read_text().splitlines()]
        keys = [line.encode() for line in lines if line and not line.startswith("#")]
        if not keys:
            raise RuntimeError(f"{self.path} holds no key")
        for i, key in enumerate(keys):
            try:
                Fernet(key)
            except ValueError:
                raise RuntimeError(f"{self.path}: key {i + 1} is not a Fernet key (32 url-safe base64 bytes)") from None
        return keys

    def write(self, keys: list[bytes]) -> None:
        """Temp file + fsync + rename + fsync of the directory: the file is always
        either the old list or the new one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, b"".join(key + b"\n" for key in keys))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dirfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)


def covers(allowed: str, host: str) -> bool:
    """Whether a secret allowed for `allowed` may go to every name rule host `host` matches:
    an exact host needs the same name or a wildcard above it; `*.x` needs `*.x` or a
    wildcard above x."""
    if host.startswith("*."):
        return allowed == host or (allowed.startswith("*.") and host_matches(allowed, host[2:]))
    return host_matches(allowed, host)


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def valid_name(name: str) -> bool:
    return SECRET_NAME.fullmatch(name) is not None


def _check_name(name: str) -> str:
    if not valid_name(name):
        raise _invalid(f"name: {name[:80]!r} is not a secret name (1-64 letters, digits, '_', '.' or '-', "
                       "starting with a letter or '_')")  # fmt: skip
    return name


def _check_value(value: str) -> bytes:
    """The value as UTF-8; errors never quote it."""
    if not value:
        raise _invalid("value: must not be empty")
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid("value: must be valid Unicode text") from None
    if len(data) > MAX_VALUE_BYTES:
        raise _invalid(f"value: at most {MAX_VALUE_BYTES} bytes (UTF-8)")
    if _CONTROL.search(value):
        raise _invalid("value: must be one line without control characters (CR, LF, NUL, ...): "
                       "it is sent in an HTTP header")  # fmt: skip
    return data


def _check_hosts(hosts: list[str]) -> list[str]:
    if not hosts:
        raise _invalid("hosts: give at least one host name (or *.wildcard) the secret may be sent to")
    if len(hosts) > MAX_HOSTS:
        raise _invalid(f"hosts: at most {MAX_HOSTS} host names")
    out: list[str] = []
    for i, text in enumerate(hosts):
        where = f"hosts[{i}]"
        try:
            host = parse_target(text, where)
        except InvalidSpec as exc:
            raise _invalid(str(exc)) from None
        if "/" in host:
            raise _invalid(f"{where}: {text!r} is an address; a secret is bound to host names "
                           "(the proxy matches the request's host)")  # fmt: skip
        if host not in out:
            out.append(host)
    return out


class SecretService:
    """Create, change, list and delete a tenant's secrets; fill them into requests
    (`resolve`) and check that a network policy uses them as allowed (`check_policy`).

    Thread-safe: writes and rotation hold one lock; `resolve` takes none but a short one
    around its cache, and normally answers from memory."""

    def __init__(self, store: Store, keys_path: Path) -> None:
        self.store = store
        self.keys = KeyFile(keys_path)
        if not self.keys.exists():
            if store.secret_count():
                raise RuntimeError(f"{keys_path} is missing but the database holds encrypted secrets: restore the "
                                   "file (or set secret_keys_file to where it is)")  # fmt: skip
            self.keys.write([Fernet.generate_key()])
        self._fernet = MultiFernet([Fernet(k) for k in self.keys.load()])
        self._write = threading.Lock()
        self._cache_lock = threading.Lock()
        self._generation = 0  # bumped by every invalidation, so a slow miss cannot cache a stale value
        self._values: dict[tuple[str, str], tuple[str, tuple[str, ...]] | None] = {}
        self._owners: dict[str, str] = {}  # sandbox id -> tenant id (never changes for an id)

    # ---- the tenant's API ---------------------------------------------------------------

    def create(self, tenant_id: str, name: str, value: str, hosts: list[str]) -> SecretRow:
        name, data, allowed = _check_name(name), _check_value(value), _check_hosts(hosts)
        now = time.time()
        with self._write:
            row = SecretRow(tenant_id, name, self._fernet.encrypt(data), allowed, now, now)
            try:
                self.store.add_secret(row)
            except IntegrityError:
                raise ApiError(409, "conflict", f"a secret named {name!r} already exists") from None
        self._invalidate((tenant_id, name))
        return row

    def put(self, tenant_id: str, name: str, value: str | None, hosts: list[str] | None) -> tuple[SecretRow, bool]:
        """Replace the value and/or the hosts; create the secret when it does not exist
        and both are given. Returns the row and whether it was created."""
        if not valid_name(name):
            if value is not None and hosts is not None:
                _check_name(name)
            raise self._missing(name)
        data = None if value is None else _check_value(value)
        allowed = None if hosts is None else _check_hosts(hosts)
        if data is None and allowed is None:
            raise _invalid("body: give value, hosts or both")
        with self._write:
            row = self.store.secret(tenant_id, name)
            if row is None:
                if data is None or allowed is None:
                    raise self._missing(name, "; give both value and hosts to create it")
                now = time.time()
                row = SecretRow(tenant_id, name, self._fernet.encrypt(data), allowed, now, now)
                self.store.add_secret(row)
                created = True
            else:
                ciphertext = row.ciphertext if data is None else self._fernet.encrypt(data)
                self.store.update_secret(tenant_id, name, ciphertext, allowed or row.hosts)
                created = False
        self._invalidate((tenant_id, name))
        return self.get(tenant_id, name), created

    def get(self, tenant_id: str, name: str) -> SecretRow:
        row = self.store.secret(tenant_id, name) if valid_name(name) else None
        if row is None:
            raise self._missing(name)
        return row

    def list(self, tenant_id: str) -> list[SecretRow]:
        return self.store.secrets(tenant_id)

    def delete(self, tenant_id: str, name: str) -> None:
        with self._write:
            if not valid_name(name) or not self.store.delete_secret(tenant_id, name):
                raise self._missing(name)
        self._invalidate((tenant_id, name))

    @staticmethod
    def _missing(name: str, hint: str = "") -> ApiError:
        # Another tenant's secret is answered exactly like a missing one.
        return ApiError(404, "not_found", f"secret {name!r} not found{hint}")

    # ---- admin ------------------------------------------------------------------------

    def rotate_key(self, drop_old: bool = False) -> Rotation:
        """Put a new key first, re-encrypt every secret under it, then (with `drop_old`)
        forget the others. Each step leaves every ciphertext readable by the file."""
        with self._write:
            old = self.keys.load()
            keys = [Fernet.generate_key(), *old]
            self._write_keys(keys)
            self._fernet = MultiFernet([Fernet(k) for k in keys])
            count = self.store.reencrypt_secrets(self._fernet.rotate)
            if drop_old:
                keys = keys[:1]
                self._write_keys(keys)
                self._fernet = MultiFernet([Fernet(keys[0])])
        self._invalidate(None)
        return Rotation(secrets=count, keys=len(keys), dropped=len(old) if drop_old else 0)

    def _write_keys(self, keys: list[bytes]) -> None:
        try:
            self.keys.write(keys)
        except OSError as exc:  # the file is unchanged: every secret is still readable
            raise ApiError(500, "key_file_error", f"cannot write {self.keys.path}: {exc.strerror}") from None

    # ---- the egress proxy and the policy ---------------------------------------------------

    def resolve(self, sandbox_id: str, name: str, host: str) -> str:
        """The value of secret `name` of the tenant owning `sandbox_id`, for a request to
        `host`. Raises SecretDenied (naming the secret and the host, never the value)."""
        tenant_id = self._owners.get(sandbox_id)
        if tenant_id is None:
            row = self.store.sandbox(sandbox_id)
            if row is None:
                raise SecretDenied(f"sandbox {sandbox_id} has no owner; secret {name!r} is not available")
            tenant_id = row.tenant_id
            if len(self._owners) >= _CACHE_MAX:
                self._owners.clear()
            self._owners[sandbox_id] = tenant_id
        entry = self._entry(tenant_id, name)
        if entry is None:
            raise SecretDenied(f"no secret named {name!r} in this sandbox's tenant")
        value, allowed = entry
        if not any(host_matches(pattern, host) for pattern in allowed):
            shown = host.lower().rstrip(".")
            raise SecretDenied(f"secret {name!r} may not be sent to {shown} (allowed: {', '.join(allowed)})")
        return value

    def _entry(self, tenant_id: str, name: str) -> tuple[str, tuple[str, ...]] | None:
        key = (tenant_id, name)
        try:
            return self._values[key]
        except KeyError:
            pass
        generation = self._generation
        row = self.store.secret(tenant_id, name) if valid_name(name) else None
        entry = None
        if row is not None:
            try:
                entry = (self._fernet.decrypt(row.ciphertext).decode(), tuple(row.hosts))
            except InvalidToken:
                raise SecretDenied(f"secret {name!r} cannot be decrypted with this server's keys") from None
        with self._cache_lock:
            if generation == self._generation:
                if len(self._values) >= _CACHE_MAX:
                    self._values.clear()
                self._values[key] = entry
        return entry

    def _invalidate(self, key: tuple[str, str] | None) -> None:
        with self._cache_lock:
            self._generation += 1
            if key is None:
                self._values.clear()
            else:
                self._values.pop(key, None)

    def check_policy(self, tenant: str, policy: NetworkPolicy, where: str = "network") -> None:
        """Every `${secret:NAME}` in `policy.rules` names a secret of `tenant` (an id)
        whose hosts cover the rule's host; else a 400 naming the field at fault."""
        uses = policy.secrets()
        if not any(uses.values()):
            return
        secrets = {row.name: row for row in self.store.secrets(tenant)}
        for rule in policy.rules:
            for i, transform in enumerate(rule.transforms):
                for name in sorted(transform.secrets()):
                    at = f"{where}.rules[{rule.host!r}][{i}]"
                    row = secrets.get(name)
                    if row is None:
                        raise ApiError(400, "invalid_spec", f"{at}: no secret named {name!r} in this tenant "
                                                            "(add it with `cloche secret add`)")  # fmt: skip
                    if not any(covers(allowed, rule.host) for allowed in row.hosts):
                        raise ApiError(400, "invalid_spec", f"{at}: secret {name!r} may not be sent to {rule.host} "
                                                            f"(allowed: {', '.join(row.hosts)})")  # fmt: skip
