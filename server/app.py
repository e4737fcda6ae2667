"""Assembling the gRPC server: services, interceptors, limits, TLS, reload, shutdown."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from siamese_search.core.errors import UserError, describe_os_error
from siamese_search.core.native_threads import limit_native_threads
from siamese_search.indexer.store import VersionSource
from siamese_search.server import collection_dirs
from siamese_search.server.batching import Batcher
from siamese_search.server.collections import (
    Collection,
    CollectionOpener,
    Collections,
    name_for,
)
from siamese_search.server.config import ServerConfig
from siamese_search.server.gateway import RestGateway
from siamese_search.server.generated import search_pb2_grpc as pb_grpc
from siamese_search.server.interceptors import (
    BearerTokenInterceptor,
    MetricsInterceptor,
    StreamCapInterceptor,
)
from siamese_search.server.metrics import Metrics, channelz_server_ids
from siamese_search.server.reflection import enable_reflection
from siamese_search.server.service import SERVICE_NAME, SearchService
from siamese_search.server.writes import Committer

log = logging.getLogger("siamese.server")


def _model_dir(config: ServerConfig, source: VersionSource) -> Path:
    """--model, or the model recorded in the current index version's manifest."""
    if config.model_dir is not None:
        return Path(config.model_dir)
    try:
        return source.model_directory()
    except UserError as error:
        raise UserError(
            f"{error}. Or give --model so the server can start and wait for one."
        ) from None


