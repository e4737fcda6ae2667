"""`siamese-serve`: run the gRPC service over an index directory until SIGTERM / Ctrl-C.

SIGTERM or SIGINT: health turns NOT_SERVING, in-flight calls drain (--grace), exit 0.
SIGHUP: reload the index directory's current version now.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from siamese_search.core.cli_help import DefaultsHelpFormatter
from siamese_search.core.encoders.base import add_runtime_flag, apply_runtime_flag
from siamese_search.core.errors import UserError, run_cli
from siamese_search.indexer.backend_flags import add_backend_flags, milvus_target
from siamese_search.server.batching import BatchSettings
from siamese_search.server.config import Limits, ServerConfig
from siamese_search.server.writes import CommitPolicy


def build_parser() -> argparse.ArgumentParser:
    limits = Limits()
    parser = argparse.ArgumentParser(
        prog="siamese-serve",
        description=__doc__.splitlines()[0],
        formatter_class=DefaultsHelpFormatter,
    )
    add_runtime_flag(parser)
    parser.add_argument(
        "--index",
        type=Path,
        help="index directory (with --backend milvus: not needed, the alias names the index)",
    )
    parser.add_argument(
        "--collections",
        type=Path,
        metavar="DIR",
        help="serve every index directory under DIR as a collection named after it, and "
        "make new ones there over the API (CreateCollection); with --index, that one is "
        "served too, as the default collection",
    )
    parser.add_argument(
        "--default-collection",
        metavar="NAME",
        help="the collection calls that name none reach (default: --index's, or the only one)",
    )
    add_backend_flags(parser)
    parser.add_argument(
        "--model",
        type=Path,
        help="pin this model directory: index versions built with another are refused "
        "(default: follow the model each version was built with, swapping it in beside the "
        "serving one when a retrained model's version is published)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=50051, help="0 picks a free port")
    parser.add_argument(
        "--metrics-port", type=int, help="serve Prometheus /metrics on this port (default: off)"
    )
    parser.add_argument(
        "--http-port",
        type=int,
        help="serve REST/JSON (and /openapi.json) on this port beside gRPC (default: off)",
    )
    parser.add_argument(
        "--http-max-connections",
        type=int,
        default=ServerConfig.http_max_connections,
        help="REST connections open at once (a thread each); one more gets 503 at once",
    )
    parser.add_argument(
        "--http-max-connections-per-client",
        type=int,
        default=ServerConfig.http_max_connections_per_client,
        help="REST connections one client address may hold open (so no one client fills "
        "--http-max-connections); 0: no cap of its own, for a reverse proxy in front",
    )
    parser.add_argument(
        "--commit-rows",
        type=int,
        default=1,
        help="Upsert / Delete: publish a new index version once this many rows are pending "
        "(1: at once; writes arriving during a commit share the next one)",
    )
    parser.add_argument(
        "--commit-seconds",
        type=float,
        default=0.0,
        help="... or once the oldest pending write is this old (0: no time trigger)",
    )
    parser.add_argument(
        "--max-pending-rows",
        type=int,
        default=CommitPolicy.max_pending_rows,
        help="Upsert: upserted rows waiting to be committed beyond which more are refused "
        "(RESOURCE_EXHAUSTED, retried by clients) until commits catch up",
    )
    parser.add_argument(
        "--salvage-journal",
        action="store_true",
        help="start even if the write journal has unreadable lines: keep its readable "
        "entries, move the unreadable lines to rejected-writes.jsonl (a copy of the damaged "
        "file is kept either way); without it such a server refuses to start",
    )
    parser.add_argument(
        "--no-writes", action="store_true", help="refuse Upsert / Delete (FAILED_PRECONDITION)"
    )
    parser.add_argument(
        "--open-writes",
        action="store_true",
        help="take Upsert / Delete without a token on an address beyond loopback (refused "
        "otherwise: anyone who reaches the port could change the index)",
    )
    parser.add_argument("--workers", type=int, default=8, help="concurrent calls")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS threads for encoding (1 gives the best throughput under load)",
    )
    parser.add_argument("--max-k", type=int, default=limits.max_k, help="largest k a call may ask")
    parser.add_argument(
        "--max-text-chars", type=int, default=limits.max_text_chars, help="longest text"
    )
    parser.add_argument(
        "--max-batch", type=int, default=limits.max_batch, help="most texts in one call"
    )
    parser.add_argument(
        "--max-text-tokens",
        type=int,
        default=limits.max_text_tokens,
        help="most SentencePiece tokens in one text (encoding work grows with tokens)",
    )
    parser.add_argument(
        "--max-call-tokens",
        type=int,
        default=limits.max_call_tokens,
        help="most tokens in one call, all its texts together",
    )
    parser.add_argument(
        "--max-call-chars",
        type=int,
        default=limits.max_call_chars,
        help="most characters in one call, all its texts together (bounds request size)",
    )
    parser.add_argument(
        "--max-streams",
        type=int,
        default=ServerConfig.max_streams,
        help="streaming calls (health Watch, reflection) open at once, each on its own thread",
    )
    parser.add_argument(
        "--max-streams-per-client",
        type=int,
        default=ServerConfig.max_streams_per_client,
        help="streaming calls one client address may hold open (so no one client fills "
        "--max-streams)",
    )
    parser.add_argument(
        "--max-queued",
        type=int,
        default=ServerConfig.max_queued,
        help="unary calls that may wait for a worker; beyond, RESOURCE_EXHAUSTED at once",
    )
    batching = BatchSettings()
    parser.add_argument(
        "--max-batch-texts",
        type=int,
        default=batching.max_batch_texts,
        help="dynamic batching: most texts encoded together from concurrent calls",
    )
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=batching.max_wait * 1e3,
        help="dynamic batching: how long a batch waits for more calls once it has one "
        "(0: batch only calls that queued meanwhile; a lone call never waits)",
    )
    parser.add_argument(
        "--batch-threads",
        type=int,
        default=batching.threads,
        help="dynamic batching: threads running batches, each encoding on --threads BLAS "
        "threads (default: one a core)",
    )
    parser.add_argument(
        "--encode-processes",
        type=int,
        default=batching.processes,
        help="worker processes that encode the batches, off the server's GIL (default: one "
        "a core; 0: the batch threads encode in the server process)",
    )
    parser.add_argument(
        "--grpc-idle-seconds",
        type=float,
        default=ServerConfig.grpc_idle_seconds,
        help="close a gRPC connection with no call in flight for this long (clients "
        "reconnect on their next call)",
    )
    parser.add_argument(
        "--reload-interval",
        type=float,
        default=2.0,
        help="seconds between checks for a new index version (0: only on SIGHUP)",
    )
    parser.add_argument(
        "--grace", type=float, default=10.0, help="seconds SIGTERM waits for in-flight calls"
    )
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate chain (turns TLS on)")
    parser.add_argument("--tls-key", type=Path, help="PEM private key")
    parser.add_argument(
        "--token-file",
        type=Path,
        help="file holding the bearer token every call must send "
        "(or set SIAMESE_TOKEN); health checks stay open",
    )
    parser.add_argument(
        "--admin-token-file",
        type=Path,
        help="file holding the admin token that Reload, Upsert and Delete need (or set "
        "SIAMESE_ADMIN_TOKEN); with auth on and no admin token, they are refused",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning"], help="JSON log level"
    )
    return parser


#: shortest token accepted: a token a guess could find is no lock
MIN_TOKEN_CHARS = 16


def _read_token(path: Path | None, flag: str, variable: str) -> str | None:
    """The token a flag's file (or else the variable) holds. A file or variable that is
    given but empty, short or not printable ASCII refuses the start: it would otherwise
    leave auth off (or be unusable in a header) without a word."""
    source = f"{path} ({flag})" if path is not None else f"${variable}"
    if path is None:
        token = os.environ.get(variable)
        if token is None:
            return None
    else:
        if not path.is_file():
            raise UserError(f"{path}: no such file ({flag})")
        try:
            token = path.read_text("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{source} is not UTF-8 text; put the token in it") from None
    token = token.strip()
    if not token:
        raise UserError(
            f"{source} is empty, which would leave auth off; put a token in it (e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`), or leave the "
            "flag out to run without auth"
        )
    if len(token) < MIN_TOKEN_CHARS or not (token.isascii() and token.isprintable()):
        raise UserError(
            f"{source}: the token must be at least {MIN_TOKEN_CHARS} printable ASCII "
            f"characters without spaces around it (this one has {len(token)})"
        )
    return token


def config_from_args(args) -> ServerConfig:
    token = _read_token(args.token_file, "--token-file", "SIAMESE_TOKEN")
    admin_token = _read_token(args.admin_token_file, "--admin-token-file", "SIAMESE_ADMIN_TOKEN")
    for name in (
        "max_k",
        "max_text_chars",
        "max_batch",
        "max_text_tokens",
        "max_call_tokens",
        "max_call_chars",
        "max_streams",
        "max_streams_per_client",
        "max_pending_rows",
        "workers",
        "threads",
        "max_batch_texts",
        "batch_threads",
    ):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if not args.grpc_idle_seconds > 0:
        raise UserError("--grpc-idle-seconds must be above 0")
    milvus = milvus_target(args, args.index or args.collections)
    if args.index is None and milvus is None and args.collections is None:
        raise UserError(
            "give --index INDEX_DIR, --collections DIR (or --backend milvus --milvus-uri ...)"
        )
    if args.collections is not None and not args.collections.is_dir():
        raise UserError(f"--collections {args.collections}: no such directory; create it first")
    return ServerConfig(
        index_dir=args.index,
        collections_dir=args.collections,
        default_collection=args.default_collection,
        milvus=milvus,
        http_port=args.http_port,
        http_max_connections=args.http_max_connections,
        http_max_connections_per_client=args.http_max_connections_per_client,
        writes=not args.no_writes,
        open_writes=args.open_writes,
        commit_policy=CommitPolicy(args.commit_rows, args.commit_seconds, args.max_pending_rows),
        salvage_journal=args.salvage_journal,
        model_dir=args.model,
        host=args.host,
        port=args.port,
        metrics_port=args.metrics_port,
        workers=args.workers,
        threads=args.threads,
        limits=Limits(
            args.max_k,
            args.max_text_chars,
            args.max_batch,
            args.max_text_tokens,
            args.max_call_tokens,
            args.max_call_chars,
        ),
        max_streams=args.max_streams,
        max_streams_per_client=args.max_streams_per_client,
        max_queued=max(args.max_queued, 0),
        grpc_idle_seconds=args.grpc_idle_seconds,
        batching=BatchSettings(
            max_batch_texts=args.max_batch_texts,
            max_wait=args.batch_wait_ms / 1e3,
            threads=args.batch_threads,
            processes=max(args.encode_processes, 0),
        ),
        reload_interval=args.reload_interval,
        grace_seconds=args.grace,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        token=token,
        admin_token=admin_token,
    )


def _raise_open_files_limit() -> None:
    """Open files up to the hard limit, as servers do: every connection holds a file
    descriptor, and under a common soft limit of 1,024 a thousand connections left
    open (idle ones are closed only after --grpc-idle-seconds) shut the gRPC door on
    every other client."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 1 << 20) if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):  # a container may refuse it: serve as we are
            pass


@run_cli
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_runtime_flag(args)
    from siamese_search.server import logs

    logs.configure(args.log_level)
    config = config_from_args(args)
    from siamese_search.server.app import SearchServer

    _raise_open_files_limit()
    server = SearchServer(config).start()
    stop = threading.Event()

    def on_stop(signum, frame):
        stop.set()

    def on_hup(signum, frame):
        threading.Thread(target=server.reload, name="sighup-reload", daemon=True).start()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    print(f"siamese-serve listening on {config.host}:{server.port}", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
    # --grace bounds shutdown: calls still running were cancelled by stop(); their
    # threads stop at their next piece, and nothing they do now can be delivered, so
    # do not wait for them (exit within grace + about a second)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
