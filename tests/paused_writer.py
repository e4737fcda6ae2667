"""A real `siamese-index add` writer in its own process that can be paused at a checkpoint.

    python tests/paused_writer.py MODEL INDEX_DIR DATA PAUSE_AT [WAIT_SECONDS]

Prints `reached <stage>` at every checkpoint it passes (flushed). At the stage named
PAUSE_AT it prints `paused <stage>` and waits for a line on stdin before going on,
so a test can interleave two writers deterministically: no sleeps. Prints
`published <version>` at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

from siamese_search.core.model_artifact import load_model
from siamese_search.core.tables import Columns
from siamese_search.indexer import layout
from siamese_search.indexer.build import BuildOptions, add_to_index


def main(model: str, index_dir: str, data: str, pause_at: str, wait: str = "60") -> int:
    told: set[str] = set()

    def observer(stage: str) -> None:
        if stage in told:  # waiting-for-lock repeats while waiting: report it once
            return
        told.add(stage)
        print(f"reached {stage}", flush=True)
        if stage == pause_at:
            print(f"paused {stage}", flush=True)
            sys.stdin.readline()

    layout.CHECKPOINT_OBSERVERS.append(observer)
    options = BuildOptions(show_progress=False, wait_seconds=float(wait))
    columns = Columns(text="text", label="label", id="id")
    report = add_to_index(Path(index_dir), load_model(model), Path(data), columns, options)
    print(f"published {report.version} {report.count}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
