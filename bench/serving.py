"""Serving latency and throughput of siamese-serve against a floor, measured in one run.

For each index size (synthetic commit-message-like texts, `--index-type auto`):
  - server:  `siamese-serve` (the product), Search with k=10
  - floor:   a bare gRPC server whose handler does only: the model's embed (its
             encoders, head and served space) + one FAISS search, on raw bytes (no
             validation, no protobuf, no records), its encoders on the numpy
             reference runtime (`--floor-runtime`); the product server runs the
             default runtime (auto) unless `--server-args` names one
Both run as separate processes with 1 BLAS thread (the serving default); the load
generator is a third process. Single-client latency is p50 / p99 over sequential
calls, measured *paired*: both servers up, one call to each in turn with the same
text (1,000 calls each), so drift in what else the 2 cores do weighs on both alike;
the ratio uses these. Throughput is calls/s (and p50 / p99) with 8 and with 32
concurrent client threads, one server at a time, the two taking turns (4 turns each of
a quarter of --seconds, alternating) for the same reason. For the product server it also
reports the seconds from process start to health SERVING, and its RSS while 500
maximum-size requests (~0.4 MB each) arrive at once, beside the memory bound the
README states (ServerConfig.request_memory_bound).

With `--milvus`, the same corpora are then written to a real Milvus 2.3.5
(tests/milvus_service.py starts one on 127.0.0.1 after the FAISS phases, so its idle
threads do not weigh on them) and the product server is measured again with
`--backend milvus`: single-client p50 / p99 and calls/s at 8 and 32 clients.

Usage: python bench/serving.py --model artifacts/model [--sizes 10000 100000]
       [--server-args '--batch-threads 2'] [--no-burst] [--milvus]
       [--out bench/results/serving.json]
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

from siamese_search.core.encoders.base import RUNTIME_VARIABLE  # noqa: E402

FLOOR_METHOD = "/bench.Floor/Search"
K = 10
CLIENTS = (8, 32)  # concurrent clients in the throughput phases
ROUNDS = 4  # turns each server takes in a throughput phase (alternating)
BURST = 500  # maximum-size requests sent at once


# ---- the floor server (subprocess) ------------------------------------------------------
def run_floor_server(index_dir: Path) -> None:
    from concurrent import futures

    import faiss
    import grpc
    import numpy as np

    from siamese_search.core.model_artifact import load_model
    from siamese_search.core.native_threads import limit_native_threads
    from siamese_search.indexer.store import open_index

    limit_native_threads(1)
    version = open_index(index_dir, verify=False)
    model = load_model(version.manifest["model"]["directory"], threads=1)
    (segment,) = version.segments  # a fresh build is one segment
    searcher = segment.index()  # the bare FAISS index: no record lookup

    def handle(request: bytes, context) -> bytes:
        # one OpenMP thread per call, as the product server sets (the count is per
        # thread; left at 2, FAISS's idle OpenMP worker spins after every search)
        faiss.omp_set_num_threads(1)
        vectors = model.embed([request.decode("utf-8")])  # encoder(s) + head (+ space)
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
def _caller(target: str, kind: str):
    """A function making one Search call to `target` (the product or the floor)."""
    import grpc

    if kind == "floor":
        call = grpc.insecure_channel(target).unary_unary(FLOOR_METHOD)

        def one(text: str) -> None:
            call(text.encode("utf-8"), timeout=30)

        return one
    from siamese_search.client import RetryPolicy, SearchClient

    # the typed client, as users call it; no retries: refusals are counted by the caller
    client = SearchClient(target, timeout=30, retry=RetryPolicy(attempts=1))

    def one_search(text: str) -> None:
        client.search(text, k=K)

    return one_search


def run_load(targets: dict[str, str], queries: list[str], seconds: float) -> dict:
    """For each target (kind -> address): single-client latency, then calls/s and
    latency with CLIENTS concurrent clients. The concurrent phases take turns, ROUNDS
    turns of seconds / ROUNDS each per target, so drift in what else the 2 cores do
    (it moved calls/s by 10-20 % between phases a minute apart) weighs on all alike."""
    import numpy as np

    calls = {kind: _caller(target, kind) for kind, target in targets.items()}
    results = {}
    for kind, one in calls.items():
        for text in queries[:50]:  # warm-up
            one(text)
        latencies = []
        for text in queries:
            started = time.perf_counter()
            one(text)
            latencies.append(time.perf_counter() - started)
        ms = np.array(latencies) * 1e3
        results[kind] = {
            "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
        }
    for clients in CLIENTS:
        turns: dict[str, list] = {kind: [] for kind in calls}
        for round_number in range(ROUNDS):
            order = list(calls) if round_number % 2 == 0 else list(reversed(calls))
            for kind in order:
                turns[kind].append(_concurrent(calls[kind], queries, seconds / ROUNDS, clients))
        for kind, measured in turns.items():
            concurrent_ms = np.concatenate([latencies for _, latencies, _ in measured])
            results[kind][f"clients_{clients}"] = {
                "calls_per_second": float(np.mean([rate for rate, _, _ in measured])),
                "refused": sum(refused for _, _, refused in measured),
                "p50_ms": float(np.percentile(concurrent_ms, 50)),
                "p99_ms": float(np.percentile(concurrent_ms, 99)),
            }
    return results


def run_paired(server: str, floor: str, queries: list[str], rounds: int) -> dict:
    """Single-client latency of both servers, one call each in turn with the same text,
    `rounds` times over the queries: whatever else the machine does then (the load
    generator shares its 2 cores) weighs on both alike, so their ratio is steadier
    than that of two phases measured minutes apart."""
    import numpy as np

    calls = {"server": _caller(server, "server"), "floor": _caller(floor, "floor")}
    for text in queries[:50]:  # warm-up
        for one in calls.values():
            one(text)
    latencies: dict[str, list[float]] = {"server": [], "floor": []}
    for round_number in range(rounds):
        order = ["server", "floor"] if round_number % 2 == 0 else ["floor", "server"]
        for text in queries:
            for kind in order:
                started = time.perf_counter()
                calls[kind](text)
                latencies[kind].append(time.perf_counter() - started)
    result = {}
    for kind, values in latencies.items():
        ms = np.array(values) * 1e3
        result[kind] = {
            "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
            "calls": len(values),
        }
    result["p50_ratio"] = result["server"]["p50_ms"] / result["floor"]["p50_ms"]
    return result


def _concurrent(one, queries: list[str], seconds: float, clients: int):
    """calls/s, per-call latencies (ms) and RESOURCE_EXHAUSTED refusals with `clients`
    threads calling in a loop."""
    import grpc
    import numpy as np

    counts = [0] * clients
    refused = [0] * clients
    latencies: list[list[float]] = [[] for _ in range(clients)]
    stop = time.perf_counter() + seconds

    def client(slot: int) -> None:
        i = slot
        while time.perf_counter() < stop:
            started = time.perf_counter()
            try:
                one(queries[i % len(queries)])
            except grpc.RpcError as error:  # admission control: counted, then retried
                if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                refused[slot] += 1
                time.sleep(0.001)
                continue
            latencies[slot].append(time.perf_counter() - started)
            counts[slot] += 1
            i += clients

    threads = [threading.Thread(target=client, args=(s,)) for s in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return (
        sum(counts) / elapsed,
        np.array([x for row in latencies for x in row]) * 1e3,
        sum(refused),
    )


def run_burst(target: str, requests: int, connections: int = 1) -> dict:
    """`requests` maximum-size SearchBatch calls sent at once (max_call_chars four-byte
    characters in texts of max_text_chars) over `connections` channels, in turn; how
    many were answered with which status."""
    from collections import Counter

    import grpc

    from siamese_search.server.config import Limits
    from siamese_search.server.generated import search_pb2 as pb
    from siamese_search.server.generated import search_pb2_grpc as pb_grpc

    limits = Limits()
    texts = ["\N{FIRE}" * limits.max_text_chars] * (limits.max_call_chars // limits.max_text_chars)
    request = pb.SearchBatchRequest(texts=texts, k=K)
    options = [("grpc.max_send_message_length", 2 * limits.max_request_bytes)]
    # a subchannel pool of its own each: gRPC would otherwise share one connection
    options.append(("grpc.use_local_subchannel_pool", 1))
    channels = [grpc.insecure_channel(target, options=options) for _ in range(connections)]
    stubs = [pb_grpc.SearchServiceStub(channel) for channel in channels]
    try:
        futures = [
            stubs[i % connections].SearchBatch.future(request, timeout=120) for i in range(requests)
        ]
        codes: Counter[str] = Counter()
        for future in futures:
            try:
                future.result()
                codes["OK"] += 1
            except grpc.RpcError as error:
                codes[error.code().name] += 1
    finally:
        for channel in channels:
            channel.close()
    return {
        "requests": requests,
        "connections": connections,
        "request_bytes": request.ByteSize(),
        "codes": dict(codes),
    }


# ---- orchestration -----------------------------------------------------------------------
def _start(command: list[str], env: dict | None = None) -> tuple[subprocess.Popen, str, float]:
    """Start a server; its address and the seconds until it answered health SERVING
    (for the floor, which has no health service: until it printed its address)."""
    env = {**os.environ, "SIAMESE_THREADS": "1", **(env or {})}
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    line = process.stdout.readline()
    if "listening on" not in line:
        process.kill()
        raise RuntimeError(f"{command[:3]} did not start: {line!r}")
    target = line.strip().rsplit(" ", 1)[-1]
    if "siamese_search" in " ".join(command):
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while (
                health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
                != health_pb2.HealthCheckResponse.SERVING
            ):
                time.sleep(0.01)
    return process, target, time.perf_counter() - started


def _helper(*args: str) -> dict:
    """Run this file as a helper process (load generator, burst) and read its JSON."""
    result = subprocess.run(
        [sys.executable, __file__, *args],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "SIAMESE_THREADS": "1"},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _burst(
    process: subprocess.Popen, target: str, requests: int = BURST, connections: int = 1
) -> dict:
    """Peak RSS of the server while `requests` maximum-size requests arrive at once
    over `connections` connections (run_burst in a helper process). The peak counts the
    kernel's high-water mark too, so the sampling interval cannot miss it."""
    from siamese_search.server.config import ServerConfig

    before = _rss_mb(process.pid)
    peak = [before]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.02):
            peak.append(_rss_mb(process.pid))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = _helper(
            "--burst", str(requests), "--connections", str(connections), "--target", target
        )
    finally:
        done.set()
        watcher.join()
    bound = ServerConfig(index_dir=Path(".")).request_memory_bound / 2**20
    result.update(
        rss_before_mb=before,
        rss_peak_mb=max(peak + [_rss_mb(process.pid, "VmHWM")]),
        rss_after_mb=_rss_mb(process.pid),
        stated_bound_mb=before + bound,
        # the encoding processes (server.encode_processes) hold a model each, apart
        # from the request memory the bound is about
        encoding_processes_rss_mb=[_rss_mb(pid) for pid in _children(process.pid)],
    )
    return result


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return [int(child) for child in children.read().split()]


