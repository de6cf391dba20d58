"""The PostgreSQL state engine, for servers that share one database.

`PostgresEngine` (engine.py) composes the pieces: `schema.py` (the tables),
`namespaces.py` (namespace ids, cached), `kv.py` (keys: every conditional write one
statement), `log.py` (gap-free sequence numbers, idempotent appends) and `grants.py`
(which sandboxes may use a namespace).
"""

from cloche.state.postgres.engine import PostgresEngine

__all__ = ["PostgresEngine"]
