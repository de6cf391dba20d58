"""The PostgreSQL half of fencing. A node that was cut off may still have writes in
flight after another node claimed the same instance; self-fencing stops it from serving,
but only the database can stop a write already on its way. Every write an instance makes
runs `check_token` in its own transaction: the table keeps the newest fencing token seen
per instance, and a write carrying an older one is rejected with `StaleFencingToken`.
"""

from __future__ import annotations

import psycopg

SCHEMA = """
CREATE TABLE IF NOT EXISTS instance_fences (
    app TEXT NOT NULL,
    key TEXT NOT NULL,
    token BIGINT NOT NULL,
    PRIMARY KEY (app, key)
)
"""

# Raises the stored token to ours, or leaves it when ours is older (then no row returns).
# The upsert locks the row until the caller's transaction ends, so a concurrent write with
# an older token waits, then sees the newer one and is rejected.
_ADVANCE = """
INSERT INTO instance_fences AS f (app, key, token) VALUES (%s, %s, %s)
ON CONFLICT (app, key) DO UPDATE SET token = EXCLUDED.token WHERE f.token <= EXCLUDED.token
RETURNING token
"""


class StaleFencingToken(Exception):
    """A write carried a fencing token older than one the database has already seen:
    another instance of the same key has been started since, and this one must stop."""

    def __init__(self, app: str, key: str, token: int, newest: int) -> None:
        super().__init__(f"stale fencing token {token} for {app}/{key}: the newest is {newest}")
        self.app, self.key, self.token, self.newest = app, key, token, newest


async def create_table(conn: psycopg.AsyncConnection) -> None:
    await conn.execute(SCHEMA)


async def check_token(conn: psycopg.AsyncConnection, app: str, key: str, token: int) -> None:
    """Call inside the transaction of a write by instance `(app, key)` holding `token`:
    returns if the write may go ahead, raises `StaleFencingToken` (roll back) if not."""
    cur = await conn.execute(_ADVANCE, (app, key, token))
    if await cur.fetchone() is None:
        cur = await conn.execute("SELECT token FROM instance_fences WHERE app = %s AND key = %s", (app, key))
        row = await cur.fetchone()
        raise StaleFencingToken(app, key, token, int(row[0]) if row else 0)
