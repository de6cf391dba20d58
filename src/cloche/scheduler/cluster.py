"""The cluster state a scheduler decides against: nodes, and what is placed on each.

`reserve` is the Kubernetes framework's Reserve step: the allocation is counted on the
node the moment the decision is made, so the next decision sees it even before the
sandbox really runs; `release` undoes it when the sandbox goes (or the create fails).
"""

from __future__ import annotations

from collections.abc import Iterable

from cloche.scheduler.model import ZERO, Node, Resources


class Cluster:
    def __init__(self, nodes: Iterable[Node] = ()) -> None:
        self.nodes: list[Node] = []
        self.by_id: dict[str, Node] = {}
        self.by_region: dict[str, list[Node]] = {}
        self.placed: dict[str, tuple[str, Resources]] = {}  # key -> (node id, request)
        self.holders: dict[str, set[str]] = {}  # layer id -> node ids that keep it locally
        for n in nodes:
            self.add(n)

    def __len__(self) -> int:
        return len(self.nodes)

    def add(self, node: Node) -> None:
        if node.id in self.by_id:
            raise ValueError(f"node {node.id} already in the cluster")
        self.nodes.append(node)
        self.by_id[node.id] = node
        self.by_region.setdefault(node.region, []).append(node)
        for item in node.local:
            self.holders.setdefault(item, set()).add(node.id)

    def remove(self, node_id: str) -> Node:
        node = self.by_id.pop(node_id)
        self.nodes.remove(node)
        self.by_region[node.region].remove(node)
        for item in node.local:
            self.holders.get(item, set()).discard(node_id)
        for key in [k for k, (nid, _) in self.placed.items() if nid == node_id]:
            del self.placed[key]
        return node

    def reserve(self, node: Node, key: str, request: Resources) -> None:
        if key in self.placed:
            self.release(key)
        node.allocated = node.allocated + request
        self.placed[key] = (node.id, request)

    def release(self, key: str) -> Resources:
        entry = self.placed.pop(key, None)
        if entry is None:
            return ZERO
        node = self.by_id.get(entry[0])
        if node is not None:
            node.allocated = node.allocated - entry[1]
        return entry[1]

    def node_of(self, key: str) -> Node | None:
        entry = self.placed.get(key)
        return self.by_id.get(entry[0]) if entry else None

    def hold(self, node: Node, item: str) -> None:
        """The node keeps `item` (an upper layer or snapshot) on its local disk."""
        node.local.add(item)
        self.holders.setdefault(item, set()).add(node.id)

    def drop(self, node: Node, item: str) -> None:
        node.local.discard(item)
        holders = self.holders.get(item)
        if holders is not None:
            holders.discard(node.id)
            if not holders:
                del self.holders[item]
