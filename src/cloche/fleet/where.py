"""Where a request's user is, and where the request was served.

Why it exists: latency-aware placement needs the user's region, but the `Node` interface
control calls (create, wake, exec...) carries no request. The server resolves the user's
region once per request (`locate_user`: a `cloche-region` hint header, else the client
address in the configured map, else the region of the replica that received it) and
keeps it in a context variable for the request (`enter`). The fleet reads it when it
places a sandbox and writes there the region of the node that served the request, which
the server returns as the `cloche-region` response header.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Collection, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

HEADER = "cloche-region"


class UnknownRegion(ValueError):
    """A request named a region no node, map or latency matrix knows."""


@dataclass
class Where:
    user: str | None  # the user's region (None: no preference)
    served: str | None = None  # the region of the node that served the request


_current: ContextVar[Where | None] = ContextVar("cloche_where", default=None)


def current() -> Where | None:
    return _current.get()


def user_region() -> str | None:
    where = _current.get()
    return None if where is None else where.user


def served_in(region: str) -> None:
    """The node that serves the current request is in `region` (no request: nothing)."""
    where = _current.get()
    if where is not None:
        where.served = region


@contextlib.contextmanager
def enter(where: Where) -> Iterator[Where]:
    """`where` is the current request's for the block (and the tasks it starts)."""
    token = _current.set(where)
    try:
        yield where
    finally:
        _current.reset(token)


@contextlib.contextmanager
def near(region: str | None) -> Iterator[None]:
    """Place close to `region` in the block (a create's own `region` field), when given."""
    where = _current.get()
    if region is None:
        yield
    elif where is None:
        with enter(Where(region)):
            yield
    else:
        outer, where.user = where.user, region
        try:
            yield
        finally:
            where.user = outer


class ClientRegions:
    """Client address -> region, from `10.1.0.0/16=eu,192.0.2.0/24=us`; the most specific
    network that holds the address wins."""

    def __init__(self, spec: str = "") -> None:
        nets = []
        for item in filter(None, (s.strip() for s in spec.split(","))):
            cidr, sep, region = item.partition("=")
            if not sep or not region.strip():
                raise ValueError(f"client_regions: {item!r} is not CIDR=region")
            try:
                nets.append((ipaddress.ip_network(cidr.strip(), strict=False), region.strip()))
            except ValueError as e:
                raise ValueError(f"client_regions: {cidr.strip()!r} is not a network ({e})") from None
        self._nets = sorted(nets, key=lambda n: n[0].prefixlen, reverse=True)

    @property
    def regions(self) -> set[str]:
        return {region for _, region in self._nets}

    def region_of(self, address: str | None) -> str | None:
        if not address:
            return None
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:  # a unix socket's peer, say
            return None
        return next((region for net, region in self._nets if ip.version == net.version and ip in net), None)


def locate_user(hint: str | None, client: str | None, clients: ClientRegions, default: str | None,
                known: Collection[str]) -> str | None:  # fmt: skip
    """The user's region: the hint (UnknownRegion when no one knows it), else the
    client's region in the map, else `default` (the receiving replica's)."""
    if hint is not None and hint.strip():
        region = hint.strip()
        if region not in known:
            raise UnknownRegion(f"{HEADER}: unknown region {region!r} (known: {', '.join(sorted(known)) or 'none'})")
        return region
    return clients.region_of(client) or default or None
