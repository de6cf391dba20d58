"""Prometheus metrics, on a registry of our own so several servers can share a process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sandboxes = Gauge("cloche_sandboxes", "Sandboxes by state", ["state"], registry=r)
        self.create_seconds = Histogram("cloche_create_seconds", "Sandbox create latency",
                                        ["source"], buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.exec_seconds = Histogram("cloche_exec_seconds", "Exec round-trip latency",
                                      buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.pool_ready = Gauge("cloche_pool_ready", "Warm sandboxes ready", ["template"], registry=r)
        self.pool_size = Gauge("cloche_pool_size", "Warm pool target size", ["template"], registry=r)
        self.capacity = Gauge("cloche_node_capacity", "Node capacity", ["resource"], registry=r)
        self.allocated = Gauge("cloche_node_allocated", "Allocated to sandboxes", ["resource"],
                               registry=r)  # fmt: skip
        self.requests = Counter("cloche_http_requests", "HTTP requests", ["status"], registry=r)
