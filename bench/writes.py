"""What one write costs as the index grows: `siamese-index add` of the same new texts to
indexes of several sizes (issue 23's baseline and its bar: at most 1.5x from 20k to
200k rows).

Each base index is written through the project's own version writer from synthetic
unit vectors (random, with the model's dimension, texts and labels made up), so the
bench does not spend an hour encoding; the timed `add_to_index` then encodes its new
texts with the model like any add (the same texts at every size), copies the base,
rebuilds the FAISS index and publishes. One process; sizes and index types in turn.

With --profile, one more add per size runs under cProfile and its costliest calls
(cumulative time) are printed: where a write's time goes.

Usage: python bench/writes.py --model artifacts/model [--sizes 20000 200000]
       [--index-types flat hnsw] [--add 100] [--profile] [--out bench/results/writes.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def synthetic_index(index_dir: Path, model, size: int, index_type: str, seed: int = 0) -> None:
    """A one-version index of `size` random unit vectors, written by VersionWriter."""
    import numpy as np

    from siamese_search.indexer import layout
    from siamese_search.indexer.version_writer import VersionWriter

    rng = np.random.default_rng(seed)
    labels = sorted(model.manifest.get("labels") or ["a", "b", "c", "d", "e"])
    index_dir.mkdir(parents=True)
    staging = layout.new_staging(index_dir)
    writer = VersionWriter(staging, model.dim, with_labels=True)
    for start in range(0, size, 50_000):
        n = min(50_000, size - start)
        vectors = rng.standard_normal((n, model.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids = [f"doc-{start + i}" for i in range(n)]
        writer.append(
            ids,
            [str(labels[(start + i) % len(labels)]) for i in range(n)],
            [f"synthetic text {start + i}" for i in range(n)],
            vectors,
        )
    extra = {
        "operation": {"kind": "build", "data": "synthetic (bench/writes.py)", "base_version": None},
        "source": {"text_column": "text", "label_column": "class", "id_column": "id"},
    }
    writer.finish(index_type, None, model, extra)
    layout.publish(index_dir, staging)


def new_rows(path: Path, count: int, label: str) -> None:
    with open(ROOT / "data/commit-messages/test.csv", newline="", encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)][:count]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["id", "text", "class"])
        for i, text in enumerate(texts):
            out.writerow([f"new-{i}", text, label])


def measure(model, size: int, index_type: str, add: int, repeats: int, profile: bool) -> dict:
    from siamese_search.core.tables import Columns
    from siamese_search.indexer.build import add_to_index
    from siamese_search.indexer.options import BuildOptions

    with tempfile.TemporaryDirectory(prefix="bench-writes-") as tmp:
        index_dir = Path(tmp) / "index"
        started = time.perf_counter()
        synthetic_index(index_dir, model, size, index_type)
        base_seconds = time.perf_counter() - started
        label = str(sorted(model.manifest.get("labels") or ["a"])[0])
        data = Path(tmp) / "new.csv"
        new_rows(data, add, label)
        columns = Columns(text="text", label="class", id="id")
        times = []
        for _ in range(repeats):  # each add replaces the same rows (upsert): same size
            options = BuildOptions(show_progress=False, keep_versions=2)
            started = time.perf_counter()
            report = add_to_index(index_dir, model, data, columns, options, upsert=True)
            times.append(time.perf_counter() - started)
            assert report.count == size + add, report
        if profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.runcall(add_to_index, index_dir, model, data, columns, options, upsert=True)
            print(f"{index_type} {size:,} rows: one add under cProfile")
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(20)
    return {
        "size": size,
        "index_type": index_type,
        "added": add,
        "base_build_seconds": base_seconds,
        "add_seconds": times,
        "add_seconds_median": statistics.median(times),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--index-types", nargs="+", default=["flat", "hnsw"])
    parser.add_argument("--add", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="profile one more add per size")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from siamese_search.core.model_artifact import load_model

    model = load_model(args.model)
    model.embed(["warm-up"])  # the encoder's first call is not a write's cost
    rows = []
    for index_type in args.index_types:
        for size in args.sizes:
            row = measure(model, size, index_type, args.add, args.repeats, args.profile)
            rows.append(row)
            print(
                f"{index_type:5} {size:>9,} rows  add {args.add} texts: "
                f"{row['add_seconds_median']:.2f} s median of {args.repeats} "
                f"(base written in {row['base_build_seconds']:.1f} s)",
                flush=True,
            )
        first, last = rows[-len(args.sizes)], rows[-1]
        print(
            f"{index_type:5} {last['size'] // first['size']}x the rows: "
            f"{last['add_seconds_median'] / first['add_seconds_median']:.1f}x the time per add"
        )
    if args.out:
        args.out.write_text(
            json.dumps({"encoder_runtime": model.encoder_runtime, "rows": rows}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
