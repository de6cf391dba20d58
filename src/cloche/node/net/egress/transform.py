"""Applying a host's transforms to one request's headers: where secrets enter the request.

A transform sets headers, replacing any header of the same name the sandbox sent, and
its values may hold `${secret:NAME}` placeholders, each filled by asking the node for
the secret's value for this sandbox and this host. The lookup decides (it raises
SecretDenied for a secret the sandbox's tenant does not have, or one not bound to the
host), so a placeholder is either filled or the request is not sent at all: a literal
`${secret:...}` never leaves the node. Values are checked to be one header line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from cloche.node.net.egress.context import SecretDenied
from cloche.node.net.rules import PLACEHOLDER, Transform

Header = tuple[bytes, bytes]
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def apply_transforms(headers: Iterable[Header], transforms: Iterable[Transform],
                     fill: Callable[[str], str]) -> list[Header]:  # fmt: skip
    """`headers` with every transform's headers set in order; `fill(NAME)` gives a
    secret's value and raises SecretDenied when it may not be used."""
    out = list(headers)
    for transform in transforms:
        for name, template in transform.headers:
            value = PLACEHOLDER.sub(lambda m: fill(m.group(1)), template).strip()
            if _CONTROL.search(value):
                raise SecretDenied(f"the value of header {name} holds a line break or control character "
                                   "(from a secret), which a header cannot carry")  # fmt: skip
            lower = name.lower().encode()
            out = [(n, v) for n, v in out if n.lower() != lower]
            out.append((name.encode(), value.encode()))
    return out
