"""Serving latency and throughput of siamese-serve against a floor, measured in one run.

For each index size (synthetic commit-message-like texts, `--index-type auto`):
  - server:  `siamese-serve` (the product), Search with k=10
  - floor:   a bare gRPC server whose handler does only: one encode + one head call +
             one FAISS search, on raw bytes (no validation, no protobuf, no records)
Both run as separate processes with 1 BLAS thread (the serving default); the load
generator is a third process. Single-client latency is p50 / p99 over sequential
calls; throughput is calls/s with 8 concurrent client threads.

Usage: python bench/serving.py --model artifacts/model [--sizes 10000 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

FLOOR_METHOD = "/bench.Floor/Search"
K = 10


# ---- the floor server (subprocess) ------------------------------------------------------
def run_floor_server(index_dir: Path) -> None:
    from concurrent import futures

    import grpc
    import numpy as np

    from siamese_search.core.model_artifact import load_model
    from siamese_search.indexer.store import open_index

    version = open_index(index_dir, verify=False)
    model = load_model(version.manifest["model"]["directory"], threads=1)
    searcher = version._index  # the bare FAISS index: no record lookup

    def handle(request: bytes, context) -> bytes:
        vectors = model.head(model.encoder.encode([request.decode("utf-8")]))
        _, positions = searcher.search(vectors, K)
        return np.asarray(positions, dtype=np.int64).tobytes()

    handler = grpc.method_handlers_generic_handler(
        "bench.Floor", {"Search": grpc.unary_unary_rpc_method_handler(handle)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    signal.sigwait({signal.SIGTERM})
    server.stop(0)


# ---- the load generator (subprocess) -----------------------------------------------------
def run_load(target: str, kind: str, queries: list[str], seconds: float, clients: int) -> dict:
    import grpc
    import numpy as np

    channel = grpc.insecure_channel(target)
    if kind == "floor":
        call = channel.unary_unary(FLOOR_METHOD)

        def one(text: str) -> None:
            call(text.encode("utf-8"), timeout=30)
    else:
        from siamese_search.server.generated import search_pb2 as pb
        from siamese_search.server.generated import search_pb2_grpc as pb_grpc

        stub = pb_grpc.SearchServiceStub(channel)

        def one(text: str) -> None:
            stub.Search(pb.SearchRequest(text=text, k=K), timeout=30)

    for text in queries[:50]:  # warm-up
        one(text)
    latencies = []
    for text in queries:
        started = time.perf_counter()
        one(text)
        latencies.append(time.perf_counter() - started)
    counts = [0] * clients
    stop = time.perf_counter() + seconds

    def client(slot: int) -> None:
        i = slot
        while time.perf_counter() < stop:
            one(queries[i % len(queries)])
            counts[slot] += 1
            i += clients

    threads = [threading.Thread(target=client, args=(s,)) for s in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    channel.close()
    ms = np.array(latencies) * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "calls_per_second": sum(counts) / elapsed,
        "clients": clients,
    }


# ---- orchestration -----------------------------------------------------------------------
def _start(command: list[str]) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "SIAMESE_THREADS": "1"}
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    line = process.stdout.readline()
    if "listening on" not in line:
        process.kill()
        raise RuntimeError(f"{command[:3]} did not start: {line!r}")
    return process, line.strip().rsplit(" ", 1)[-1]


def _load(target: str, kind: str, queries_file: Path, seconds: float) -> dict:
    result = subprocess.run(
        [
            sys.executable,
            __file__,
            "--load",
            kind,
            "--target",
            target,
            "--queries",
            str(queries_file),
            "--seconds",
            str(seconds),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "SIAMESE_THREADS": "1"},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "artifacts" / "model")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=10.0, help="throughput phase length")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--floor-server", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--load", choices=["floor", "server"], help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_server:
        run_floor_server(args.floor_server)
        return 0
    if args.load:
        queries = json.loads(args.queries.read_text())
        print(json.dumps(run_load(args.target, args.load, queries, args.seconds, 8)))
        return 0

    import csv

    from indexing import make_corpus

    from siamese_search.core.model_artifact import load_model
    from siamese_search.core.tables import Columns
    from siamese_search.indexer.build import BuildOptions, build_index

    with open(ROOT / "data/commit-messages/test.csv", newline="", encoding="utf-8") as handle:
        queries = [row["text"] for row in csv.DictReader(handle)][:500]
    results = []
    model = load_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        queries_file = Path(tmp) / "queries.json"
        queries_file.write_text(json.dumps(queries))
        for size in args.sizes:
            corpus = Path(tmp) / f"corpus-{size}.csv"
            make_corpus(corpus, size, seed=1)
            index_dir = Path(tmp) / f"index-{size}"
            report = build_index(
                index_dir,
                model,
                corpus,
                Columns(text="text", label=None, id="id"),
                BuildOptions(show_progress=False),
            )
            row = {"size": size, "index_type": report.index_type}
            for kind, command in (
                ("floor", [sys.executable, __file__, "--floor-server", str(index_dir)]),
                (
                    "server",
                    [
                        sys.executable,
                        "-m",
                        "siamese_search.server.cli",
                        "--index",
                        str(index_dir),
                        "--port",
                        "0",
                        "--threads",
                        "1",
                        "--workers",
                        "8",
                        "--reload-interval",
                        "0",
                    ],
                ),
            ):
                process, target = _start(command)
                try:
                    row[kind] = _load(target, kind, queries_file, args.seconds)
                finally:
                    process.send_signal(signal.SIGTERM)
                    process.wait(timeout=60)
            row["p50_ratio"] = row["server"]["p50_ms"] / row["floor"]["p50_ms"]
            row["throughput_ratio"] = (
                row["server"]["calls_per_second"] / row["floor"]["calls_per_second"]
            )
            results.append(row)
            print(
                f"{size:>7} vectors ({report.index_type}):  "
                f"server p50 {row['server']['p50_ms']:.2f} ms  p99 {row['server']['p99_ms']:.2f} ms"
                f"  {row['server']['calls_per_second']:.0f} calls/s  |  "
                f"floor p50 {row['floor']['p50_ms']:.2f} ms  p99 {row['floor']['p99_ms']:.2f} ms"
                f"  {row['floor']['calls_per_second']:.0f} calls/s  |  "
                f"p50 x{row['p50_ratio']:.2f}, throughput x{row['throughput_ratio']:.2f}",
                flush=True,
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
