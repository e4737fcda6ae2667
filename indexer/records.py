"""The record store of one index version: position -> (id, label, text), in SQLite.

Why SQLite (standard library): random access by position for the top-k hits of a
query without holding millions of texts in memory, and a UNIQUE index on ids that
finds duplicates across chunks in bounded memory. A version's store is written once,
under its staging directory, and only read after that.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

_SCHEMA = """
CREATE TABLE records (
    position INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    label TEXT,
    text TEXT NOT NULL
);
"""
_SQL_VARIABLES = 900  # stay under SQLite's bound-parameter limit on any build


class RecordWriter:
    """Appends records with consecutive positions; used only while building a version."""

    def __init__(self, path: Path):
        self._db = sqlite3.connect(path)
        # the staging directory is discarded on a crash, so the journal buys nothing here;
        # the finished file is fsynced before the version is published
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.executescript(_SCHEMA)
        self.count = 0

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), _SQL_VARIABLES):
            part = ids[start : start + _SQL_VARIABLES]
            marks = ",".join("?" * len(part))
            found.update(
                row[0]
                for row in self._db.execute(f"SELECT id FROM records WHERE id IN ({marks})", part)
            )
        return found

    def append(
        self, ids: Sequence[str], labels: Sequence[str | None], texts: Sequence[str]
    ) -> None:
        rows = (
            (self.count + i, row_id, label, text)
            for i, (row_id, label, text) in enumerate(zip(ids, labels, texts, strict=True))
        )
        self._db.executemany("INSERT INTO records VALUES (?, ?, ?, ?)", rows)
        self.count += len(ids)

    def close(self) -> None:
        self._db.commit()
        self._db.close()


class RecordReader:
    """Read-only lookups by position or id, safe across threads.

    One connection, opened (and checked) when the reader is made and shared under a
    lock: everything a version needs is open before a server swaps it in, so a record
    store removed or damaged afterwards cannot fail calls one worker thread at a time.
    Lookups are a few hundred microseconds, far below encoding, so sharing costs little.
    """

    def __init__(self, path: Path):
        uri = f"file:{Path(path).absolute()}?mode=ro&immutable=1"
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = sqlite3.connect(
            uri, uri=True, check_same_thread=False
        )
        try:
            (largest,) = self._db.execute("SELECT MAX(position) FROM records").fetchone()
        except sqlite3.DatabaseError:
            self.close()
            raise
        self.count = 0 if largest is None else int(largest) + 1

    def _execute(self, sql: str, parameters=()):
        if self._db is None:
            raise RuntimeError("the record store is closed")
        return self._db.execute(sql, parameters)

    def fetch(self, positions: Iterable[int]) -> dict[int, tuple[str, str | None, str]]:
        """position -> (id, label, text) for the given positions."""
        wanted = [int(p) for p in positions]
        out: dict[int, tuple[str, str | None, str]] = {}
        with self._lock:
            for start in range(0, len(wanted), _SQL_VARIABLES):
                part = wanted[start : start + _SQL_VARIABLES]
                marks = ",".join("?" * len(part))
                sql = f"SELECT position, id, label, text FROM records WHERE position IN ({marks})"
                for position, row_id, label, text in self._execute(sql, part):
                    out[position] = (row_id, label, text)
        return out

    def positions_of(self, ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._lock:
            for start in range(0, len(ids), _SQL_VARIABLES):
                part = list(ids[start : start + _SQL_VARIABLES])
                marks = ",".join("?" * len(part))
                sql = f"SELECT id, position FROM records WHERE id IN ({marks})"
                for row_id, position in self._execute(sql, part):
                    out[row_id] = position
        return out

    def next_row_id(self) -> int:
        """1 + the largest all-digit id: where row-number ids of added rows start."""
        with self._lock:
            (largest,) = self._execute(
                "SELECT MAX(CAST(id AS INTEGER)) FROM records WHERE id NOT GLOB '*[^0-9]*'"
            ).fetchone()
        return 0 if largest is None else int(largest) + 1

    def iter_all(self, batch: int = 8192):
        """(position, id, label, text) in position order, in batches (for add/delete)."""
        last = -1
        while True:  # keyset pages: no cursor stays open across the lock
            with self._lock:
                rows = self._execute(
                    "SELECT position, id, label, text FROM records WHERE position > ? "
                    "ORDER BY position LIMIT ?",
                    (last, batch),
                ).fetchall()
            if not rows:
                return
            yield rows
            last = rows[-1][0]

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
