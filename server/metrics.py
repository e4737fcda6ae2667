"""Prometheus metrics, on a registry of their own (several servers can share a process)."""

from __future__ import annotations

import json
import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily

log = logging.getLogger("siamese.server")

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
        # per collection (label `collection`: Metrics.collection)
        self.index_size = Gauge(
            "siamese_index_vectors",
            "Vectors in the serving index version",
            ["collection"],
            registry=self.registry,
        )
        self.index_version = Gauge(
            "siamese_index_version",
            "Serving index version number",
            ["collection"],
            registry=self.registry,
        )
        self.reload_failing = Gauge(
            "siamese_reload_failing",
            "1 while the last reload failed (GetInfo.last_reload_error says why)",
            ["collection"],
            registry=self.registry,
        )
        self.commit_failing = Gauge(
            "siamese_commit_failing",
            "1 while commits of acknowledged writes fail (GetInfo.last_commit_error says why)",
            ["collection"],
            registry=self.registry,
        )
        self.pending_writes = Gauge(
            "siamese_pending_writes",
            "Acknowledged writes not yet in a served index version",
            ["collection"],
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
        self.rest_connections = Gauge(
            "siamese_rest_connections",
            "REST gateway connections open (a thread each)",
            registry=self.registry,
        )
        self.rest_refused = Counter(
            "siamese_rest_connections_refused",
            "REST gateway connections refused: as many open as --http-max-connections",
            registry=self.registry,
        )
        self.batch_texts = Histogram(
            "siamese_batch_texts",
            "Texts encoded together in one batch (dynamic batching)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.reloads = Counter(
            "siamese_index_reloads_total",
            "Index reloads by collection and result",
            ["collection", "result"],
            registry=self.registry,
        )
        self.collection_requests = Counter(
            "siamese_collection_requests_total",
            "Calls by collection and method (a call naming no collection: the default's)",
            ["collection", "method"],
            registry=self.registry,
        )

    def collection(self, name: str) -> CollectionMetrics:
        """The per-collection metrics, labelled with its name."""
        return CollectionMetrics(self, name)

    def count_core_calls(self, server_id: int) -> None:
        """Also export the calls gRPC's core counted for channelz server `server_id`.

        Some calls never reach Python's interceptors: a request over the message size
        limit is refused by the core (RESOURCE_EXHAUSTED), a call over the concurrency
        limit by grpc's own Python layer before any interceptor. Channelz counts every
        call the transport started, so `siamese_grpc_calls_total` minus what
        `siamese_requests_total` saw is what was refused before the service.
        """
        self.registry.register(_CoreCalls(server_id))

    def serve(self, host: str, port: int):
        """Start the /metrics HTTP endpoint; returns (server, thread)."""
        return start_http_server(port, addr=host, registry=self.registry)


class CollectionMetrics:
    """One collection's series of the per-index metrics (label `collection`)."""

    def __init__(self, metrics: Metrics, name: str):
        self._metrics = metrics
        self.name = name
        self.index_size = metrics.index_size.labels(collection=name)
        self.index_version = metrics.index_version.labels(collection=name)
        self.reload_failing = metrics.reload_failing.labels(collection=name)
        self.commit_failing = metrics.commit_failing.labels(collection=name)
        self.pending_writes = metrics.pending_writes.labels(collection=name)

    def observe_index(self, index) -> None:
        self.index_size.set(index.count)
        self.index_version.set(int(index.name) if index.name.isdigit() else 0)

    def reloaded(self, result: str) -> None:
        self._metrics.reloads.labels(collection=self.name, result=result).inc()

    def called(self, method: str) -> None:
        self._metrics.collection_requests.labels(collection=self.name, method=method).inc()

    def remove(self) -> None:
        """Drop the collection's series (it was dropped)."""
        metrics = self._metrics
        for gauge in (
            metrics.index_size,
            metrics.index_version,
            metrics.reload_failing,
            metrics.commit_failing,
            metrics.pending_writes,
        ):
            try:
                gauge.remove(self.name)
            except KeyError:
                pass


def channelz_server_ids() -> set[int]:
    """Ids of the gRPC servers of this process, as channelz numbers them."""
    from grpc._cython import cygrpc  # type: ignore[attr-defined]  # grpcio-channelz wraps it

    ids, start = set(), 0
    while True:
        page = json.loads(cygrpc.channelz_get_servers(start))
        for server in page.get("server", []):
            ids.add(int(server["ref"]["serverId"]))
        if page.get("end", True) or not ids:
            return ids
        start = max(ids) + 1


class _CoreCalls:
    """A Prometheus collector reading one server's call counts from channelz."""

    def __init__(self, server_id: int):
        self.server_id = server_id

    def describe(self):
        return []

    def collect(self):
        from grpc._cython import cygrpc  # type: ignore[attr-defined]

        family = CounterMetricFamily(
            "siamese_grpc_calls",
            "Calls as gRPC's core counts them (channelz), including those refused before "
            "the service saw them (oversize messages, the concurrency limit)",
            labels=["result"],
        )
        try:
            data = json.loads(cygrpc.channelz_get_server(self.server_id))["server"]["data"]
        except Exception as error:  # a metrics scrape must not fail over it
            log.warning("channelz_unreadable", extra={"fields": {"error": str(error)}})
            return
        for result in ("started", "succeeded", "failed"):
            family.add_metric([result], float(data.get(f"calls{result.capitalize()}", 0)))
        yield family
