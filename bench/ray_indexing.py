"""Re-indexing on Ray Data against the local build, measured in one run.

A synthetic corpus (bench/indexing.py's generator) is indexed by `build_index` with
the local engine and with `--engine ray` on a local Ray cluster with 1 and 2 actors
(same model, flat index so neighbours are exact). Reported: texts/s end to end (Ray
start-up and model shipping included), the Ray/local throughput ratio, and how many
of 1,000 queries get the same top-10 ids from the Ray-built index as from the local
one.

Usage: python bench/ray_indexing.py --model artifacts/model [--size 30000]
       [--out bench/results/ray_indexing.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "artifacts" / "model")
    parser.add_argument("--size", type=int, default=30_000)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    import csv

    from indexing import make_corpus

    from siamese_search.core.model_artifact import load_model
    from siamese_search.core.tables import Columns
    from siamese_search.indexer.build import BuildOptions, build_index
    from siamese_search.indexer.ray_engine import RaySettings
    from siamese_search.indexer.store import open_index

    model = load_model(args.model)
    with open(ROOT / "data/commit-messages/test.csv", newline="", encoding="utf-8") as handle:
        queries = [row["text"] for row in csv.DictReader(handle)][: args.queries]
    query_vectors = model.embed(queries)
    columns = Columns(text="text", label=None, id="id")
    results: dict = {"size": args.size, "queries": len(queries)}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.csv"
        make_corpus(corpus, args.size, seed=3)
        runs = [("local", None)] + [(f"ray-{n}", n) for n in args.actors]
        neighbours = {}
        for name, actors in runs:
            options = BuildOptions(show_progress=False, index_type="flat")
            if actors is not None:
                options = BuildOptions(
                    show_progress=False,
                    index_type="flat",
                    engine="ray",
                    ray=RaySettings(actors=actors),
                )
            started = time.perf_counter()
            report = build_index(Path(tmp) / name, model, corpus, columns, options)
            seconds = time.perf_counter() - started
            with open_index(Path(tmp) / name) as version:
                neighbours[name] = [
                    [hit.id for hit in row] for row in version.search(query_vectors, k=10)
                ]
            results[name] = {"seconds": seconds, "texts_per_second": report.count / seconds}
            print(
                f"{name:>8}: {report.count} texts in {seconds:.1f} s, "
                f"{report.count / seconds:.0f} texts/s",
                flush=True,
            )
        for name, _ in runs[1:]:
            same = sum(a == b for a, b in zip(neighbours["local"], neighbours[name], strict=True))
            ratio = results[name]["texts_per_second"] / results["local"]["texts_per_second"]
            results[name].update(same_top10=same, throughput_ratio=ratio)
            print(
                f"{name:>8}: same top-10 for {same}/{len(queries)} queries; "
                f"throughput x{ratio:.2f} of local",
                flush=True,
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
