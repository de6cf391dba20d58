"""Numbers more than one layer must agree on, in one place. A leaf: it imports nothing,
so anything may import it (the API's request models, the node's spec checks, the SDK)."""

from __future__ import annotations

VERSION = "0.1.0"
DAY_S = 86400
MAX_TIMEOUT_S = 30 * DAY_S  # the longest a sandbox's timeout or idle period may be
MAX_SIGNED_URL_S = 7 * DAY_S  # the longest a signed port URL works