class SearchServer:
    """A running siamese-search gRPC server (start / stop / reload) serving one or
    more collections (server.collections)."""

    def __init__(self, config: ServerConfig):
        self.config = config
        limit_native_threads(config.threads)
        self.metrics = Metrics()
        # before the first version loads: its warm-up loads the model in the encoding
        # processes too
        self.batcher = Batcher(
            config.batching,
            self.metrics,
            thread_setup=lambda: limit_native_threads(config.threads),
            blas_threads=config.threads,
        )
        self._stopped = threading.Event()
        self._started = False
        self.health = health.HealthServicer(experimental_non_blocking=True)
        try:
            self.collections = self._open_collections(config)
            self._set_up(config)
        except BaseException:
            collections = getattr(self, "collections", None)
            if collections is not None:
                collections.stop()
            self.batcher.stop()
            raise

    def _open_collections(self, config: ServerConfig) -> Collections:
        """Every collection the flags name: --index DIR (or a Milvus alias; pinned to
        --model when given) and each index directory under --collections ROOT."""
        opener = CollectionOpener(config, self.batcher.warm, self.metrics, self._set_health)
        collections = Collections(opener, config.collections_dir, config.default_collection)
        if config.index_dir is not None or config.milvus is not None and not config.collections_dir:
            source = config.source()
            named = config.index_dir or Path(config.milvus.name if config.milvus else "default")
            name = name_for(named)
            if config.model_dir is None:
                _model_dir(config, source)  # names what to fix when nothing names a model
            first = opener.open(name, config.index_dir, source, config.model_dir)
            if first.error is not None and config.collections_dir is None:
                raise UserError(first.error)  # a one-index server says why at once
            collections.add(first)
            if collections.default is None:
                collections.default = name
        if config.collections_dir is not None:
            served = {c.index_dir.resolve() for c in collections.all() if c.index_dir}
            found = collection_dirs.served_directories(config.collections_dir)
            # what a killed server's drops and creates left
            collection_dirs.finish_drops(config.collections_dir, collections.forget_in_backend)
            collection_dirs.sweep_unfinished_creates(config.collections_dir)
            for directory in found:
                if directory.resolve() not in served:
                    source = config.source_for(directory)
                    collections.add(opener.open(directory.name, directory, source, None))
        if collections.default is None and len(collections.all()) == 1:
            collections.default = collections.all()[0].name
        if collections.default is not None:
            collections.get(collections.default)  # --default-collection names one served
        return collections

    def _set_up(self, config: ServerConfig) -> None:
        """The gRPC server, its services and the REST gateway."""
        interceptors: list[grpc.ServerInterceptor] = [
            StreamCapInterceptor(config.max_streams, config.max_streams_per_client, self.metrics),
            MetricsInterceptor(self.metrics),
        ]
        if config.token or config.admin_token:
            interceptors.insert(
                0, BearerTokenInterceptor(config.token, config.admin_token, self.metrics)
            )
        # Threads: `workers` for unary calls plus one per allowed stream, so idle health
        # Watch or reflection streams never take a unary call's thread. Calls beyond
        # threads + `max_queued` are refused at once (RESOURCE_EXHAUSTED) by gRPC itself,
        # which bounds request memory to max_concurrent_calls x max_request_bytes, plus
        # what refused calls sent before they were refused: with HTTP/2 BDP probing on
        # (gRPC's default) the transport widens every stream's window to whole messages,
        # so each refused call had its full 0.4 MB in memory: 4,000 of them over 128
        # connections took +485 MB against a bound of +236 MB; with it off a stream keeps
        # HTTP/2's default window (64 KiB) and the same burst +132 MB
        # (bench/burst_memory.py; ServerConfig.request_memory_bound).
        servers_before = channelz_server_ids()
        self.grpc_server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=config.workers + config.max_streams, thread_name_prefix="grpc-worker"
            ),
            interceptors=interceptors,
            maximum_concurrent_rpcs=config.max_concurrent_calls,
            options=[
                ("grpc.max_receive_message_length", config.limits.max_request_bytes),
                ("grpc.max_send_message_length", config.max_send_bytes),
                ("grpc.so_reuseport", 0),  # a busy port is an error, not a shared socket
                ("grpc.http2.bdp_probe", 0),  # see above: refused calls stay small
                ("grpc.max_connection_idle_ms", int(config.grpc_idle_seconds * 1000)),
            ],
        )
        created = channelz_server_ids() - servers_before
        if len(created) == 1:  # (another server made at the same moment: no core counts)
            self.metrics.count_core_calls(created.pop())
        self.service = SearchService(
            self.collections,
            config.limits,
            self.batcher,
            config.workers + config.max_streams,  # gRPC's thread pool
            self.metrics,
            config.max_send_bytes,
        )
        pb_grpc.add_SearchServiceServicer_to_server(self.service, self.grpc_server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc_server)
        enable_reflection((SERVICE_NAME, health.SERVICE_NAME), self.grpc_server)

        address = f"{config.host}:{config.port}"
        try:
            if config.tls_cert and config.tls_key:
                credentials = grpc.ssl_server_credentials(
                    [(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())]
                )
                self.port = self.grpc_server.add_secure_port(address, credentials)
            else:
                self.port = self.grpc_server.add_insecure_port(address)
        except RuntimeError as error:
            raise UserError(f"cannot listen on {address} ({error}); is the port in use?") from None
        self.gateway = None
        self.http_port: int | None = None
        if config.http_port is not None:
            self.gateway = self._gateway(config)
            self.http_port = self.gateway.port
        self.metrics_server = None

    # ---- the default collection (what calls naming none reach) ---------------------

    @property
    def default(self) -> Collection:
        return self.collections.get("")

    @property
    def holder(self):
        """The default collection's serving holder."""
        return self.default.holder

    @property
    def committer(self) -> Committer | None:
        writes = self.default.writes
        return writes if isinstance(writes, Committer) else None

    @property
    def model(self):
        """The model serving the default collection now (a new version can bring another)."""
        holder = self.default.holder
        assert holder is not None, self.default.problem
        return holder.model

    def _serving_index(self, collection: str = ""):
        """A collection's serving index version ("": the default one's; None: nothing
        serves yet, or no such collection, which the call itself will be told)."""
        try:
            holder = self.collections.get(collection).holder
        except Exception:  # no such collection, or a name that is none
            return None
        serving = holder.current if holder is not None else None
        return None if serving is None else serving.index

    def _serving_fields(self, collection: str = "") -> dict[str, set[str]] | None:
        """The metadata fields of a collection's serving version."""
        index = self._serving_index(collection)
        return None if index is None else index.metadata_keys()

    def _serving_labelled(self, collection: str = "") -> bool | None:
        """Whether a collection's index takes labels (None: nothing serves)."""
        index = self._serving_index(collection)
        return None if index is None else index.has_labels

    def _gateway(self, config: ServerConfig) -> RestGateway:
        """The REST/JSON gateway, calling this server over a private Unix socket."""
        self._socket_dir = tempfile.TemporaryDirectory(prefix="siamese-gateway-")
        os.chmod(self._socket_dir.name, 0o700)
        target = f"unix:{self._socket_dir.name}/grpc.sock"
        self.grpc_server.add_insecure_port(target)
        try:
            return RestGateway(
                target,
                config.host,
                int(config.http_port or 0),
                limits=config.limits,
                labelled=self._serving_labelled,
                fields=self._serving_fields,
                manages_collections=config.collections_dir is not None,
                max_connections=config.http_max_connections,
                max_connections_per_client=config.http_max_connections_per_client,
                metrics=self.metrics,
                tls_cert=config.tls_cert,
                tls_key=config.tls_key,
            )
        except OSError as error:
            raise UserError(
                f"cannot serve REST on {config.host}:{config.http_port} "
                f"({describe_os_error(error)}); choose another --http-port"
            ) from None

    def start(self) -> SearchServer:
        self.grpc_server.start()
        if self.gateway is not None:
            self.gateway.start()
        if self.config.metrics_port is not None:
            try:
                self.metrics_server = self.metrics.serve(self.config.host, self.config.metrics_port)
            except OSError as error:
                self.grpc_server.stop(0)
                raise UserError(
                    f"cannot serve metrics on {self.config.host}:{self.config.metrics_port} "
                    f"({describe_os_error(error)}); choose another --metrics-port"
                ) from None
        self.collections.start()
        # honest readiness: SERVING only once a model and an index version are loaded
        # and warmed; until then NOT_SERVING (a collection's holder flips it on its
        # first swap)
        self._started = True
        for collection in self.collections.all():
            self._set_health(collection.name, collection.serving)
        log.info(
            "listening",
            extra={
                "fields": {
                    "address": f"{self.config.host}:{self.port}",
                    "tls": bool(self.config.tls_cert),
                    "auth": bool(self.config.token),
                    "collections": {
                        c.name: c.holder.current.index.name
                        if c.holder is not None and c.holder.current is not None
                        else None
                        for c in self.collections.all()
                    },
                    "default_collection": self.collections.default,
                    "metrics_port": self.config.metrics_port,
                    "http_port": self.http_port,
                    "writes": any(isinstance(c.writes, Committer) for c in self.collections.all()),
                    # who may write: any client (open), or holders of a token
                    "writes_need_token": bool(self.config.token or self.config.admin_token),
                }
            },
        )
        return self

    def _set_health(self, name: str, serving: bool) -> None:
        """A collection's health (`collection/<name>`); the default collection's is
        also the server's ("" and the service name), as before collections."""
        if self._stopped.is_set() or not self._started:
            return
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self.health.set(f"collection/{name}", status)
        if name == self.collections.default:
            self.health.set("", status)
            self.health.set(SERVICE_NAME, status)

    def reload(self) -> None:
        """Every collection loads its current version now (SIGHUP)."""
        for collection in self.collections.all():
            if collection.holder is not None:
                collection.holder.reload()

    def stop(self, grace: float | None = None) -> None:
        """Graceful stop: health NOT_SERVING first, then drain in-flight calls."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.config.grace_seconds if grace is None else grace
        self.health.enter_graceful_shutdown()
        log.info("draining", extra={"fields": {"grace_seconds": grace}})
        if self.gateway is not None:
            self.gateway.stop()
        self.grpc_server.stop(grace).wait()
        self.service.scroll_holds.close()
        self.collections.stop()
        self.batcher.stop()
        if self.metrics_server is not None:
            self.metrics_server[0].shutdown()
        log.info("stopped")

    def wait(self) -> None:
        self.grpc_server.wait_for_termination()
