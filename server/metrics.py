"""Prometheus metrics, on a registry of their own (several servers can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "siamese_requests_total",
            "RPCs by method and status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "siamese_request_seconds",
            "RPC latency by method",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.index_size = Gauge(
            "siamese_index_vectors", "Vectors in the serving index version", registry=self.registry
        )
        self.index_version = Gauge(
            "siamese_index_version", "Serving index version number", registry=self.registry
        )
        self.reload_failing = Gauge(
            "siamese_reload_failing",
            "1 while the last reload failed (GetInfo.last_reload_error says why)",
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "siamese_calls_in_flight", "Unary calls being worked on", registry=self.registry
        )
        self.open_streams = Gauge(
            "siamese_open_streams",
            "Streaming calls open (health Watch, reflection)",
            registry=self.registry,
        )
        self.reloads = Counter(
            "siamese_index_reloads_total",
            "Index reloads by result",
            ["result"],
            registry=self.registry,
        )

    def observe_index(self, index) -> None:
        self.index_size.set(index.count)
        self.index_version.set(int(index.name) if index.name.isdigit() else 0)

    def serve(self, host: str, port: int):
        """Start the /metrics HTTP endpoint; returns (server, thread)."""
        return start_http_server(port, addr=host, registry=self.registry)
