"""One live instance per agent key, cluster-wide. A node takes `/cloche/instances/<app>/<key>`
with a create-if-absent transaction under its lease before it starts (or wakes) the agent,
and deletes it when the agent hibernates or stops. The key's create_revision is the
instance's **fencing token**: etcd revisions only grow, so every later claim of the same
key (after a release or after the holder's lease expired) has a larger token, and
PostgreSQL refuses writes made with an older one (`cloche.cluster.pgfence`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import quote

from cloche.cluster.etcd import Entry, Etcd
from cloche.cluster.session import Session


@dataclass(frozen=True)
class Claim:
    """A held instance: `token` is its fencing token, to attach to every write it makes."""

    app: str
    key: str
    node: str
    token: int


class InstanceHeld(Exception):
    """The instance is already claimed, by `holder`."""

    def __init__(self, holder: Claim) -> None:
        super().__init__(f"{holder.app}/{holder.key} is held by node {holder.node} (token {holder.token})")
        self.holder = holder


def instance_key(app: str, key: str) -> str:
    return f"instances/{quote(app, safe='')}/{quote(key, safe='')}"


def _claim(app: str, key: str, entry: Entry) -> Claim:
    return Claim(app, key, json.loads(entry.value)["node"], entry.create_revision)


async def claim(etcd: Etcd, session: Session, app: str, key: str, node: str) -> Claim:
    """Claim the instance `(app, key)` for `node`, under `session`'s lease. Raises
    `InstanceHeld` if someone holds it, and `Fenced` if the session may no longer act.
    A claim this very session already holds is returned as held: that is a retry whose
    first answer was lost (a deadline hit after etcd committed), and refusing it would
    lock the instance for as long as the session lives."""
    session.check()
    created, entry = await etcd.create(instance_key(app, key), json.dumps({"node": node}).encode(), lease=session.lease)
    held = _claim(app, key, entry)
    if not created and not (entry.lease == session.lease and held.node == node):
        raise InstanceHeld(held)
    session.check()  # the lease may have fenced while the transaction was in flight
    return held


async def release(etcd: Etcd, held: Claim) -> bool:
    """Give the instance up (hibernate, stop). False if this claim no longer held it."""
    return await etcd.delete_if(instance_key(held.app, held.key), held.token)


async def holder(etcd: Etcd, app: str, key: str) -> Claim | None:
    """Who holds `(app, key)` now, if anyone."""
    entry = await etcd.get(instance_key(app, key))
    return None if entry is None else _claim(app, key, entry)
