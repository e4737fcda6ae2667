"""Every server setting in one place, with working defaults; `siamese-serve` fills it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from siamese_search.core.errors import UserError
from siamese_search.indexer.backends.milvus_backend import MilvusSource, MilvusTarget, default_name
from siamese_search.indexer.store import DirectorySource, VersionSource
from siamese_search.server.batching import BatchSettings
from siamese_search.server.writes import CommitPolicy

MAX_LABELS = 1000  # labels in one filter
MAX_LABEL_CHARS = 200  # characters of one label in a filter
#: copies of a request alive while it is worked on (see request_memory_bound)
REQUEST_COPIES = 6


@dataclass(frozen=True)
class Limits:
    """Request limits, reported by GetInfo and enforced with INVALID_ARGUMENT."""

    max_k: int = 100
    max_text_chars: int = 10_000
    max_batch: int = 256
    #: encoding work, in SentencePiece tokens: one text, and one call (a query sentence
    #: is 10-40; 512 tokens encode in ~40 ms, a full call in ~0.6 s on one core)
    max_text_tokens: int = 512
    max_call_tokens: int = 8192
    #: characters of all texts of a call together: what bounds a request's bytes (and
    #: so memory), since whitespace or unknown characters cost almost no tokens. 8,192
    #: tokens of prose are ~40,000 characters, so this leaves room for any call the
    #: token limit allows.
    max_call_chars: int = 100_000

    @property
    def max_request_bytes(self) -> int:
        # the call's characters (4 bytes each at most in UTF-8), framing per text, a full
        # label filter; anything larger is refused by gRPC (RESOURCE_EXHAUSTED)
        texts = min(self.max_call_chars, self.max_batch * self.max_text_chars) * 4
        framing = self.max_batch * 64
        labels = MAX_LABELS * (MAX_LABEL_CHARS * 4 + 8)
        return texts + framing + labels + 64 * 1024


@dataclass(frozen=True)
class ServerConfig:
    #: where versions come from: an index directory, or (milvus set) a Milvus alias
    index_dir: Path | None
    model_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int | None = None  # None: no metrics endpoint
    workers: int = 8
    threads: int = 1  # BLAS threads per process: 1 served 2x the calls/s of 2 on 2 cores
    limits: Limits = Limits()
    reload_interval: float = 2.0  # seconds between checks of CURRENT; 0 disables polling
    grace_seconds: float = 10.0  # how long SIGTERM waits for in-flight calls
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token: str | None = None
    admin_token: str | None = None  # needed for Reload (and any admin RPC) when set
    max_send_bytes: int = 64 * 1024 * 1024
    #: streaming calls (health Watch, reflection) open at once; each has its own thread
    max_streams: int = 16
    #: of those, what one client address may hold: health Watch needs no token, so
    #: without it one client could take every slot from the others
    max_streams_per_client: int = 4
    #: unary calls waiting for a worker beyond the ones being worked on
    max_queued: int = 8
    #: a gRPC connection with no call in flight for this long is closed (GOAWAY; a
    #: client reconnects on its next call): connections opened and left idle held a
    #: file descriptor each for ever, ~7 KB each, until the server could accept no
    #: more (the REST door closes idle connections after 30 s)
    grpc_idle_seconds: float = 300.0
    #: dynamic batching of concurrent Search / Predict / Embed work
    batching: BatchSettings = BatchSettings()
    milvus: MilvusTarget | None = None
    #: serve every index directory under this one as a collection named after it, and
    #: make new ones there (CreateCollection); None: only --index
    collections_dir: Path | None = None
    #: the collection calls naming none reach (default: --index's, or the only one)
    default_collection: str | None = None
    #: REST/JSON gateway port (None: off; 0 picks a free one)
    http_port: int | None = None
    #: HTTP connections the gateway keeps open at once (a thread each); beyond: 503
    http_max_connections: int = 256
    #: of those, at most this many from one client address (0: no cap of its own, for
    #: a reverse proxy in front, whose connections all come from one address)
    http_max_connections_per_client: int = 32
    #: take Upsert / Delete (needs index_dir: the writer works on the index directory)
    writes: bool = True
    #: take writes without any token on an address beyond loopback (refused otherwise)
    open_writes: bool = False
    commit_policy: CommitPolicy = CommitPolicy()
    #: start with a damaged write journal: keep its readable entries, set the unreadable
    #: lines aside in rejected-writes.jsonl (default: refuse to start, say where it is)
    salvage_journal: bool = False

    @property
    def max_concurrent_calls(self) -> int:
        """Calls gRPC admits at once; beyond it RESOURCE_EXHAUSTED at once."""
        return self.workers + self.max_streams + self.max_queued

    @property
    def request_memory_bound(self) -> int:
        """Bytes the server may hold for requests at once, on top of its idle size (the
        README's memory bound): every admitted call at its largest, each held about
        REQUEST_COPIES times (received bytes, the decoded message, its texts as Python
        strings, their cleaned-up copies, the answer). Calls beyond admission are
        refused within milliseconds and hold at most one HTTP/2 stream window (64 KiB;
        app.py turns off the BDP probing that would widen it) until then."""
        return self.max_concurrent_calls * REQUEST_COPIES * self.limits.max_request_bytes

    def memory_bound(self, encoders: int) -> int:
        """Bytes the server and its encoding processes may hold above their idle size
        for any valid calls (docs/serving.md, "Memory"): the requests'
        (request_memory_bound) plus each encoder's fixed pool, in the server process
        (which encodes a lone call itself) and in every encoding process. `encoders`:
        every distinct encoder the server holds, over all its collections (a
        served-space model has two: the untuned meaning encoder and the fine-tuned
        one; models sharing an encoder count it once); a model swap holds two models
        for a moment, which this does not count."""
        from siamese_search.core.encoders.usem3_runtime import ENCODER_MEMORY_BOUND

        processes = 1 + self.batching.processes
        return self.request_memory_bound + processes * encoders * ENCODER_MEMORY_BOUND

    def source(self) -> VersionSource:
        """Where the server finds the current version."""
        if self.milvus is not None:
            return MilvusSource(self.milvus, self.index_dir)
        assert self.index_dir is not None
        return DirectorySource(self.index_dir)

    def milvus_target_for(self, index_dir: Path) -> MilvusTarget | None:
        """With --backend milvus, the alias a collection directory's writer uses (the
        directory's name, as siamese-index names it); None without. Naming it connects
        to nothing."""
        if self.milvus is None:
            return None
        return MilvusTarget(
            self.milvus.uri, default_name(index_dir), self.milvus.token, self.milvus.ca_cert
        )

    def source_for(self, index_dir: Path) -> VersionSource:
        """Where a collection under --collections finds its current version: its
        directory, or with --backend milvus its alias (milvus_target_for)."""
        target = self.milvus_target_for(index_dir)
        if target is not None:
            return MilvusSource(target, index_dir)
        return DirectorySource(index_dir)

    def __post_init__(self) -> None:
        if self.index_dir is None and self.milvus is None and self.collections_dir is None:
            raise UserError(
                "give an index directory (--index), a directory of them (--collections) "
                "or a Milvus alias"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise UserError("TLS needs both --tls-cert and --tls-key")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not Path(path).is_file():
                raise UserError(f"{path}: no such file (TLS certificate or key)")
        if self.tls_cert is not None and self.tls_key is not None:
            _check_tls_pair(Path(self.tls_cert), Path(self.tls_key))
        for name, value in (("bearer token", self.token), ("admin token", self.admin_token)):
            if value is not None and len(value) < 16:
                raise UserError(f"the {name} must be at least 16 characters")
        if self.admin_token is not None and self.admin_token == self.token:
            raise UserError("the admin token must differ from the query token")
        if self.batching.max_wait < 0 or self.batching.max_wait > 1:
            raise UserError("--batch-wait-ms must be between 0 and 1000")
        if not 0 <= self.port <= 65535:
            raise UserError(f"--port {self.port} is not a TCP port")
        if self.http_port is not None and not 0 <= self.http_port <= 65535:
            raise UserError(f"--http-port {self.http_port} is not a TCP port")
        if self.writes and not (self.token or self.admin_token or self.open_writes):
            if not _is_loopback(self.host):
                raise UserError(
                    f"--host {self.host} listens beyond this machine with writes on and no "
                    "token: anyone who reaches the port could Upsert and Delete. Give "
                    "--admin-token-file (or --token-file), or --no-writes, or --open-writes "
                    "if that is what you want"
                )
        if self.http_max_connections < 1:
            raise UserError("--http-max-connections must be at least 1")
        if self.http_max_connections_per_client < 0:
            raise UserError(
                "--http-max-connections-per-client must be 0 (no cap of its own) or more"
            )
        if self.commit_policy.every_rows < 1 or self.commit_policy.every_seconds < 0:
            raise UserError("--commit-rows must be at least 1 and --commit-seconds at least 0")


def _check_tls_pair(cert: Path, key: Path) -> None:
    """Load the pair as the servers will, so a wrong file is named now: gRPC's own
    failure only says it could not add the port ("is the port in use?")."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as error:
        raise UserError(
            f"--tls-cert {cert} and --tls-key {key} are not a PEM certificate and its private "
            f"key ({error.reason or error}); are the two swapped, or is one another file?"
        ) from None


def _is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost; a wildcard or any other address is not."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve beyond this machine
