"""The collections root on disk: which directories are collections, and how one is made
and dropped so that a crash at any moment leaves either all of it or none.

- Served: every directory under the root with a valid name that holds an index
  (versions or a CURRENT) and no drop mark.
- Made (CreateCollection): the empty index is built under a temporary name and
  renamed into place when complete (`core.atomic.atomic_directory`), so a server
  killed halfway leaves no half-made collection under the name, which a second
  CreateCollection would have been refused as "already exists".
- Dropped (`mark_dropped`): a `DROPPED` file is written, durably, before the drop is
  acknowledged; the files themselves go later, once the collection's in-flight calls
  are done (they read its files by path), renamed aside first (`.dropped-NAME-...`).
  A restart serves no marked directory and finishes what a killed server left:
  marked directories and `.dropped-*` leftovers are removed. Before the mark, an
  acknowledged drop came back as a served collection after a kill, if the server
  died while the calls it waited for were still running.
- A create cut short by a kill leaves its `.tmp-NAME-*` staging directory; a restart
  removes those no living server is writing (`sweep_unfinished_creates`).
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from siamese_search.core.atomic import fsync_dir, sweep_leftovers, write_bytes_atomic
from siamese_search.core.errors import UserError
from siamese_search.indexer import layout
from siamese_search.server.openapi import NAME_PATTERN

log = logging.getLogger("siamese.server")

#: a collection's name (and its directory's): the API's rule, server.openapi
VALID_NAME = re.compile(NAME_PATTERN)
#: how long a drop waits for a writer of the collection (a siamese-index job, a
#: commit of its writes) to finish before it is refused
DROP_WAIT_SECONDS = 10.0
#: a dropped collection's directory, renamed aside while it is removed
DROPPED_PREFIX = ".dropped-"


def served_directories(root: Path) -> list[Path]:
    """The collections under `root`, by name: directories with a valid name that hold an
    index and no drop mark; other entries (files, hidden or invalid names, half-removed
    collections) are skipped."""
    if not Path(root).is_dir():
        raise UserError(f"--collections {root}: no such directory")
    return [
        entry
        for entry in sorted(Path(root).iterdir())
        if entry.is_dir()
        and VALID_NAME.match(entry.name)
        and not layout.is_dropped(entry)
        and _is_index(entry)
    ]


def _is_index(directory: Path) -> bool:
    return layout.current_version(directory) is not None or bool(layout.list_versions(directory))


def mark_dropped(directory: Path) -> None:
    """Make a drop durable before it is acknowledged: no server serves `directory` again,
    and no writer writes to it again. Marked under the writer lock, so a writer that
    published before the mark is waited for (its version goes with the files) and
    every later one is refused (`layout.writer_lock`), instead of being acknowledged
    and then deleted with the files. UserError when a writer holds it too long."""
    with layout.writer_lock(directory, DROP_WAIT_SECONDS):
        write_bytes_atomic(Path(directory) / layout.DROPPED, b"dropped\n")
        fsync_dir(Path(directory))


#: what else a dropped collection leaves, removed before its directory (its Milvus
#: alias and collections, with --backend milvus): called with the directory
Forget = Callable[[Path], None]


def remove(
    directory: Path,
    forget: Forget | None = None,
    wait_until: Callable[[], bool] = lambda: True,
    wait: float = 0.0,
) -> None:
    """Remove a dropped collection once `wait_until()` holds or `wait` seconds passed:
    what `forget` removes first (on failure the marked directory stays, for the next
    start to finish), then its files, renamed aside first so a new collection of the
    same name never sees half of them."""
    deadline = time.monotonic() + wait
    while not wait_until() and time.monotonic() < deadline:
        time.sleep(0.05)
    if forget is not None:
        try:
            forget(directory)
        except Exception as error:  # Milvus down or refusing: the next start retries
            log.error(
                "collection_backend_left",
                extra={"fields": {"directory": str(directory), "error": str(error)[:500]}},
            )
            return
    aside = directory.with_name(f"{DROPPED_PREFIX}{directory.name}-{time.time_ns()}")
    try:
        directory.rename(aside)
        fsync_dir(directory.parent)
        shutil.rmtree(aside)
    except OSError as error:
        log.error(
            "collection_files_left",
            extra={"fields": {"directory": str(directory), "error": str(error)}},
        )


def finish_drops(root: Path, forget: Forget | None = None) -> threading.Thread | None:
    """Remove, in a background thread, what dropped collections left under `root` (marked
    directories, with what `forget` removes; `.dropped-*` leftovers of a removal cut
    short); None when nothing."""
    directories = [entry for entry in Path(root).iterdir() if entry.is_dir()]
    marked = [
        entry for entry in directories if VALID_NAME.match(entry.name) and layout.is_dropped(entry)
    ]
    leftovers = [entry for entry in directories if entry.name.startswith(DROPPED_PREFIX)]
    if not marked and not leftovers:
        return None

    def finish() -> None:
        for directory in marked:
            remove(directory, forget)
        for leftover in leftovers:
            shutil.rmtree(leftover, ignore_errors=True)
        log.info(
            "dropped_collections_removed",
            extra={"fields": {"marked": [d.name for d in marked], "leftovers": len(leftovers)}},
        )

    thread = threading.Thread(target=finish, name="finish-drops", daemon=True)
    thread.start()
    return thread


def sweep_unfinished_creates(root: Path) -> None:
    """Remove the staging directories of CreateCollection calls a kill cut short (those
    no living writer holds: another server on the same root may be creating one)."""
    removed = sweep_leftovers(root)
    if removed:
        log.info("unfinished_creates_removed", extra={"fields": {"directories": removed}})
