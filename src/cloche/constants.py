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

PG_IO_TIMEOUT_S = 5
"""How long a PostgreSQL connection of cloche's (the control-plane store's, the state
engine's) may wait on the network: to connect, and for data it sent to be acknowledged
(TCP_USER_TIMEOUT); idle ones are probed by TCP keep-alives. A connection cut off by the
network then fails within seconds, instead of when TCP gives up retransmitting (minutes)."""
PG_CONNECTION_BOUNDS = {"connect_timeout": PG_IO_TIMEOUT_S, "tcp_user_timeout": PG_IO_TIMEOUT_S * 1000,
                        "keepalives": 1, "keepalives_idle": PG_IO_TIMEOUT_S, "keepalives_interval": 1,
                        "keepalives_count": 3}  # fmt: skip
"""libpq's settings for that, on every connection."""
