"""Numbers more than one layer must agree on, in one place. A leaf: it imports nothing,
so anything may import it (the API's request models, the node's spec checks, the SDK)."""

from __future__ import annotations

VERSION = "0.1.0"
DAY_S = 86400
MAX_TIMEOUT_S = 30 * DAY_S  # the longest a sandbox's timeout or idle period may be
MAX_SIGNED_URL_S = 7 * DAY_S  # the longest a signed port URL works

SERVER_KEEP_ALIVE_S = 75
"""How long `cloche up`/`cloche server` and the node API keep an idle HTTP connection open:
longer than any of cloche's own clients keeps one for reuse (the replica's aiohttp pools to
nodes, 60 s, and to other replicas, 30 s). A server that closed first (uvicorn's default is
5 s) raced the next request on that connection: "Can not write request body"."""
