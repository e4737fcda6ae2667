"""`siamese-serve`: run the gRPC service over an index directory until SIGTERM / Ctrl-C.

SIGTERM or SIGINT: health turns NOT_SERVING, in-flight calls drain (--grace), exit 0.
SIGHUP: reload the index directory's current version now.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from siamese_search.core.cli_help import DefaultsHelpFormatter
from siamese_search.core.errors import UserError, run_cli
from siamese_search.server.config import Limits, ServerConfig


def build_parser() -> argparse.ArgumentParser:
    limits = Limits()
    parser = argparse.ArgumentParser(
        prog="siamese-serve",
        description=__doc__.splitlines()[0],
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--index", required=True, type=Path, help="index directory")
    parser.add_argument(
        "--model", type=Path, help="model directory (default: the one the index was built with)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=50051, help="0 picks a free port")
    parser.add_argument(
        "--metrics-port", type=int, help="serve Prometheus /metrics on this port (default: off)"
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
        "--log-level", default="info", choices=["debug", "info", "warning"], help="JSON log level"
    )
    return parser


def config_from_args(args) -> ServerConfig:
    token = os.environ.get("SIAMESE_TOKEN") or None
    if args.token_file:
        if not args.token_file.is_file():
            raise UserError(f"{args.token_file}: no such file (--token-file)")
        token = args.token_file.read_text("utf-8").strip()
    for name in ("max_k", "max_text_chars", "max_batch", "workers", "threads"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    return ServerConfig(
        index_dir=args.index,
        model_dir=args.model,
        host=args.host,
        port=args.port,
        metrics_port=args.metrics_port,
        workers=args.workers,
        threads=args.threads,
        limits=Limits(args.max_k, args.max_text_chars, args.max_batch),
        reload_interval=args.reload_interval,
        grace_seconds=args.grace,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        token=token,
    )


@run_cli
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from siamese_search.server import logs

    logs.configure(args.log_level)
    config = config_from_args(args)
    from siamese_search.server.app import SearchServer

    server = SearchServer(config).start()
    stop = threading.Event()

    def on_stop(signum, frame):
        stop.set()

    def on_hup(signum, frame):
        threading.Thread(target=server.holder.reload, name="sighup-reload", daemon=True).start()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    print(f"siamese-serve listening on {config.host}:{server.port}", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
