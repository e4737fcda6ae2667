"""Field indexes built on first use, for metadata keys nobody declared.

A key declared at build (`--index-metadata a,b`) is indexed inside each segment's
record store as it is written (`records.RecordWriter`). A key a filter tests that was
not declared is found by scanning every row's JSON: 0.5-1.5 s at 1M rows, paid again
by each new filter on it (other values, other ranges) and after every restart. So the
first filter on such a key in a large segment (MIN_ROWS) asks for the key's index,
and one background thread builds it while that filter's scan answers: a file of its
own beside the segment's files (`field-indexes/<digest>.sqlite`, the same
`field_values` table and covering index as a declared key's,
`records.FIELD_INDEX_SCHEMA`), written under a temporary name and renamed, so a reader
sees a whole index or none. The segment's record store attaches it
(`RecordReader.attach_field_index`): the next filter on the key, in this process or a
restarted one, reads the index (`records.RecordReader.passing`).

The file is derived data: the segment's files and their checksums are untouched, a
segment removed takes its field indexes with it, and a copy of an index directory
without them is whole (they are built again on first use). Where the segment's
directory cannot be written (a read-only mount), nothing is built and filters scan,
as before. Not for: Milvus (its own JSON filtering), small segments (a scan of
50,000 rows costs ~50 ms).
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from siamese_search.core.atomic import fsync_dir
from siamese_search.indexer.records import (
    FIELD_INDEX_SCHEMA,
    FIELD_VALUES_INDEX,
    INSERT_FIELD_VALUE,
    field_values,
)

LOG = logging.getLogger("siamese_search.indexer.field_index")

DIRECTORY = "field-indexes"
#: a segment with fewer rows is scanned: not worth a file (~50 ms a scan)
MIN_ROWS = 50_000
_BATCH = 8192
#: a partial file this old is a killed builder's (a build of 1M rows takes seconds)
STALE_SECONDS = 3600


def path_for(segment_dir: Path, key: str) -> Path:
    """Where a key's index of this segment lives (a digest: any key is a file name)."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]
    return Path(segment_dir) / DIRECTORY / f"{digest}.sqlite"


def existing(segment_dir: Path) -> dict[str, Path]:
    """key -> file of the field indexes built for this segment (unreadable ones are
    left out: they are built again)."""
    found: dict[str, Path] = {}
    folder = Path(segment_dir) / DIRECTORY
    if not folder.is_dir():
        return found
    for path in sorted(folder.glob("*.sqlite")):
        key = key_of(path)
        if key is not None and path_for(segment_dir, key) == path:
            found[key] = path
    return found


def key_of(path: Path) -> str | None:
    """The key a field index file indexes, None when it is not a whole one."""
    if not Path(path).is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
        try:
            rows = db.execute("SELECT key FROM indexed_keys").fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return None
    return rows[0][0] if len(rows) == 1 else None


def build(records_path: Path, key: str, out: Path) -> int:
    """Index one key of a segment's record store into `out` (atomically); the number
    of values indexed."""
    out.parent.mkdir(exist_ok=True)
    for left in out.parent.glob(".building-*"):  # a killed builder's, long ago
        if time.time() - left.stat().st_mtime > STALE_SECONDS:
            left.unlink(missing_ok=True)
    handle, scratch = tempfile.mkstemp(prefix=".building-", suffix=".sqlite", dir=out.parent)
    os.close(handle)
    values = 0
    try:
        source = sqlite3.connect(f"file:{records_path}?mode=ro&immutable=1", uri=True)
        target = sqlite3.connect(scratch)
        try:
            target.execute("PRAGMA journal_mode = OFF")
            target.executescript(FIELD_INDEX_SCHEMA)
            target.execute("INSERT INTO indexed_keys VALUES (?)", (key,))
            wanted = frozenset([key])
            last = -1
            while True:
                rows = source.execute(
                    "SELECT position, metadata FROM records WHERE position > ? "
                    "AND metadata IS NOT NULL ORDER BY position LIMIT ?",
                    (last, _BATCH),
                ).fetchall()
                if not rows:
                    break
                found = list(field_values(rows, wanted))
                target.executemany(INSERT_FIELD_VALUE, found)
                values += len(found)
                last = rows[-1][0]
            target.execute(FIELD_VALUES_INDEX)
            target.commit()
        finally:
            source.close()
            target.close()
        with open(scratch, "rb") as written:
            os.fsync(written.fileno())
        os.replace(scratch, out)
        fsync_dir(out.parent)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
    return values


#: told (key, file) when a field index is built: the record store attaches it
Ready = Callable[[str, Path], object]


class FirstUseIndexer:
    """One background thread that builds the field indexes filters asked for, one at a
    time, oldest request first; each request is built once per process (a failure is
    logged and not retried: the key stays scanned)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._asked: set[Path] = set()
        self._queue: queue.Queue[tuple[Path, Path, str, Ready]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.built: list[Path] = []  # what this process built, in order (for tests, logs)

    def request(self, segment_dir: Path, records_path: Path, key: str, ready: Ready) -> None:
        """Build `key`'s index of the segment unless asked before; `ready(key, path)`
        once it is there (also at once, when another process built it meanwhile)."""
        out = path_for(segment_dir, key)
        with self._lock:
            if out in self._asked:
                return
            self._asked.add(out)
            self._queue.put((out, records_path, key, ready))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="field-index-builder", daemon=True
                )
                self._thread.start()

    def wait(self, timeout: float = 60.0) -> bool:
        """Until every request so far is built (True) or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _run(self) -> None:
        while True:
            out, records_path, key, ready = self._queue.get()
            try:
                if key_of(out) != key:
                    started = time.perf_counter()
                    values = build(records_path, key, out)
                    LOG.info(
                        "built the field index of %r for %s: %d values in %.2f s",
                        key,
                        out.parent.parent,
                        values,
                        time.perf_counter() - started,
                    )
                    self.built.append(out)
                ready(key, out)
            except Exception as error:  # a read-only mount, a full disk: keep scanning
                LOG.warning("no field index of %r for %s: %s", key, out.parent.parent, error)
            finally:
                self._queue.task_done()


#: the process's builder (a server holds many versions of many indexes; one thread
#: builds for all of them, so first uses never compete for more than one core)
BUILDER = FirstUseIndexer()
