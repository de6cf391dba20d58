"""Prometheus metrics, on a registry of our own so several servers can share a process."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from cloche.node.net.firewall import Counters

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class NetworkCollector(Collector):
    """Per-sandbox traffic, read from the node's nftables counters at scrape time."""

    def __init__(self, source: Callable[[], Mapping[str, Counters]]) -> None:
        self.source = source

    def collect(self) -> Iterator[CounterMetricFamily]:
        nbytes = CounterMetricFamily("cloche_sandbox_network_bytes", "Bytes through a sandbox's link",
                                     labels=["sandbox", "direction"])  # fmt: skip
        packets = CounterMetricFamily("cloche_sandbox_network_packets", "Packets through a sandbox's link",
                                      labels=["sandbox", "direction"])  # fmt: skip
        denied = CounterMetricFamily("cloche_sandbox_network_denied", "Connections the policy denied",
                                     labels=["sandbox"])  # fmt: skip
        for sandbox_id, c in self.source().items():
            nbytes.add_metric([sandbox_id, "out"], c.bytes_out)
            nbytes.add_metric([sandbox_id, "in"], c.bytes_in)
            packets.add_metric([sandbox_id, "out"], c.packets_out)
            packets.add_metric([sandbox_id, "in"], c.packets_in)
            denied.add_metric([sandbox_id], c.denied)
        yield from (nbytes, packets, denied)


class EgressProxyCollector(Collector):
    """The node's egress proxy: connections intercepted or passed through, requests
    transformed, secrets refused, upstream failures (read at scrape time)."""

    def __init__(self, source: Callable[[], Mapping[str, int]]) -> None:
        self.source = source

    def collect(self) -> Iterator[CounterMetricFamily]:
        events = CounterMetricFamily("cloche_egress_proxy_events", "Egress proxy events by kind", labels=["event"])
        for event, count in sorted(self.source().items()):
            events.add_metric([event], count)
        yield events


class Metrics:
    def __init__(self, network: Callable[[], Mapping[str, Counters]] | None = None,
                 egress_proxy: Callable[[], Mapping[str, int]] | None = None) -> None:  # fmt: skip
        self.registry = CollectorRegistry()
        r = self.registry
        if network is not None:
            r.register(NetworkCollector(network))
        if egress_proxy is not None:
            r.register(EgressProxyCollector(egress_proxy))
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
