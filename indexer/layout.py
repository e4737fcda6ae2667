"""On-disk layout of an index directory: numbered versions and an atomic CURRENT pointer.

    INDEX_DIR/
      CURRENT              the live version's name, e.g. "000003" (replaced atomically)
      versions/000001/     complete, immutable versions (never modified once renamed here)
      versions/000002/
      .lock                held by the one writer at a time (build / add / delete)
      .tmp-*               a version being written; ignored by readers, swept by writers

A writer builds a version under `.tmp-*`, fsyncs it, renames it into `versions/`,
then replaces CURRENT. Killed at any point, the previous CURRENT stays intact and
readable, and no reader can pick up a half-written version (readers only follow
CURRENT, which only ever names a complete version).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from siamese_search.core.atomic import TMP_PREFIX, fsync_dir, fsync_tree, write_bytes_atomic
from siamese_search.core.errors import UserError

CURRENT = "CURRENT"
VERSIONS = "versions"
LOCK = ".lock"
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
VECTORS_FILE = "vectors.f32"
LABELS_FILE = "labels.i32"
RECORDS_FILE = "records.sqlite"
DEFAULT_KEEP_VERSIONS = 3


def version_name(number: int) -> str:
    return f"{number:06d}"


def list_versions(index_dir: Path) -> list[str]:
    root = Path(index_dir) / VERSIONS
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.isdigit())


def current_version(index_dir: Path) -> str | None:
    pointer = Path(index_dir) / CURRENT
    try:
        name = pointer.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    return name or None


def version_dir(index_dir: Path, name: str) -> Path:
    return Path(index_dir) / VERSIONS / name


@contextlib.contextmanager
def writer_lock(index_dir: Path) -> Iterator[None]:
    """One writer at a time per index directory; a second one is told, not queued."""
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    with open(index_dir / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{index_dir} is being written by another siamese-index process; "
                "wait for it to finish and run this again"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def sweep_staging(index_dir: Path) -> None:
    """Remove leftovers of writers that were killed (only call while holding the lock)."""
    for entry in Path(index_dir).iterdir():
        if entry.name.startswith(TMP_PREFIX) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def new_staging(index_dir: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=TMP_PREFIX + "version-", dir=index_dir))


def publish(index_dir: Path, staging: Path, keep: int = DEFAULT_KEEP_VERSIONS) -> str:
    """Make a complete staging directory the new current version; return its name."""
    index_dir = Path(index_dir)
    fsync_tree(staging)
    existing = list_versions(index_dir)
    name = version_name(int(existing[-1]) + 1 if existing else 1)
    (index_dir / VERSIONS).mkdir(exist_ok=True)
    os.rename(staging, version_dir(index_dir, name))
    fsync_dir(index_dir / VERSIONS)
    checkpoint("after-rename")
    write_bytes_atomic(index_dir / CURRENT, (name + "\n").encode("ascii"))
    checkpoint("after-current")
    prune(index_dir, keep)
    return name


def hold_version(directory: Path):
    """A reader's shared lock on a version: `prune` leaves it alone while it is held.

    Returns the open file that holds the lock; closing it (or the process ending)
    releases it. A server keeps one per loaded version, so a version that requests
    may still be reading is never deleted under them.
    """
    handle = open(Path(directory) / MANIFEST, "rb")  # noqa: SIM115 - lives with the reader
    fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
    return handle


def prune(index_dir: Path, keep: int) -> list[str]:
    """Delete the oldest versions beyond `keep`; never the current one, nor one a
    reader still holds (it is deleted by a later writer once released)."""
    current = current_version(index_dir)
    versions = [v for v in list_versions(index_dir) if v != current]
    doomed = versions[: max(0, len(versions) - max(keep - 1, 0))]
    deleted = []
    for name in doomed:
        directory = version_dir(index_dir, name)
        try:
            with open(directory / MANIFEST, "rb") as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(directory, ignore_errors=True)
        except BlockingIOError:
            continue  # a reader still serves from it
        except FileNotFoundError:
            shutil.rmtree(directory, ignore_errors=True)  # no manifest: an incomplete leftover
        deleted.append(name)
    return deleted


#: Called with the stage's name each time a writer passes one of its named points
#: ("during-ingest", "before-finish", "before-manifest", "after-rename",
#: "after-current"). Empty in production; tests register an observer to stop a writer
#: at a point it has reached (tests/crash_writer.py) or to interleave two writers.
CHECKPOINT_OBSERVERS: list[Callable[[str], None]] = []


def checkpoint(stage: str) -> None:
    for observer in CHECKPOINT_OBSERVERS:
        observer(stage)
