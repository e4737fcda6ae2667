"""Cross-cutting concerns of every call: bearer-token auth, metrics and access logs."""

from __future__ import annotations

import hmac
import logging
import time

import grpc

log = logging.getLogger("siamese.server")
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)  # probes need no token


def _abort_handler(code: grpc.StatusCode, message: str):
    def abort(request, context):
        context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(abort)


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Every call but health checks must carry `authorization: Bearer <token>`."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation, details):
        if details.method.startswith(OPEN_METHOD_PREFIXES):
            return continuation(details)
        metadata = dict(details.invocation_metadata or ())
        given = str(metadata.get("authorization", "")).encode()
        if hmac.compare_digest(given, self._expected):
            return continuation(details)
        handler = continuation(details)
        if handler is not None and handler.unary_unary is None:
            # streaming methods (reflection, health Watch) get a streaming refusal
            def refuse_stream(request_or_iterator, context):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

            return (
                grpc.stream_stream_rpc_method_handler(refuse_stream)
                if handler.stream_stream is not None
                else grpc.unary_stream_rpc_method_handler(refuse_stream)
            )
        return _abort_handler(
            grpc.StatusCode.UNAUTHENTICATED,
            "missing or wrong bearer token: send metadata 'authorization: Bearer <token>'",
        )


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts calls by method and status, and times them, for unary RPCs."""

    def __init__(self, metrics):
        self.metrics = metrics

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = details.method.rsplit("/", 1)[-1]
        inner = handler.unary_unary
        metrics = self.metrics

        def timed(request, context):
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return inner(request, context)
            except Exception:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
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
            timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
