"""REST/JSON beside gRPC: a gateway on its own port (`--http-port`), from the same contract.

Routes come from the `google.api.http` annotations of the .proto (POST /v1/search,
GET /v1/info, ...). A request body is parsed with protobuf's own JSON mapping
(lowerCamelCase or proto names; unknown fields are an error), then the gateway calls
the server's own gRPC service over a private Unix socket, so validation, limits,
auth (the `Authorization` header is passed on as is), admission control, batching,
metrics and logs are exactly those of a gRPC call. Answers are the response message
in the JSON mapping (every field present, zero values included); errors are
gRPC-Gateway's shape, `{"code": <gRPC code>, "message": ..., "details": []}`, with
gRPC-Gateway's HTTP status for the gRPC status. `GET /openapi.json` serves the
OpenAPI document generated from the .proto (`server/generated/search.openapi.json`).

Framing is strict, since a request the gateway refuses must never leave bytes that
the next read would take for a request (request smuggling / desync): one
Content-Length of digits only (a negative or repeated one is refused), no
Transfer-Encoding, and every refusal made before the body is read closes the
connection. A request's line, headers and body must arrive within
REQUEST_SECONDS in all (a client trickling a byte at a time cannot hold a slot), and
bodies must be `application/json` (so a browser page on another site cannot send a
write as a "simple" cross-site request; no CORS headers are sent). Any other method
gets 405 with a JSON body.

A thread serves each connection, so open connections are capped (`max_connections`):
one beyond the cap gets a 503 at once (plain HTTP) or is closed (HTTPS) and is logged.
The TLS handshake runs in the connection's thread under the idle timeout: done in
the accepting thread (Python's default), one client that connects and sends nothing
stalled every other client.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import ssl
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
from google.api import annotations_pb2
from google.protobuf import json_format

from siamese_search.server.generated import search_pb2 as pb

log = logging.getLogger("siamese.server")

OPENAPI_FILE = Path(__file__).with_name("generated") / "search.openapi.json"
SERVICE = pb.DESCRIPTOR.services_by_name["SearchService"]

#: gRPC-Gateway's runtime.HTTPStatusFromCode
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}
IDLE_SECONDS = 30.0
#: a request's line, headers and body must all arrive within this many seconds
REQUEST_SECONDS = 30.0
_DIGITS = re.compile(r"^[0-9]{1,18}$")
_FULL = json.dumps(
    {
        "code": grpc.StatusCode.UNAVAILABLE.value[0],
        "message": "the REST gateway has as many open connections as it serves; retry later, "
        "reuse connections, or use gRPC",
        "details": [],
    }
).encode("utf-8")
_TIMEOUT = re.compile(r"^(\d{1,8})([HMSmun])$")
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


class Route:
    def __init__(self, method):
        rule = method.GetOptions().Extensions[annotations_pb2.http]
        self.verb, self.path = next(
            (verb.upper(), getattr(rule, verb))
            for verb in ("get", "post", "put", "delete", "patch")
            if getattr(rule, verb)
        )
        self.has_body = rule.body == "*"
        self.full_name = f"/{SERVICE.full_name}/{method.name}"
        self.request_class = getattr(pb, method.input_type.name)
        self.response_class = getattr(pb, method.output_type.name)


def routes() -> dict[tuple[str, str], Route]:
    table = {}
    for method in SERVICE.methods:
        route = Route(method)
        table[(route.verb, route.path)] = route
    return table


class RestGateway:
    """The HTTP server; `start()` serves in a thread, `stop()` ends it."""

    def __init__(
        self,
        grpc_target: str,
        host: str,
        port: int,
        max_body_bytes: int,
        max_connections: int,
        metrics,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
    ):
        """`metrics` (server.metrics.Metrics) counts open and refused connections."""
        self.channel = grpc.insecure_channel(grpc_target)
        self.routes = routes()
        self.max_body_bytes = max_body_bytes
        self.openapi = OPENAPI_FILE.read_bytes()
        self._calls = {
            route.full_name: self.channel.unary_unary(
                route.full_name,
                request_serializer=route.request_class.SerializeToString,
                response_deserializer=route.response_class.FromString,
            )
            for route in self.routes.values()
        }
        gateway = self

        class Handler(_Handler):
            owner = gateway

        self.httpd = _HttpServer((host, port), Handler, max_connections, metrics)
        if tls_cert and tls_key:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls_cert), str(tls_key))
            # the handshake is done by the connection's thread (_Handler.setup)
            self.httpd.socket = context.wrap_socket(
                self.httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="rest-gateway", daemon=True
        )

    def start(self) -> RestGateway:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.channel.close()


class _HttpServer(ThreadingHTTPServer):
    """A thread per connection, at most `max_connections` at once."""

    daemon_threads = True

    def __init__(self, address, handler, max_connections: int, metrics):
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)
        self.max_connections = max_connections
        self._metrics = metrics

    def process_request(self, request, client_address):
        if self._slots.acquire(blocking=False):
            self._metrics.rest_connections.inc()
            super().process_request(request, client_address)  # the thread releases it
            return
        self._metrics.rest_refused.inc()
        log.warning(
            "rest_connection_refused",
            extra={"fields": {"client": client_address[0], "open": self.max_connections}},
        )
        if not isinstance(request, ssl.SSLSocket):  # TLS would need a handshake first
            try:
                # read what the client sent already: closing with unread bytes resets the
                # connection, and the client may lose the answer; a fresh socket's send
                # buffer takes the answer without blocking
                request.recv(65536, socket.MSG_DONTWAIT)
            except OSError:
                pass
            try:
                request.send(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_FULL), _FULL),
                    socket.MSG_DONTWAIT,
                )
            except OSError:
                pass
        self.shutdown_request(request)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()
            self._metrics.rest_connections.dec()

    def handle_error(self, request, client_address):
        """A connection's trouble (a failed TLS handshake, a reset, a timeout) is one
        log line; anything else is a bug here, logged with its traceback. Neither goes
        to stderr as socketserver's default does."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):  # ssl.SSLError and socket timeouts included
            log.warning(
                "rest_connection_error",
                extra={"fields": {"client": client_address[0], "error": repr(error)[:300]}},
            )
        else:
            log.exception("rest_gateway_error")


