"""What the egress proxy asks the node about one intercepted connection.

The proxy never decides whether a connection may exist: the firewall judged it by the
sandbox's policy before redirecting it here (filtering first). The proxy only needs,
per connection, the sandbox behind the source address and three answers about it,
which this module names so that the proxy does not depend on the node's internals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cloche.node.net.rules import EgressProxy, Transform


class SecretDenied(Exception):
    """A `${secret:NAME}` placeholder cannot be filled for this request: the secret is
    unknown to the sandbox's tenant, or its definition does not allow the host. The
    message says which; the request fails and the placeholder is never forwarded."""


@dataclass(frozen=True)
class ConnectionContext:
    """One sandbox, as the proxy sees it while serving a connection from it."""

    sandbox_id: str
    # host name -> the transforms to apply to its requests; () means pass through untouched
    transforms_for: Callable[[str], tuple[Transform, ...]]
    # (host name, IPv4 address) -> whether this sandbox's own lookups resolved the name to
    # that address; a transform is applied only then, so a request cannot carry a secret
    # meant for one host to an address another name led to
    resolved: Callable[[str, str], bool]
    # the user's SOCKS5 proxy every upstream connection is dialled through, or None
    socks: EgressProxy | None


# source IPv4 address of a connection -> its sandbox's context (None: not a sandbox of ours)
Lookup = Callable[[str], "ConnectionContext | None"]
# (sandbox id, secret name, request host) -> the secret's value; raises SecretDenied
SecretLookup = Callable[[str, str, str], str]