def _server_command(index_dir: Path, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "siamese_search.server.cli",
        "--index",
        str(index_dir),
        "--port",
        "0",
        "--threads",
        "1",
        "--reload-interval",
        "0",
        *extra,
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "artifacts" / "model")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--seconds",
        type=float,
        default=10.0,
        help="throughput phase length per server and client count",
    )
    parser.add_argument(
        "--server-args",
        default="",
        help="extra siamese-serve flags for the product server, e.g. '--batch-threads 2'",
    )
    parser.add_argument(
        "--floor-runtime",
        default="numpy",
        help="the floor's encoder runtime (default numpy: the floor is the raw encoder's "
        "cost; the product server runs the default, auto, unless --server-args says)",
    )
    parser.add_argument("--no-burst", action="store_true", help="skip the memory burst")
    parser.add_argument(
        "--milvus", action="store_true", help="also measure the server on the Milvus backend"
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument("--floor-server", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--load", nargs="+", help=argparse.SUPPRESS)  # kind=address ...
    parser.add_argument("--burst", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--connections", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--paired", help=argparse.SUPPRESS)  # the server's address
    parser.add_argument("--target", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_server:
        run_floor_server(args.floor_server)
        return 0
    if args.load:
        queries = json.loads(args.queries.read_text())
        targets = dict(item.split("=", 1) for item in args.load)
        print(json.dumps(run_load(targets, queries, args.seconds)))
        return 0
    if args.paired:
        queries = json.loads(args.queries.read_text())
        print(json.dumps(run_paired(args.paired, args.target, queries, rounds=2)))
        return 0
    if args.burst:
        print(json.dumps(run_burst(args.target, args.burst, args.connections)))
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
            row: dict = {"size": size, "index_type": report.index_type}
            floor_process, floor_target, _ = _start(
                [sys.executable, __file__, "--floor-server", str(index_dir)],
                {RUNTIME_VARIABLE: args.floor_runtime},
            )
            try:
                server_process, server_target, start_seconds = _start(
                    _server_command(index_dir, args.server_args.split())
                )
                try:
                    row["paired"] = _helper(
                        "--paired",
                        server_target,
                        "--target",
                        floor_target,
                        "--queries",
                        str(queries_file),
                    )
                    row.update(
                        _helper(
                            "--load",
                            f"server={server_target}",
                            f"floor={floor_target}",
                            "--queries",
                            str(queries_file),
                            "--seconds",
                            str(args.seconds),
                        )
                    )
                    row["server"]["seconds_to_serving"] = start_seconds
                    if not args.no_burst:
                        row["server"]["burst"] = _burst(server_process, server_target)
                finally:
                    server_process.send_signal(signal.SIGTERM)
                    server_process.wait(timeout=60)
            finally:
                floor_process.send_signal(signal.SIGTERM)
                floor_process.wait(timeout=60)
            server, floor = row["server"], row["floor"]
            row["server_args"] = args.server_args
            row["p50_ratio"] = row["paired"]["p50_ratio"]  # the steadier measure
            row["throughput_ratio"] = (
                server["clients_8"]["calls_per_second"] / floor["clients_8"]["calls_per_second"]
            )
            results.append(row)
            print(_summary(row, report.index_type), flush=True)
        if args.milvus:
            _milvus_phases(results, model, Path(tmp), queries_file, args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _milvus_phases(results: list[dict], model, tmp: Path, queries_file: Path, args) -> None:
    """The product server again, on the Milvus backend, for every corpus measured."""
    sys.path.insert(0, str(ROOT))
    from siamese_search.core.tables import Columns
    from siamese_search.indexer.backends.milvus_backend import MilvusTarget
    from siamese_search.indexer.build import BuildOptions, build_index
    from tests import milvus_service

    service = milvus_service.start(tmp / "milvus")
    try:
        for row in results:
            size = row["size"]
            target = MilvusTarget(service.uri, f"bench_{size}")
            started = time.perf_counter()
            build_index(
                tmp / f"milvus-index-{size}",
                model,
                tmp / f"corpus-{size}.csv",
                Columns(text="text", label=None, id="id"),
                BuildOptions(show_progress=False, milvus=target),
            )
            build_seconds = time.perf_counter() - started
            command = _server_command(tmp, args.server_args.split())
            command[command.index("--index") : command.index("--index") + 2] = [
                "--backend",
                "milvus",
                "--milvus-uri",
                service.uri,
                "--milvus-collection",
                target.name,
            ]
            process, server_target, start_seconds = _start(command)
            try:
                measured = _helper(
                    "--load",
                    f"server={server_target}",
                    "--queries",
                    str(queries_file),
                    "--seconds",
                    str(args.seconds),
                )["server"]
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
            measured.update(build_seconds=build_seconds, seconds_to_serving=start_seconds)
            row["milvus"] = measured
            print(_milvus_summary(row), flush=True)
    finally:
        service.stop()


def _milvus_summary(row: dict) -> str:
    milvus, faiss_server = row["milvus"], row["server"]
    lines = [
        f"{row['size']:>7} vectors on Milvus ({row['index_type']}; index build + copy "
        f"{milvus['build_seconds']:.0f} s, start to SERVING {milvus['seconds_to_serving']:.1f} s):",
        f"  1 client p50 {milvus['p50_ms']:.2f} ms, p99 {milvus['p99_ms']:.2f} ms "
        f"(FAISS backend, same run: {faiss_server['p50_ms']:.2f} / {faiss_server['p99_ms']:.2f})",
    ]
    for clients in CLIENTS:
        ours, faiss_row = milvus[f"clients_{clients}"], faiss_server[f"clients_{clients}"]
        lines.append(
            f"  {clients:>2} clients: {ours['calls_per_second']:.0f} calls/s, p99 "
            f"{ours['p99_ms']:.1f} ms (FAISS backend: {faiss_row['calls_per_second']:.0f} "
            f"calls/s, p99 {faiss_row['p99_ms']:.1f} ms)"
        )
    return "\n".join(lines)


def _summary(row: dict, index_type: str) -> str:
    server, floor = row["server"], row["floor"]
    paired = row["paired"]
    lines = [
        f"{row['size']:>7} vectors ({index_type}), server flags {row['server_args']!r}:",
        f"  1 client p50, paired calls:  server {paired['server']['p50_ms']:.2f} ms, "
        f"floor {paired['floor']['p50_ms']:.2f} ms  (x{row['p50_ratio']:.2f}); "
        f"p99 {paired['server']['p99_ms']:.2f} / {paired['floor']['p99_ms']:.2f} ms",
        f"  1 client p50, separate phases: server {server['p50_ms']:.2f} ms, "
        f"floor {floor['p50_ms']:.2f} ms",
    ]
    for clients in CLIENTS:
        ours, theirs = server[f"clients_{clients}"], floor[f"clients_{clients}"]
        ratio = ours["calls_per_second"] / theirs["calls_per_second"]
        lines.append(
            f"  {clients:>2} clients:   server {ours['calls_per_second']:.0f} calls/s "
            f"p99 {ours['p99_ms']:.1f} ms, floor {theirs['calls_per_second']:.0f} calls/s "
            f"p99 {theirs['p99_ms']:.1f} ms  (x{ratio:.2f}; refused: server "
            f"{ours['refused']}, floor {theirs['refused']})"
        )
    lines.append(f"  start to SERVING: {server['seconds_to_serving']:.1f} s")
    if "burst" in server:
        burst = server["burst"]
        lines.append(
            f"  burst of {burst['requests']} x {burst['request_bytes'] / 2**20:.1f} MB: "
            f"RSS {burst['rss_before_mb']:.0f} -> peak {burst['rss_peak_mb']:.0f} MB "
            f"(stated bound {burst['stated_bound_mb']:.0f} MB), "
            f"after {burst['rss_after_mb']:.0f} MB; answers {burst['codes']}"
        )
        processes = burst.get("encoding_processes_rss_mb", [])
        lines.append(
            f"  encoding processes: {len(processes)}, RSS "
            + (", ".join(f"{mb:.0f}" for mb in processes) or "-")
            + " MB"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
