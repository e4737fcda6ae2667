"""Re-embedding against building (issue 33): `siamese-index reembed` of N rows against
`siamese-index build` of the same rows from a table, same model, runtime and threads,
in interleaved rounds (the best of each kept). The rows: the commit test texts, made
distinct by a numbered suffix until there are N.

And resuming (indexer.resume): a reembed stopped once half its rows are embedded (an
exception at a page, as a Ctrl-C; checkpoints every CHECKPOINT_SECONDS, 2 s here), then
the run that resumes it: its time against a whole reembed's; and what keeping a build
resumable costs: the build again with its workspace switched off.

Usage: python bench/reembed.py [--model artifacts/model] [--rows 100000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
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
        write_rows(table, args.rows)
        index_dir = Path(scratch) / "index"
        columns = Columns(text="text", label="label", id="id")
        times: dict[str, list[float]] = {
            "build": [],
            "build, not resumable": [],
            "reembed": [],
            "resumed": [],
        }
        reused = 0
        for _ in range(args.rounds):
            started = time.perf_counter()
            build_index(index_dir, model, table, columns, quiet)
            times["build"].append(time.perf_counter() - started)
            with no_build_workspace():
                started = time.perf_counter()
                build_index(index_dir, model, table, columns, quiet)
                times["build, not resumable"].append(time.perf_counter() - started)
            started = time.perf_counter()
            reembed_index(index_dir, model, quiet)
            times["reembed"].append(time.perf_counter() - started)
            stop_at_half(index_dir, model, quiet, args.rows)
            started = time.perf_counter()
            reused = reembed_index(index_dir, model, quiet).reused
            times["resumed"].append(time.perf_counter() - started)
    best = {name: min(values) for name, values in times.items()}
    print(
        f"{args.rows} rows, {model.encoder_runtime} runtime: build {best['build']:.1f} s "
        f"(not resumable {best['build, not resumable']:.1f} s), "
        f"reembed {best['reembed']:.1f} s ({best['reembed'] / best['build']:.2f}x); "
        f"resumed after a stop at half: {best['resumed']:.1f} s "
        f"({best['resumed'] / best['reembed']:.2f}x a whole reembed, {reused} rows reused); "
        f"rounds {times}"
    )
    return 0


def write_rows(table: Path, rows: int) -> None:
    """A table (id, text, label) of `rows` distinct texts: the commit test texts, made
    distinct by a numbered suffix until there are enough."""
    with open(ROOT / "data" / "commit-messages" / "test.csv", encoding="utf-8") as handle:
        base = [row["text"] for row in csv.DictReader(handle)]
    with open(table, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "label"])
        for i in range(rows):
            writer.writerow([f"r{i}", f"{base[i % len(base)]} #{i // len(base)}", "x"])


@contextlib.contextmanager
def no_build_workspace():
    """Builds without indexer.resume's workspace (what a build cost before it)."""
    from siamese_search.indexer import transaction

    kept = transaction._ingest_workspace
    transaction._ingest_workspace = lambda *_: None
    try:
        yield
    finally:
        transaction._ingest_workspace = kept


class Stopped(Exception):
    """Stands for a kill or a Ctrl-C."""


def stop_at_half(index_dir: Path, model, options, rows: int) -> None:
    """A reembed stopped at the first page past half the rows."""
    from siamese_search.indexer import layout, reembed, resume

    resume.CHECKPOINT_SECONDS = 2.0
    pages = [0]

    def observer(stage: str) -> None:
        if stage == "reembed-page":
            pages[0] += 1
            if pages[0] * reembed.PAGE_ROWS >= rows / 2:
                raise Stopped

    layout.CHECKPOINT_OBSERVERS.append(observer)
    try:
        reembed.reembed_index(index_dir, model, options)
    except Stopped:
        pass
    finally:
        layout.CHECKPOINT_OBSERVERS.remove(observer)


if __name__ == "__main__":
    sys.exit(main())
