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
from siamese_search.indexer.options import BuildOptions
from siamese_search.indexer.store import VersionSource
from siamese_search.server.batching import Batcher
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
from siamese_search.server.state import ReloadWatcher, ServingHolder
from siamese_search.server.writes import Committer, WritesUnavailable

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
    """A running siamese-search gRPC server (start / stop / reload)."""

    def __init__(self, config: ServerConfig):
        from siamese_search.core.model_artifact import load_model

        self.config = config
        limit_native_threads(config.threads)
        source = config.source()
        initial_model = load_model(_model_dir(config, source), threads=config.threads)
        self.metrics = Metrics()
        # before the first version loads: its warm-up loads the model in the encoding
        # processes too
        self.batcher = Batcher(
            config.batching,
            self.metrics,
            thread_setup=lambda: limit_native_threads(config.threads),
            blas_threads=config.threads,
        )
        try:
            self._set_up(config, source, initial_model)
        except BaseException:
            self.batcher.stop()
            raise

    def _set_up(self, config: ServerConfig, source: VersionSource, initial_model) -> None:
        """Everything after the batcher: on any error the caller stops its processes."""
        from siamese_search.core.model_artifact import load_model

        self.holder = ServingHolder(
            source,
            initial_model,
            # without --model the server follows the model each version was built with
            # (hot swap on retrain); --model pins it and versions of another are refused
            load_model=(
                None
                if config.model_dir is not None
                else lambda directory: load_model(directory, threads=config.threads)
            ),
        )
        self.holder.metrics = self.metrics
        self.holder.warm_model = self.batcher.warm
        outcome = self.holder.reload()
        if not outcome.changed:
            log.warning("no_index_at_start", extra={"fields": {"message": outcome.message}})

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
            ],
        )
        created = channelz_server_ids() - servers_before
        if len(created) == 1:  # (another server made at the same moment: no core counts)
            self.metrics.count_core_calls(created.pop())
        self.committer, writes_off = self._writes(config)
        pb_grpc.add_SearchServiceServicer_to_server(
            SearchService(self.holder, config.limits, self.batcher, self.committer or writes_off),
            self.grpc_server,
        )
        self.health = health.HealthServicer(experimental_non_blocking=True)
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
            self._stop_writes()
            raise UserError(f"cannot listen on {address} ({error}); is the port in use?") from None
        self.gateway = None
        self.http_port: int | None = None
        if config.http_port is not None:
            self.gateway = self._gateway(config)
            self.http_port = self.gateway.port
        self.watcher = (
            ReloadWatcher(self.holder, config.reload_interval)
            if config.reload_interval > 0
            else None
        )
        self.metrics_server = None
        self._stopped = threading.Event()

    def _writes(self, config: ServerConfig) -> tuple[Committer | None, str]:
        """The write committer (Upsert / Delete), or None and why writes are off."""
        if not config.writes:
            return None, "this server takes no writes (started with --no-writes)"
        if config.index_dir is None:
            return None, (
                "this server serves a Milvus alias without an index directory, so it takes "
                "no writes; send them to the server (or siamese-index) that has --index"
            )
        try:
            committer = Committer(
                Path(config.index_dir),
                config.commit_policy,
                model_for_writes=lambda: self.holder.model,
                published=self._published,
                options=BuildOptions(show_progress=False, milvus=config.milvus),
                salvage_journal=config.salvage_journal,
            )
        except WritesUnavailable as error:
            log.warning("writes_off", extra={"fields": {"reason": str(error)}})
            return None, str(error)
        self.metrics.commit_failing.set_function(lambda: float(committer.failing_since is not None))
        self.metrics.pending_writes.set_function(
            lambda: float(len(committer.journal.records)) if committer.journal else 0.0
        )
        return committer, ""

    def _published(self, version: str) -> None:
        """A commit published `version`: serve it now (not at the next poll)."""
        outcome = self.holder.reload(forced=True)
        serving = self.holder.current
        if serving is None or serving.index.name != version:
            raise RuntimeError(f"version {version} was published but not loaded: {outcome.message}")

    def _serving_fields(self) -> dict[str, set[str]] | None:
        """The metadata fields of the serving version (None: nothing serves yet)."""
        serving = self.holder.current
        if serving is None:
            return None
        return serving.index.metadata_keys()

    def _serving_labelled(self) -> bool | None:
        """Whether the serving index takes labels (None: nothing serves yet)."""
        serving = self.holder.current
        return None if serving is None else serving.index.has_labels

    def _stop_writes(self) -> None:
        if self.committer is not None:
            self.committer.stop()

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
                max_connections=config.http_max_connections,
                metrics=self.metrics,
                tls_cert=config.tls_cert,
                tls_key=config.tls_key,
            )
        except OSError as error:
            self._stop_writes()
            self.batcher.stop()
            raise UserError(
                f"cannot serve REST on {config.host}:{config.http_port} "
                f"({describe_os_error(error)}); choose another --http-port"
            ) from None

    @property
    def model(self):
        """The model serving now (a new index version can bring another)."""
        return self.holder.model

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
        if self.watcher:
            self.watcher.start()
        # honest readiness: SERVING only once a model and an index version are loaded
        # and warmed; until then NOT_SERVING (the holder flips it on its first swap)
        self.holder.on_serving = self._set_health
        self._set_health(self.holder.current is not None)
        serving = self.holder.current
        log.info(
            "listening",
            extra={
                "fields": {
                    "address": f"{self.config.host}:{self.port}",
                    "tls": bool(self.config.tls_cert),
                    "auth": bool(self.config.token),
                    "index_version": serving.index.name if serving else None,
                    "metrics_port": self.config.metrics_port,
                    "http_port": self.http_port,
                    "writes": self.committer is not None,
                    # who may write: any client (open), or holders of a token
                    "writes_need_token": bool(self.config.token or self.config.admin_token),
                }
            },
        )
        return self

    def _set_health(self, serving: bool) -> None:
        if self._stopped.is_set():
            return
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self.health.set("", status)
        self.health.set(SERVICE_NAME, status)

    def stop(self, grace: float | None = None) -> None:
        """Graceful stop: health NOT_SERVING first, then drain in-flight calls."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.config.grace_seconds if grace is None else grace
        self.health.enter_graceful_shutdown()
        if self.watcher:
            self.watcher.stop()
        log.info("draining", extra={"fields": {"grace_seconds": grace}})
        if self.gateway is not None:
            self.gateway.stop()
        self.grpc_server.stop(grace).wait()
        self._stop_writes()
        self.batcher.stop()
        self.holder.close()
        if self.metrics_server is not None:
            self.metrics_server[0].shutdown()
        log.info("stopped")

    def wait(self) -> None:
        self.grpc_server.wait_for_termination()
