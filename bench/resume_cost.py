"""What keeping a build resumable costs (indexer.resume): the same build of N rows with
its workspace and without, alternated (ABBA, so neither arm always runs first), and the
workspace's own steps (text keys, checkpoints, opening and removal) timed inside the
builds with it.

Usage: python bench/resume_cost.py [--model artifacts/model] [--rows 20000] [--pairs 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "artifacts" / "model")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    from reembed import no_build_workspace, write_rows

    from siamese_search.core.model_artifact import load_model
    from siamese_search.core.tables import Columns
    from siamese_search.indexer import resume, transaction
    from siamese_search.indexer.build import BuildOptions, build_index

    spent: dict[str, float] = {}

    def timed(name, function):
        def run(*arguments, **keywords):
            started = time.perf_counter()
            try:
                return function(*arguments, **keywords)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - started

        return run

    resume.text_keys = timed("text keys", resume.text_keys)
    resume.Workspace.checkpoint = timed("checkpoints", resume.Workspace.checkpoint)
    resume.Workspace.remove = timed("open and remove", resume.Workspace.remove)
    transaction._ingest_workspace = timed("open and remove", transaction._ingest_workspace)

    model = load_model(args.model)
    quiet = BuildOptions(show_progress=False, replace=True)
    times: dict[str, list[float]] = {"resumable": [], "not resumable": []}
    with tempfile.TemporaryDirectory() as scratch:
        table = Path(scratch) / "rows.csv"
        write_rows(table, args.rows)
        index_dir = Path(scratch) / "index"
        columns = Columns(text="text", label="label", id="id")
        for order in (("resumable", "not resumable"), ("not resumable", "resumable")) * args.pairs:
            for arm in order:
                started = time.perf_counter()
                if arm == "resumable":
                    build_index(index_dir, model, table, columns, quiet)
                else:
                    with no_build_workspace():
                        build_index(index_dir, model, table, columns, quiet)
                times[arm].append(round(time.perf_counter() - started, 2))
    builds = len(times["resumable"])
    per_build = {name: round(1000 * total / builds) for name, total in spent.items()}
    summary = {arm: (min(t), sorted(t)[len(t) // 2]) for arm, t in times.items()}
    print(
        f"{args.rows} rows, {builds} builds each: best / median s {summary}; the workspace's "
        f"steps per resumable build (ms) {per_build}; runs {times}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
