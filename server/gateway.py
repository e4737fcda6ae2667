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
OpenAPI document generated from the .proto (`server/generated/search.openapi.json`),
with the default collection's request schemas (`?collection=NAME`: that one's).

HTTP/1.1 framing is h11's (python-hyper's sans-I/O parser, the one under uvicorn's
pure-Python mode and httpx): request line and headers capped at MAX_HEADER_BYTES,
Content-Length validated (digits only; several must agree), chunked bodies decoded,
and a connection is only reused when both sides finished their message, so a request
refused before its body was read can never leave that body to be parsed as the next
request (desync). What h11 leaves to its user, and uvicorn / hypercorn / aiohttp do
not offer either, is here: a body limit that holds for every framing (a declared
length over it is refused before a byte is read; a chunked body is cut off as it
passes it), one deadline for a whole request (REQUEST_SECONDS for line, headers and
body from its first byte, so a client trickling a byte at a time cannot hold a slot:
the servers named above only time out between requests), a cap on open connections,
and the TLS handshake in the connection's own thread. A request with both
Transfer-Encoding and Content-Length is refused (the classic smuggling pair).

Bodies must be `application/json`, so a browser page on another site cannot send a
write as a "simple" cross-site request (no CORS headers are sent). Any method no
route takes gets 405 with a JSON body.

A thread serves each connection, so open connections are capped (`max_connections`),
and so are one client address's (`max_connections_per_client`: a client holding idle
connections open, each renewed before the idle timeout, could otherwise take every
slot and shut the REST door on everyone else): one beyond either cap gets a 503 at
once (plain HTTP) or is closed (HTTPS) and is logged.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import socketserver
import ssl
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path

import grpc
import h11
import jsonschema
from google.api import annotations_pb2
from google.protobuf import json_format

from siamese_search.core.errors import DamagedArtifactError
from siamese_search.indexer import metadata as rules
from siamese_search.server import console
from siamese_search.server.config import Limits
from siamese_search.server.generated import search_pb2 as pb
from siamese_search.server.openapi import (
    NAME_PATTERN,
    NAME_RULE,
    http_bindings,
    path_fields,
    serving_document,
)
from siamese_search.server.scrolling import TOKEN_PATTERN, TOKEN_RULE

log = logging.getLogger("siamese.server")

OPENAPI_FILE = Path(__file__).with_name("generated") / "search.openapi.json"
#: served documents kept, one per shape of collection (labels or none, its fields;
#: fields change with writes): a body is checked against its collection's, and making
#: one takes ~2 ms and holds ~0.2 MB, so a server of many differently shaped
#: collections keeps theirs rather than make one per call
DOCUMENTS_KEPT = 64
#: the methods that change the set of collections (only with --collections)
LIFECYCLE = ("CreateCollection", "DropCollection")
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
#: seconds a connection may wait for the next request, or for one read, before it is
#: closed, so idle keep-alive or stalled clients cannot hold the gateway's threads
IDLE_SECONDS = 30.0
#: a request's line, headers and body must all arrive within this many seconds of its
#: first byte
REQUEST_SECONDS = 30.0
#: request line plus headers
MAX_HEADER_BYTES = 16 * 1024
_READ_BYTES = 64 * 1024
#: after a refusal, how long and how much of the unread request is drained before closing
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024
#: what a 429 or 503 asks a client to wait before it retries (RFC 9110's Retry-After):
#: such answers say "busy" (admission, the write backlog, a connection cap) or "a
#: store is away"; gRPC clients read the status and back off, HTTP ones read this
RETRY_AFTER_SECONDS = 1
#: why a connection is refused at once (503), by the cap it met
_OVER_CAP = {
    "server": "the REST gateway has as many open connections as it serves; retry later, "
    "reuse connections, or use gRPC",
    "client": "this client address has as many REST connections open as one may "
    "(--http-max-connections-per-client); reuse them, or close idle ones",
}
_TIMEOUT = re.compile(r"^(\d{1,8})([HMSmun])$")
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
#: a Grpc-Timeout above this is taken as this (8 digits of hours, which the header
#: allows, overflow gRPC's deadline arithmetic and used to act as an expired deadline)
MAX_TIMEOUT_SECONDS = 24 * 3600.0
#: brackets a JSON body may nest: the deepest request message needs far fewer; Python's
#: parser recurses per level and a body nested thousands deep raised RecursionError
MAX_JSON_DEPTH = 32
#: an HTTP/1.x request line (RFC 9112: method SP request-target SP HTTP-version)
_REQUEST_LINE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [^ \x00-\x1f]+ HTTP/\d\.\d\r?$")
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class Route:
    """One HTTP binding of a method: verb, path template, and the request fields its
    path variables fill (`/v1/collections/{collection}/search`)."""

    def __init__(self, method, verb: str, path: str, has_body: bool):
        self.verb, self.path, self.has_body = verb.upper(), path, has_body
        self.fields = path_fields(path)
        pattern = re.escape(path)
        for name in self.fields:
            pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>[^/]+)")
        self._pattern = re.compile(f"^{pattern}$")
        self.full_name = f"/{SERVICE.full_name}/{method.name}"
        self.request_class = getattr(pb, method.input_type.name)
        self.response_class = getattr(pb, method.output_type.name)

    def match(self, path: str) -> dict[str, str] | None:
        """The path variables' values when `path` is this route's; else None."""
        found = self._pattern.match(path)
        return None if found is None else found.groupdict()


