"""Re-embedding against building (issue 33): `siamese-index reembed` of N rows against
`siamese-index build` of the same rows from a table, same model, runtime and threads,
in interleaved rounds (the best of each kept). The rows: the commit test texts, made
distinct by a numbered suffix until there are N.

Usage: python bench/reembed.py [--model artifacts/model] [--rows 100000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "artifacts" / "model")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from siamese_search.core.model_artifact import load_model
    from siamese_search.core.tables import Columns
    from siamese_search.indexer.build import BuildOptions, build_index
    from siamese_search.indexer.reembed import reembed_index

    model = load_model(args.model)
    quiet = BuildOptions(show_progress=False, replace=True)
    with tempfile.TemporaryDirectory() as scratch:
        table = Path(scratch) / "rows.csv"
        with open(ROOT / "data" / "commit-messages" / "test.csv", encoding="utf-8") as handle:
            base = [row["text"] for row in csv.DictReader(handle)]
        with open(table, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "text", "label"])
            for i in range(args.rows):
                writer.writerow([f"r{i}", f"{base[i % len(base)]} #{i // len(base)}", "x"])
        index_dir = Path(scratch) / "index"
        columns = Columns(text="text", label="label", id="id")
        times: dict[str, list[float]] = {"build": [], "reembed": []}
        for _ in range(args.rounds):
            started = time.perf_counter()
            build_index(index_dir, model, table, columns, quiet)
            times["build"].append(time.perf_counter() - started)
            started = time.perf_counter()
            reembed_index(index_dir, model, quiet)
            times["reembed"].append(time.perf_counter() - started)
    best = {name: min(values) for name, values in times.items()}
    print(
        f"{args.rows} rows, {model.encoder_runtime} runtime: build {best['build']:.1f} s, "
        f"reembed {best['reembed']:.1f} s ({best['reembed'] / best['build']:.2f}x); "
        f"rounds {times}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
