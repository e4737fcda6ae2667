"""A real index writer in its own process that reports each checkpoint and can stop at one.

    python tests/crash_writer.py MODEL DATA INDEX_DIR STOP_AT [ENGINE [MILVUS_URI ALIAS]]

DATA `compact` compacts the index instead of building it from a table; `delete:ID,ID`
deletes those ids from it; `reembed` re-embeds it with MODEL.

Prints `reached <stage>` (flushed) at every checkpoint the build passes; at the
STOP_AT-th checkpoint (a number, counting from 1) or at the stage named STOP_AT it
prints `stopped <stage>` and waits, so the test can SIGKILL it at a point it has
provably reached (a handshake, not a sleep). STOP_AT `none` runs to the end.
Small chunks (100 rows) give a checkpoint per chunk while ingesting. The environment
variable CHECKPOINT_SECONDS sets how often a resumable job makes what it embedded
durable (indexer.resume; 0: after every chunk).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from siamese_search.core.model_artifact import load_model
from siamese_search.core.tables import Columns
from siamese_search.indexer import layout, resume
from siamese_search.indexer.backends.milvus_backend import MilvusTarget
from siamese_search.indexer.build import BuildOptions, build_index, delete_from_index
from siamese_search.indexer.compaction import compact_index
from siamese_search.indexer.reembed import reembed_index

CHUNK_ROWS = 100


def main(
    model: str,
    data: str,
    index_dir: str,
    stop_at: str,
    engine: str = "local",
    milvus_uri: str | None = None,
    alias: str | None = None,
) -> int:
    passed = 0
    resume.CHECKPOINT_SECONDS = float(os.environ.get("CHECKPOINT_SECONDS", "30"))

    def observer(stage: str) -> None:
        nonlocal passed
        passed += 1
        print(f"reached {stage}", flush=True)
        if stop_at in (stage, str(passed)):
            print(f"stopped {stage}", flush=True)
            while True:  # until the test kills us
                signal.pause()

    layout.CHECKPOINT_OBSERVERS.append(observer)
    milvus = MilvusTarget(milvus_uri, alias or "crash") if milvus_uri else None
    options = BuildOptions(
        show_progress=False, chunk_rows=CHUNK_ROWS, replace=True, engine=engine, milvus=milvus
    )
    if data == "compact":
        compact_index(Path(index_dir), load_model(model), options)
    elif data == "reembed":
        reembed_index(Path(index_dir), load_model(model), options)
    elif data.startswith("delete:"):
        ids = data.removeprefix("delete:").split(",")
        delete_from_index(Path(index_dir), load_model(model), ids, options)
    else:
        build_index(Path(index_dir), load_model(model), Path(data), Columns(), options)
    print("finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