def routes() -> list[Route]:
    table = []
    for method in SERVICE.methods:
        rule = method.GetOptions().Extensions[annotations_pb2.http]
        for verb, path, has_body in http_bindings(rule):
            table.append(Route(method, verb, path, has_body))
    return table


class RestGateway:
    """The HTTP server; `start()` serves in a thread, `stop()` ends it."""

    def __init__(
        self,
        grpc_target: str,
        host: str,
        port: int,
        limits: Limits,
        labelled: Callable[[str], bool | None],
        max_connections: int,
        metrics,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        fields: Callable[[str], dict[str, set[str]] | None] = lambda collection: None,
        manages_collections: bool = False,
        max_connections_per_client: int = 0,
    ):
        """`labelled(collection)` says whether a collection's serving index takes labels
        (None: nothing serves yet, or no such collection) and `fields(collection)` which
        metadata fields it holds ("": the default collection's), for the document and
        the schemas a body naming that collection is checked against; `metrics`
        (server.metrics.Metrics) counts open and refused connections;
        `max_connections_per_client` caps one client address's (0: no cap of its own)."""
        # the gRPC server bounds what it sends (max_send_bytes); a neighbour's stored
        # text may be megabytes, past gRPC's default 4 MiB a client receives
        self.channel = grpc.insecure_channel(
            grpc_target, options=[("grpc.max_receive_message_length", -1)]
        )
        # a server without --collections makes and drops none: no such routes (405/404)
        self.routes = [
            route
            for route in routes()
            if manages_collections or route.full_name.rsplit("/", 1)[-1] not in LIFECYCLE
        ]
        self.limits = limits
        self.max_body_bytes = 3 * limits.max_request_bytes  # JSON escapes grow text
        self._labelled = labelled
        self._fields = fields
        self._manages_collections = manages_collections
        self._committed_document = json.loads(OPENAPI_FILE.read_bytes())
        self._documents: dict[tuple, _Document] = {}
        self._documents_lock = threading.Lock()
        self._calls = {
            route.full_name: self.channel.unary_unary(
                route.full_name,
                request_serializer=route.request_class.SerializeToString,
                response_deserializer=route.response_class.FromString,
            )
            for route in self.routes
        }
        self.httpd = _HttpServer(
            (host, port), self, max_connections, metrics, max_connections_per_client
        )
        if tls_cert and tls_key:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls_cert), str(tls_key))
            # the handshake is done by the connection's thread (_Handler.handle)
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

    def document(self, collection: str = "") -> _Document:
        """The OpenAPI document for a collection's serving index ("": the default's,
        the one GET /openapi.json shows), and its request validators. Collections of
        one shape (labels or none, the same metadata fields) share one."""
        labelled, fields = self._labelled(collection), self._fields(collection) or {}
        key = (
            labelled,
            tuple(sorted((name, tuple(sorted(kinds))) for name, kinds in fields.items())),
        )
        with self._documents_lock:
            if key not in self._documents:
                served = serving_document(
                    self._committed_document,
                    self.limits,
                    labelled,
                    fields,
                    self._manages_collections,
                )
                self._documents[key] = _Document(served)
                while len(self._documents) > DOCUMENTS_KEPT:
                    self._documents.pop(next(iter(self._documents)))
            return self._documents[key]

    def document_asked(self, query: str) -> tuple[int, bytes]:
        """(HTTP status, body) for GET /openapi.json: the default collection's document,
        or with `?collection=NAME` that collection's (its labels and metadata fields are
        what its request bodies are checked against)."""
        try:
            asked = urllib.parse.parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError:
            asked = {"": []}
        if set(asked) - {"collection"} or len(asked.get("collection", [""])) != 1:
            return 400, _error_body(
                grpc.StatusCode.INVALID_ARGUMENT,
                "GET /openapi.json takes one query parameter, ?collection=NAME "
                f"(that collection's document), not {query[:200]!r}",
            )
        collection = asked.get("collection", [""])[0]
        if collection and not re.fullmatch(NAME_PATTERN, collection):
            return 400, _error_body(
                grpc.StatusCode.INVALID_ARGUMENT, f"collection {collection[:100]!r}: {NAME_RULE}"
            )
        if collection and self._labelled(collection) is None:
            return 404, _error_body(
                grpc.StatusCode.NOT_FOUND,
                f"no collection {collection!r} is serving; GET /v1/collections lists them",
            )
        return 200, self.document(collection).text

    def find(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The route for a request line, and its path variables' values."""
        for route in self.routes:
            if route.verb == method:
                values = route.match(path)
                if values is not None:
                    return route, values
        return None

    def answer(
        self,
        route: Route,
        body: bytes,
        headers: dict[str, list[str]],
        values: dict[str, str] | None = None,
    ):
        """(HTTP status, JSON body) for a request whose body has been read in full;
        `values`: the path variables, which fill their request fields (over the body's)."""
        try:
            read = read_body(route, body)
            request = self.document(_collection_of(values or {}, read)).parse(route, read)
        except _Refusal as refusal:
            return refusal.http, _error_body(grpc.StatusCode.INVALID_ARGUMENT, str(refusal))
        except DamagedArtifactError as error:  # the served schema reads the index's fields
            log.error("damaged_artifact", extra={"fields": {"error": str(error)[:1000]}})
            return 500, _error_body(grpc.StatusCode.DATA_LOSS, str(error))
        except Exception:  # a bug: answered and logged as gRPC does, not a dropped connection
            log.exception("internal_error")
            return 500, _error_body(grpc.StatusCode.INTERNAL, "internal error; see the server log")
        for name, value in (values or {}).items():
            setattr(request, name, urllib.parse.unquote(value))
        offered = headers.get("authorization", [])
        if not all(value.isascii() and value.isprintable() for value in offered):
            return 401, _error_body(
                grpc.StatusCode.UNAUTHENTICATED,
                "the Authorization header must be printable ASCII: 'Bearer <token>'",
            )
        metadata = tuple(("authorization", value) for value in offered)
        timeout = _timeout(next(iter(headers.get("grpc-timeout", [])), None))
        try:
            response = self._calls[route.full_name](request, timeout=timeout, metadata=metadata)
        except grpc.RpcError as error:
            code = error.code()
            return HTTP_STATUS.get(code, 500), _error_body(code, error.details() or code.name)
        text = json_format.MessageToJson(
            response, always_print_fields_with_no_presence=True, indent=None
        )
        return 200, text.encode("utf-8")

    def refusal(self, method: str, path: str, headers: dict[str, list[str]]):
        """What to answer before reading the body: (HTTP status, JSON body, extra
        headers) for a request refused on its line and headers, or None to read the
        body and call."""
        if method == "GET" and path == "/openapi.json":
            return None
        if method in ("GET", "HEAD") and console.is_asset(path):
            return None
        found = self.find(method, path)
        if found is None:
            allowed = sorted({r.verb for r in self.routes if r.match(path) is not None})
            if path == "/openapi.json":
                allowed = ["GET"]
            if allowed:
                return (
                    405,
                    _error_body(
                        grpc.StatusCode.UNIMPLEMENTED,
                        f"no route {method} {path}; it takes {', '.join(allowed)}",
                    ),
                    [("Allow", ", ".join(allowed))],
                )
            return (
                404,
                _error_body(
                    grpc.StatusCode.NOT_FOUND,
                    f"no route {method} {path}; GET /openapi.json lists them",
                ),
                [],
            )
        route = found[0]
        chunked = bool(headers.get("transfer-encoding"))
        lengths = headers.get("content-length", [])
        if chunked and lengths:
            return _invalid(400, "send a Content-Length or a chunked body, not both")
        length = int(lengths[0]) if lengths else 0
        if route.has_body and not (lengths or chunked):
            return _invalid(411, "send the body with a Content-Length (or chunked)")
        if not route.has_body and (length or chunked):
            return _invalid(400, f"{route.verb} {route.path} takes no body")
        if length > self.max_body_bytes:
            return _invalid(
                413,
                f"the body has {length} bytes; the limit is {self.max_body_bytes}. "
                "Split the call (the server's limits are in GET /v1/info)",
            )
        if route.has_body:
            kind = (headers.get("content-type") or [""])[0].split(";", 1)[0].strip().lower()
            if kind != "application/json":
                return _invalid(415, "send the body as JSON with 'Content-Type: application/json'")
        return None


class _HttpServer(socketserver.ThreadingTCPServer):
    """A thread per connection, at most `max_connections` at once."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address,
        gateway: RestGateway,
        max_connections: int,
        metrics,
        max_per_client: int = 0,
    ):
        self.gateway = gateway
        self._slots = threading.BoundedSemaphore(max_connections)
        self.max_connections = max_connections
        self._clients = _ClientSlots(max_per_client)
        self._metrics = metrics
        super().__init__(address, _Handler)

    def process_request(self, request, client_address):
        client = client_address[0]
        if not self._clients.take(client):
            self._refuse(request, client, "client")
        elif not self._slots.acquire(blocking=False):
            self._clients.give_back(client)
            self._refuse(request, client, "server")
        else:
            self._metrics.rest_connections.inc()
            super().process_request(request, client_address)  # the thread releases both

    def _refuse(self, request, client: str, cap: str) -> None:
        """503 at once for a connection over a cap ("server" or "client"), logged."""
        self._metrics.rest_refused.inc()
        log.warning(
            "rest_connection_refused",
            extra={"fields": {"client": client, "open": self.max_connections, "cap": cap}},
        )
        full = _error_body(grpc.StatusCode.UNAVAILABLE, _OVER_CAP[cap])
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
                    b"Retry-After: %d\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                    % (RETRY_AFTER_SECONDS, len(full), full),
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
            self._clients.give_back(client_address[0])
            self._metrics.rest_connections.dec()


class _ClientSlots:
    """Open connections by client address, at most `cap` each (0: no cap)."""

    def __init__(self, cap: int):
        self.cap = cap
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, client: str) -> bool:
        with self._lock:
            held = self._open.get(client, 0)
            if self.cap and held >= self.cap:
                return False
            self._open[client] = held + 1
            return True

    def give_back(self, client: str) -> None:
        with self._lock:
            held = self._open.get(client, 0) - 1
            if held > 0:
                self._open[client] = held
            else:
                self._open.pop(client, None)

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


class _Handler(socketserver.BaseRequestHandler):
    server: _HttpServer

    def handle(self):
        sock = self.request
        # an answer must not wait for the client's acknowledgement of what was sent
        # before it: with Nagle's algorithm on, a keep-alive client's delayed ACK held
        # each answer (or a large one's tail) for 40 ms (bench/rest_latency.py)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if isinstance(sock, ssl.SSLSocket):
            sock.settimeout(IDLE_SECONDS)
            sock.do_handshake()  # under the idle timeout, in this thread
        _Connection(sock, self.server.gateway).serve()


class _Connection:
    """One client connection: requests in turn, framed by h11, each under its deadline."""

    def __init__(self, sock: socket.socket, gateway: RestGateway):
        self.sock = sock
        self.gateway = gateway
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self.deadline: float | None = None  # of the request under way
        self._head = bytearray()  # the request's first bytes, until its line is checked
        self._line_checked = False

    def serve(self) -> None:
        while self._one_request():
            self.h11.start_next_cycle()
        # a refusal was sent (our side must close) while the client's request was not
        # read to its end: drain it; an idle or finished connection just closes
        if self.h11.our_state is h11.MUST_CLOSE and self.h11.their_state is not h11.DONE:
            self._linger()

    def _linger(self) -> None:
        """Closing a socket with unread bytes resets the connection, and the client may
        lose the answer just sent (a 413 for a body it is still sending): say we are done
        sending, then read and drop what comes for a moment, as nginx's lingering_close
        does. Bounded in time and bytes; nothing read here is parsed."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
            until = time.monotonic() + LINGER_SECONDS
            dropped = 0
            while dropped < LINGER_BYTES and (wait := until - time.monotonic()) > 0:
                self.sock.settimeout(wait)
                data = self.sock.recv(_READ_BYTES)
                if not data:
                    return
                dropped += len(data)
        except OSError:  # reset, timed out, TLS already gone
            pass

    def _one_request(self) -> bool:
        """Serve one request; True when the connection can carry another."""
        self.deadline = None
        self._head = bytearray()
        self._line_checked = False
        try:
            event = self._next_event()
        except h11.RemoteProtocolError as error:
            self._bad_framing(error)
            return False
        if not isinstance(event, h11.Request):
            return False  # closed, or out of time
        method = event.method.decode("ascii", "replace")
        target = event.target.decode("ascii", "replace")
        path = target.split("?", 1)[0]
        headers: dict[str, list[str]] = {}
        for name, value in event.headers:
            headers.setdefault(name.decode("ascii"), []).append(value.decode("latin-1"))
        head = method == "HEAD"
        refusal = self.gateway.refusal(method, path, headers)
        if refusal is not None:
            status, body, extra = refusal
            self._send(status, body, close=True, head=head, extra=extra)  # body left unread
            return False
        if self.h11.they_are_waiting_for_100_continue:
            self._write(h11.InformationalResponse(status_code=100, headers=[]))
        try:
            body = self._read_body()
        except h11.RemoteProtocolError as error:
            self._bad_framing(error)
            return False
        except _Refusal as too_large:
            self._send(
                too_large.http,
                _error_body(grpc.StatusCode.INVALID_ARGUMENT, str(too_large)),
                close=True,
            )
            return False
        if body is None:
            return False  # closed, or out of time
        self.deadline = None  # the request is in; the call has its own deadline
        if console.is_asset(path):
            page, kind = console.asset(path)
            self._send(200, page, close=False, head=head, extra=console.HEADERS, kind=kind)
            return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE
        if method == "GET" and path == "/openapi.json":
            status, answer = self.gateway.document_asked(target.partition("?")[2])
        else:
            route, values = self.gateway.find(method, path) or (None, {})
            assert route is not None, "refusal() answered requests without a route"
            status, answer = self.gateway.answer(route, body, headers, values)
        self._send(status, answer, close=False)
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE

    def _next_event(self):
        """The next h11 event, reading as needed; None when the client closed or the
        request ran out of time."""
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                data = self._receive()
                if data is None:
                    return None
                if self.h11.their_state is h11.IDLE:
                    self._check_request_line(data)
                self.h11.receive_data(data)
                continue
            if isinstance(event, h11.ConnectionClosed):
                return None
            return event

    def _check_request_line(self, data: bytes) -> None:
        """Refuse a request whose first line is not an HTTP/1.x request line as soon as
        that line is in: h11 reads the whole head before it judges the line, so a line
        such as HTTP/0.9's `GET /` waited for the request deadline unanswered."""
        if self._line_checked:
            return
        self._head += data
        head = bytes(self._head).lstrip(b"\r\n")  # empty lines before it are allowed
        line, newline, _ = head.partition(b"\n")
        if not newline:
            return
        self._line_checked = True
        if not _REQUEST_LINE.match(line):
            raise h11.RemoteProtocolError(
                "the request line is not 'METHOD /path HTTP/1.1'", error_status_hint=400
            )

    def _receive(self) -> bytes | None:
        """Up to _READ_BYTES; b"" at the client's end of stream; None when out of time.
        The request's deadline starts at its first byte."""
        now = time.monotonic()
        wait = IDLE_SECONDS
        if self.deadline is not None:
            wait = min(wait, self.deadline - now)
            if wait <= 0:
                return None
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(_READ_BYTES)
        except TimeoutError:
            return None
        if data and self.deadline is None:
            self.deadline = now + REQUEST_SECONDS
        return data

    def _read_body(self) -> bytes | None:
        """The body, whatever its framing, refused once it passes the limit."""
        parts: list[bytes] = []
        size = 0
        limit = self.gateway.max_body_bytes
        while True:
            event = self._next_event()
            if event is None:
                return None
            if isinstance(event, h11.EndOfMessage):
                return b"".join(parts)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    raise _Refusal(
                        413,
                        f"the body passed the limit of {limit} bytes. Split the call "
                        "(the server's limits are in GET /v1/info)",
                    )
                parts.append(event.data)

    def _bad_framing(self, error: h11.RemoteProtocolError) -> None:
        """A request h11 could not frame: say why if a response can still be sent."""
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            status = error.error_status_hint
            if status == 400 and "too long" in str(error).lower():
                status = 431
            message = f"the request is not valid HTTP/1.1: {error}"
            self._send(status, _error_body(grpc.StatusCode.INVALID_ARGUMENT, message), close=True)

    def _send(
        self,
        status: int,
        body: bytes,
        close: bool,
        head: bool = False,
        extra=(),
        kind: str = "application/json",
    ) -> None:
        headers = [
            *extra,
            ("Content-Type", kind),
            ("Content-Length", str(len(body))),
            ("Server", "siamese-search-gateway"),
        ]
        if status in (429, 503):  # busy, a backlog, a store away: worth a retry, later
            headers.append(("Retry-After", str(RETRY_AFTER_SECONDS)))
        if close:
            headers.append(("Connection", "close"))
        events: list[h11.Event] = [
            h11.Response(status_code=status, headers=headers, reason=_reason(status))
        ]
        if not head:
            events.append(h11.Data(data=body))
        events.append(h11.EndOfMessage())
        self._write(*events)

    def _write(self, *events) -> None:
        """Send `events` in one write: an answer's head and body leave together, so the
        client reads it whole instead of its head alone and its body a moment later."""
        self.sock.settimeout(IDLE_SECONDS)  # a client that does not read its answer
        self.sock.sendall(b"".join(self.h11.send(event) or b"" for event in events))


class _Refusal(Exception):
    def __init__(self, http: int, message: str):
        super().__init__(message)
        self.http = http


def _reason(status: int) -> bytes:
    """The standard reason phrase (499, gRPC-Gateway's "client closed", has none)."""
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def _invalid(http: int, message: str) -> tuple[int, bytes, list]:
    """A refusal for a request that breaks a rule of the gateway's."""
    return http, _error_body(grpc.StatusCode.INVALID_ARGUMENT, message), []


def _error_body(code: grpc.StatusCode, message: str) -> bytes:
    return json.dumps({"code": code.value[0], "message": message[:2000], "details": []}).encode()


class _Document:
    """One served OpenAPI document, and a validator per request message: a body is
    checked against the schema the document shows before protobuf reads it, so what
    the document calls valid and what the gateway accepts are one rule."""

    def __init__(self, document: dict):
        self.text = json.dumps(document).encode("utf-8")
        components = {"components": document["components"]}
        self._validators = {
            name: jsonschema.Draft4Validator({**schema, **components})
            for name, schema in document["components"]["schemas"].items()
            if name.endswith("Request")
        }

    def parse(self, route: Route, body: dict | None):
        """The request message from a JSON body read by `read_body` (None: a route
        without one); _Refusal(400) says what is wrong."""
        request = route.request_class()
        if body is None:
            return request
        name = route.request_class.__name__
        problem = _first_problem(self._validators[name].iter_errors(body))
        if problem is not None:
            where = "".join(
                f"[{p}]" if isinstance(p, int) else f".{p}" for p in problem.absolute_path
            )
            raise _Refusal(400, f"{name}: {_say(where.lstrip('.') or 'the body', problem)}")
        try:
            json_format.ParseDict(body, request)
        except (json_format.ParseError, ValueError) as error:
            raise _Refusal(
                400, f"the body is not a valid {name} in JSON: {str(error)[:300]}"
            ) from None
        return request


#: schema rules on a value's size: broken, they are what to fix first
_SIZE_RULES = frozenset({"maxItems", "maxProperties", "maxLength"})


def _first_problem(errors: Iterator) -> jsonschema.ValidationError | None:
    """The error to report of a body's schema errors (found lazily): the first size
    error at once, else the most relevant of all (jsonschema's best_match).

    Stopping at a size error is what keeps a refusal cheap: the schema states an
    array's maxItems before its items, and walking every item of a list 6,000 times
    over its limit (a 1.5 MB body of 50,000 filter conditions, each checked against
    every condition's form) took 5 s of the server's CPU to say "the limit is 8"."""
    seen = []
    for error in errors:
        if error.validator in _SIZE_RULES:
            return error
        seen.append(error)
    return jsonschema.exceptions.best_match(seen)


def read_body(route: Route, raw: bytes) -> dict | None:
    """A request's JSON body as an object with the fields' JSON names (None: a route
    without a body); _Refusal(400) when it is none. Read before it is checked, because
    the collection it names chooses the schema it is checked against."""
    if not route.has_body:
        return None
    name = route.request_class.__name__
    depth = json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise _Refusal(
            400,
            f"the body nests arrays and objects {depth} deep; a {name} needs at most "
            f"{MAX_JSON_DEPTH}",
        )
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise _Refusal(400, f"the body is not a valid {name} in JSON: {str(error)[:300]}") from None
    if not isinstance(body, dict):
        raise _Refusal(400, f"the body is not a valid {name}: send a JSON object")
    return _json_names(route.request_class.DESCRIPTOR, body)


def _collection_of(values: dict[str, str], body: dict | None) -> str:
    """The collection a call names: its path's (which wins, as it fills the field
    over the body's), else its body's; "" for the default one."""
    if "collection" in values:
        return urllib.parse.unquote(values["collection"])
    named = (body or {}).get("collection", "")
    return named if isinstance(named, str) else ""


def _say(field: str, error) -> str:
    """What to fix, in the gRPC checks' words; never the whole value (it can be large)."""
    rule, value = error.validator, error.validator_value
    if "filter" in field.split(".")[0] and rule in ("anyOf", "oneOf", "enum", "required"):
        named = f" {error.instance!r:.80}" if isinstance(error.instance, str) else ""
        return (
            f"{field}{named}: not a condition this index takes: a field test {{key, match: "
            "{value | any}} or {key, range} on one of the index's fields (label, id, and the "
            "metadata fields GET /openapi.json lists under FieldTest; range only on "
            "numeric ones), or a filter of such tests"
        )
    if field.startswith("examples") and ".metadata" in field:
        return (
            f"{field}: metadata is an object of at most {rules.MAX_KEYS} fields (any name "
            f"of at most {rules.MAX_KEY_CHARS} characters but {', '.join(rules.RECORD_FIELDS)}), "
            "each a string "
            f"({rules.MAX_STRING:,} characters at most), number, boolean or list of these "
            f"({rules.MAX_LIST} items at most)"
        )
    if rule == "pattern":
        return _unmatched(field, value)
    size = len(error.instance) if isinstance(error.instance, (str, list, dict)) else None
    said = {
        "maxItems": f"{field} has {size} items; the limit is {value}. Split the call",
        "minItems": f"{field} is empty; send at least {value}",
        "maxLength": f"{field} has {size} characters; the limit is {value}",
        "minLength": f"{field} is empty",
        "minimum": f"{field} is {error.instance}; it must be at least {value}",
        "maximum": f"{field} is {error.instance}; it must be at most {value}",
        "not": f"{field} has control characters or white space around it",
        "type": f"{field} must be of JSON type {value}",
        "anyOf": "nothing to delete: send ids, or a label",
        "oneOf": "send a text, or the id of a stored example, to search by (one of them)",
    }.get(rule)
    return said or error.message[:300]


def _unmatched(field: str, pattern: str) -> str:
    """What to fix in a value unlike its schema pattern, said as the gRPC checks say it."""
    if NAME_PATTERN in pattern:
        return f"{field} is not a collection name: {NAME_RULE}"
    if TOKEN_PATTERN in pattern:
        return f"{field} {TOKEN_RULE}"
    return f"{field} has nothing to read: only white space, control or format characters"


def _json_names(descriptor, body: dict) -> dict:
    """Fields named as in the .proto (`min_score`) renamed to their JSON names
    (`minScore`), which the document uses; protobuf's JSON reader takes both."""
    renamed = {}
    for key, value in body.items():
        field = descriptor.fields_by_name.get(key)
        name = field.json_name if field is not None else key
        if name in renamed:
            raise _Refusal(400, f"{name} is sent twice (as {name} and as {key}); send it once")
        renamed[name] = value
    return renamed


def _timeout(header: str | None) -> float | None:
    """gRPC-Gateway's `Grpc-Timeout` header (e.g. `5S`, `200m`); None: no deadline."""
    if not header:
        return None
    match = _TIMEOUT.match(header.strip())
    if not match:
        return None
    return min(int(match[1]) * _UNITS[match[2]], MAX_TIMEOUT_SECONDS)


def json_depth(raw: bytes) -> int:
    """How deep a JSON text's arrays and objects nest, without parsing it: strings
    taken out (brackets inside them do not count), then a running sum of the brackets
    left, in C-speed passes (a 4 MB body in milliseconds)."""
    import numpy as np

    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    steps = np.frombuffer(brackets, dtype=np.uint8)
    opening = (steps == ord("[")) | (steps == ord("{"))
    return int(np.cumsum(np.where(opening, 1, -1)).max())