class _Handler(BaseHTTPRequestHandler):
    owner: RestGateway
    protocol_version = "HTTP/1.1"
    server_version = "siamese-search-gateway"
    #: seconds a connection may sit idle (or trickle a request) before it is closed, so
    #: idle keep-alive or slow clients cannot hold the gateway's threads for ever
    timeout = IDLE_SECONDS

    def setup(self):
        self.request.settimeout(self.timeout)
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()  # under the idle timeout, in this thread
        super().setup()

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # calls are logged and counted by the gRPC service behind

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _not_allowed(self) -> None:
        """Methods no route takes (HEAD, OPTIONS, PATCH, TRACE, ...): 405 in JSON."""
        self.close_connection = True  # a body, if any, is not read
        self._error(
            HTTPStatus.METHOD_NOT_ALLOWED,
            grpc.StatusCode.UNIMPLEMENTED,
            f"method {self.command} is not served; GET /openapi.json lists the routes",
        )

    do_HEAD = do_OPTIONS = do_PATCH = do_TRACE = do_CONNECT = _not_allowed

    def handle_one_request(self):
        """One request under REQUEST_SECONDS for its line, headers and body (the socket
        timeout alone bounds each read, not the request): when it runs out, the socket
        is shut down and the connection ends."""
        self._deadline = threading.Timer(REQUEST_SECONDS, self._out_of_time)
        self._deadline.daemon = True
        self._deadline.start()
        try:
            super().handle_one_request()
        finally:
            self._deadline.cancel()

    def _out_of_time(self) -> None:
        self.close_connection = True
        try:
            self.request.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _dispatch(self, verb: str) -> None:
        path = self.path.split("?", 1)[0]
        if self.headers.get_all("Transfer-Encoding"):
            self._refuse(411, "send the body with a Content-Length (no chunked bodies)")
            return
        if verb == "GET" and path == "/openapi.json":
            self._send(200, self.owner.openapi)
            return
        route = self.owner.routes.get((verb, path))
        if route is None:
            known = any(p == path for _, p in self.owner.routes)
            http = HTTPStatus.METHOD_NOT_ALLOWED if known else HTTPStatus.NOT_FOUND
            self.close_connection = True  # its body, if any, is not read
            self._error(
                http,
                grpc.StatusCode.UNIMPLEMENTED if known else grpc.StatusCode.NOT_FOUND,
                f"no route {verb} {path}; GET /openapi.json lists them",
            )
            return
        try:
            request = self._read_request(route)
        except _BadRequest as error:
            self._refuse(error.http, str(error))
            return
        self._deadline.cancel()  # the request is in; the call has its own deadline
        values = self.headers.get_all("Authorization", [])
        if not all(value.isascii() and value.isprintable() for value in values):
            self._error(
                HTTPStatus.UNAUTHORIZED,
                grpc.StatusCode.UNAUTHENTICATED,
                "the Authorization header must be printable ASCII: 'Bearer <token>'",
            )
            return
        metadata = tuple(("authorization", value) for value in values)
        timeout = _timeout(self.headers.get("Grpc-Timeout"))
        try:
            response = self.owner._calls[route.full_name](
                request, timeout=timeout, metadata=metadata
            )
        except grpc.RpcError as error:
            code = error.code()
            self._error(HTTP_STATUS.get(code, 500), code, error.details() or code.name)
            return
        body = json_format.MessageToJson(
            response, always_print_fields_with_no_presence=True, indent=None
        )
        self._send(200, body.encode("utf-8"))

    def _refuse(self, http: int, message: str) -> None:
        """Answer a request refused before its body was read, and end the connection:
        what is left unread must never be parsed as the next request."""
        self.close_connection = True
        self._error(http, grpc.StatusCode.INVALID_ARGUMENT, message)

    def _read_request(self, route: Route):
        lengths = self.headers.get_all("Content-Length") or []
        if len(lengths) > 1:
            raise _BadRequest(400, "send one Content-Length header, not several")
        length_header = lengths[0].strip() if lengths else None
        if route.has_body and length_header is None:
            raise _BadRequest(411, "send the body with a Content-Length")
        if length_header is not None and not _DIGITS.match(length_header):
            raise _BadRequest(400, f"Content-Length {length_header[:40]!r} is not a byte count")
        length = int(length_header or 0)
        if length > self.owner.max_body_bytes:
            raise _BadRequest(
                413,
                f"the body has {length} bytes; the limit is {self.owner.max_body_bytes}. "
                "Split the call (the server's limits are in GET /v1/info)",
            )
        if route.has_body:
            kind = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
            if kind != "application/json":
                raise _BadRequest(
                    415, "send the body as JSON with 'Content-Type: application/json'"
                )
        if not route.has_body and length:
            raise _BadRequest(400, f"{route.verb} {route.path} takes no body")
        raw = self.rfile.read(length) if length else b""
        if len(raw) != length:
            raise _BadRequest(400, f"the body ended after {len(raw)} of {length} bytes")
        request = route.request_class()
        if route.has_body:
            try:
                json_format.Parse(raw.decode("utf-8"), request)
            except (json_format.ParseError, UnicodeDecodeError, ValueError) as error:
                message = str(error)
                raise _BadRequest(
                    400,
                    f"the body is not a valid {route.request_class.__name__} in JSON: "
                    f"{message[:300]}",
                ) from None
        return request

    def _error(self, http: int, code: grpc.StatusCode, message: str) -> None:
        body = {"code": code.value[0], "message": message[:2000], "details": []}
        self._send(int(http), json.dumps(body).encode("utf-8"))

    def _send(self, http: int, body: bytes) -> None:
        self.send_response(http)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _BadRequest(Exception):
    def __init__(self, http: int, message: str):
        super().__init__(message)
        self.http = http


def _timeout(header: str | None) -> float | None:
    """gRPC-Gateway's `Grpc-Timeout` header (e.g. `5S`, `200m`); None: no deadline."""
    if not header:
        return None
    match = _TIMEOUT.match(header.strip())
    if not match:
        return None
    return int(match[1]) * _UNITS[match[2]]
