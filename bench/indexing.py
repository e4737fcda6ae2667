"""Indexing throughput and peak memory against the raw encoder, measured in one run.

For each corpus size, on the same synthetic texts (commit messages from the sample
test set, each made unique with two extra words so deduplication cannot flatter us):
  - raw encoders: the encoders the model runs, alone over the texts (texts/s; two with
    the served space of a fine-tuned model: the shipped one and the tuned one)
  - end-to-end: `build_index` from a CSV file (read, check, encode, head, SQLite,
    vectors file, FAISS index, manifest, fsync, publish), with the index type given
Each measurement runs in its own process, so peak RSS (ru_maxrss) is its own, and so
is "cores busy": the process's CPU seconds over the timed span's wall seconds (how
much of the machine the encoder leaves for anything run beside it).

With --runtimes (e.g. `numpy openvino`), every measurement is made once per encoder
runtime, in turn for each size (SIAMESE_ENCODER_RUNTIME for the worker process).

With index types given with parameters (`--index-types flat auto
hnsw:ef_construction=80`), builds with other parameters are measured in the same run.

Usage: python bench/indexing.py --model artifacts/model [--sizes 10000 100000]
       [--runtimes numpy openvino] [--index-types flat auto hnsw:ef_construction=80]
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_corpus(path: Path, size: int, seed: int = 0) -> None:
    import numpy as np

    with open(ROOT / "data/commit-messages/test.csv", newline="", encoding="utf-8") as handle:
        base = [row["text"] for row in csv.DictReader(handle)]
    vocabulary = sorted({w.lower() for t in base for w in t.split() if w.isalpha()})
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        for i in range(size):
            extra = " ".join(vocabulary[j] for j in rng.integers(0, len(vocabulary), 2))
            writer.writerow([f"doc-{i}", f"{base[i % len(base)]} {extra}"])


def worker(args) -> dict:
    from siamese_search.core.model_artifact import load_model
    from siamese_search.core.tables import Columns, read_table

    def cpu_seconds() -> float:  # every thread of this process: the encoder's, FAISS's
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    model = load_model(args.model)
    started, cpu_started = time.perf_counter(), cpu_seconds()
    if args.mode == "raw":
        texts = read_table(args.data, Columns(text="text", label=None)).texts
        # time the encoders alone, not the CSV parsing
        started, cpu_started = time.perf_counter(), cpu_seconds()
        model.features(texts, unique=True)  # every encoder the model runs (served space: two)
        count = len(texts)
    else:
        from siamese_search.indexer.build import BuildOptions, build_index

        kind, params = index_variant(args.index_type)

        report = build_index(
            args.out,
            model,
            args.data,
            Columns(text="text", label=None, id="id"),
            BuildOptions(index_type=kind, index_params=params or None, show_progress=False),
        )
        count = report.count
    seconds = time.perf_counter() - started
    busy = (cpu_seconds() - cpu_started) / seconds
    return {
        "cores_busy": busy,
        "mode": args.mode,
        "index_type": args.index_type,
        "count": count,
        "seconds": seconds,
        "texts_per_second": count / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def index_variant(spec: str) -> tuple[str, dict]:
    """`--index-types` entry: a type, or a type with parameters ("hnsw:ef_construction=80,M=16")."""
    kind, _, given = spec.partition(":")
    params = {}
    for pair in filter(None, given.split(",")):
        key, _, value = pair.partition("=")
        params[key] = int(value)
    return kind, params


def run_worker(
    model: Path, data: Path, mode: str, index_type: str, out: Path, runtime: str | None
) -> dict:
    import os

    env = dict(os.environ)
    if runtime is not None:
        env["SIAMESE_ENCODER_RUNTIME"] = runtime
    result = subprocess.run(
        [
            sys.executable,
            __file__,
            "--worker",
            "--mode",
            mode,
            "--model",
            str(model),
            "--data",
            str(data),
            "--index-type",
            index_type,
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure_size(args, size: int, data: Path, tmp: Path, runtime, results: list) -> None:
    label = f"[{runtime}] " if runtime else ""
    raw = run_worker(args.model, data, "raw", "-", tmp / "unused", runtime)
    results.append({"size": size, "runtime": runtime, **raw})
    print(
        f"{label}{size:>7} texts  raw encoder      {raw['texts_per_second']:7.0f} texts/s  "
        f"peak RSS {raw['peak_rss_mb']:6.0f} MB  cores busy {raw['cores_busy']:.2f}",
        flush=True,
    )
    for kind in args.index_types:
        out = tmp / f"index-{size}-{kind}-{runtime}"
        e2e = run_worker(args.model, data, "build", kind, out, runtime)
        manifest = json.loads((out / "versions" / "000001" / "manifest.json").read_text())
        index_mb = (
            sum(  # each segment's FAISS file (one: a build writes one segment)
                entry["bytes"]
                for name, entry in manifest["files"].items()
                if name.endswith(".faiss")
            )
            / 2**20
        )
        ratio = e2e["texts_per_second"] / raw["texts_per_second"]
        results.append(
            {
                "size": size,
                "runtime": runtime,
                **e2e,
                "resolved_type": manifest["index"]["type"],
                "index_mb": index_mb,
                "ratio_to_raw": ratio,
            }
        )
        print(
            f"{label}{size:>7} texts  build {kind:>5} ({manifest['index']['type']:>5} "
            f"{manifest['index'].get('params', {})})  "
            f"{e2e['texts_per_second']:7.0f} texts/s  = {ratio:5.1%} of raw  "
            f"peak RSS {e2e['peak_rss_mb']:6.0f} MB  (index file {index_mb:.0f} MB)  "
            f"cores busy {e2e['cores_busy']:.2f}",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "artifacts" / "model")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--index-types", nargs="+", default=["flat", "auto"])
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--runtimes", nargs="+", default=[None], help="encoder runtimes")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="raw", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--index-type", default="flat", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            data = Path(tmp) / f"corpus-{size}.csv"
            make_corpus(data, size)
            for runtime in args.runtimes:
                measure_size(args, size, data, Path(tmp), runtime, results)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
