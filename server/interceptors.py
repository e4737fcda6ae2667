"""Cross-cutting concerns of every call: bearer-token auth, metrics and access logs."""

from __future__ import annotations

import hmac
import logging
import threading
import time

import grpc
from google.protobuf.message import DecodeError

log = logging.getLogger("siamese.server")
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)  # probes need no token


#: methods only the admin credential may call
ADMIN_METHODS = frozenset(
    f"/siamese_search.v1.SearchService/{name}"
    for name in ("Reload", "Upsert", "Delete", "CreateCollection", "DropCollection")
)


def _refusal(handler, code: grpc.StatusCode, message: str):
    """A handler of the same streaming kind that aborts with `code`."""

    def refuse(request_or_iterator, context):
        context.abort(code, message)

    if handler is None or handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(refuse)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.stream_unary_rpc_method_handler(refuse)


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Every call but health checks must carry `authorization: Bearer <token>`.

    The scheme is matched case-insensitively (RFC 7235), exactly one `authorization`
    header is accepted, tokens are compared in constant time, and admin methods
    (`Reload`, `Upsert`, `Delete`, `CreateCollection`, `DropCollection`) need the
    admin token: a query token cannot reload, write, or make or drop collections.
    Without an admin token configured, admin methods are refused while auth is on.
    Refusals are counted in metrics and logged, never with the token.
    """

    def __init__(self, token: str | None, admin_token: str | None = None, metrics=None):
        self._query = token.encode() if token else None
        self._admin = admin_token.encode() if admin_token else None
        self._metrics = metrics

    def _refuse(self, handler, method: str, code: grpc.StatusCode, reason: str, message: str):
        name = method.rsplit("/", 1)[-1]
        if self._metrics is not None:
            self._metrics.requests.labels(method=name, code=code.name).inc()
        log.warning("auth_refused", extra={"fields": {"method": name, "reason": reason}})
        return _refusal(handler, code, message)

    def intercept_service(self, continuation, details):
        method = details.method
        if method.startswith(OPEN_METHOD_PREFIXES):
            return continuation(details)
        handler = continuation(details)
        given = [
            value for key, value in (details.invocation_metadata or ()) if key == "authorization"
        ]
        if len(given) > 1:
            return self._refuse(
                handler,
                method,
                grpc.StatusCode.UNAUTHENTICATED,
                "several authorization headers",
                "send exactly one 'authorization: Bearer <token>' header",
            )
        scheme, _, credential = str(given[0] if given else "").partition(" ")
        offered = credential.strip().encode() if scheme.lower() == "bearer" else b""
        admin_ok = self._admin is not None and hmac.compare_digest(offered, self._admin)
        if method in ADMIN_METHODS:
            if admin_ok:
                return handler
            if self._admin is None:
                return self._refuse(
                    handler,
                    method,
                    grpc.StatusCode.PERMISSION_DENIED,
                    "no admin token configured",
                    "admin calls are off: start siamese-serve with --admin-token-file",
                )
            return self._refuse(
                handler,
                method,
                grpc.StatusCode.PERMISSION_DENIED,
                "not the admin token",
                "this call needs the admin token: send 'authorization: Bearer <admin token>'",
            )
        query_ok = self._query is not None and hmac.compare_digest(offered, self._query)
        if query_ok or admin_ok:
            return handler
        return self._refuse(
            handler,
            method,
            grpc.StatusCode.UNAUTHENTICATED,
            "missing or wrong token",
            "missing or wrong bearer token: send metadata 'authorization: Bearer <token>'",
        )


class StreamCapInterceptor(grpc.ServerInterceptor):
    """At most `cap` streaming calls open at once (health Watch, reflection), and at
    most `per_client` from one client address; more are refused with
    RESOURCE_EXHAUSTED, so idle streams cannot use up the worker threads, and one
    client (health Watch needs no token) cannot take every slot from the others."""

    def __init__(self, cap: int, per_client: int, metrics=None):
        self._cap = cap
        self._per_client = per_client
        self._open = 0
        self._by_client: dict[str, int] = {}
        self._lock = threading.Lock()
        self._metrics = metrics

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None or handler.unary_unary is not None:
            return handler
        name = details.method.rsplit("/", 1)[-1]
        if handler.stream_stream is not None:
            inner, wrap = handler.stream_stream, grpc.stream_stream_rpc_method_handler
        elif handler.unary_stream is not None:
            inner, wrap = handler.unary_stream, grpc.unary_stream_rpc_method_handler
        else:
            inner, wrap = handler.stream_unary, grpc.stream_unary_rpc_method_handler

        def capped(request_or_iterator, context):
            client = _client_address(context.peer())
            with self._lock:
                held = self._by_client.get(client, 0)
                if self._open >= self._cap:
                    refusal = f"{self._cap} streaming calls are open; close one or retry later"
                elif held >= self._per_client:
                    refusal = (
                        f"this client holds {held} streaming calls, the most one client may; "
                        "close one first"
                    )
                else:
                    refusal = None
                    self._open += 1
                    self._by_client[client] = held + 1
                    self._gauge()
            if refusal is not None:
                if self._metrics is not None:
                    self._metrics.requests.labels(method=name, code="RESOURCE_EXHAUSTED").inc()
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
            context.add_callback(lambda: self._release(client))
            return inner(request_or_iterator, context)

        return wrap(
            capped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _release(self, client: str) -> None:
        with self._lock:
            self._open -= 1
            left = self._by_client[client] - 1
            if left:
                self._by_client[client] = left
            else:
                del self._by_client[client]
            self._gauge()

    def _gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.open_streams.set(self._open)


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts calls by method and status, and times them, for unary RPCs.

    It also decodes the request itself (the handler gets raw bytes from gRPC), so a
    request that is not a valid message, or has text that is not UTF-8, answers
    INVALID_ARGUMENT (gRPC's own decoding failure would be INTERNAL) and is counted.
    """

    def __init__(self, metrics):
        self.metrics = metrics

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = details.method.rsplit("/", 1)[-1]
        inner = handler.unary_unary
        decode = handler.request_deserializer
        metrics = self.metrics

        def timed(raw, context):
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            metrics.in_flight.inc()
            try:
                try:
                    request = decode(raw) if decode is not None else raw
                except DecodeError:
                    code = grpc.StatusCode.INVALID_ARGUMENT
                    context.abort(
                        code,
                        f"the request is not a valid {method} request message (undecodable "
                        "bytes, or a text field that is not UTF-8)",
                    )
                return inner(request, context)
            except Exception:
                code = context.code() or code or grpc.StatusCode.UNKNOWN
                raise
            finally:
                metrics.in_flight.dec()
                elapsed = time.perf_counter() - started
                metrics.requests.labels(method=method, code=code.name).inc()
                metrics.latency.labels(method=method).observe(elapsed)
                if code is not grpc.StatusCode.OK:
                    log.info(
                        "request_failed",
                        extra={
                            "fields": {
                                "method": method,
                                "code": code.name,
                                "ms": round(elapsed * 1e3, 2),
                            }
                        },
                    )

        return grpc.unary_unary_rpc_method_handler(
            timed, request_deserializer=None, response_serializer=handler.response_serializer
        )


def _client_address(peer: str) -> str:
    """The client's address without its port: 'ipv4:10.0.0.7:51234' -> 'ipv4:10.0.0.7',
    'ipv6:[::1]:51234' -> 'ipv6:[::1]'; anything else (unix sockets) as it is."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in rest:
        return f"{kind}:{rest.rsplit(':', 1)[0]}"
    return peer
