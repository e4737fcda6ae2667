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
    """Read-only, thread-safe lookups by position or id (one connection per thread)."""

    def __init__(self, path: Path):
        self._uri = f"file:{Path(path).absolute()}?mode=ro&immutable=1"
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._connection()  # fail now, not on the first query, if the file is unreadable

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self._uri, uri=True, check_same_thread=False)
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    def fetch(self, positions: Iterable[int]) -> dict[int, tuple[str, str | None, str]]:
        """position -> (id, label, text) for the given positions."""
        wanted = [int(p) for p in positions]
        out: dict[int, tuple[str, str | None, str]] = {}
        db = self._connection()
        for start in range(0, len(wanted), _SQL_VARIABLES):
            part = wanted[start : start + _SQL_VARIABLES]
            marks = ",".join("?" * len(part))
            for position, row_id, label, text in db.execute(
                f"SELECT position, id, label, text FROM records WHERE position IN ({marks})", part
            ):
                out[position] = (row_id, label, text)
        return out

    def positions_of(self, ids: Sequence[str]) -> dict[str, int]:
        db = self._connection()
        out: dict[str, int] = {}
        for start in range(0, len(ids), _SQL_VARIABLES):
            part = list(ids[start : start + _SQL_VARIABLES])
            marks = ",".join("?" * len(part))
            for row_id, position in db.execute(
                f"SELECT id, position FROM records WHERE id IN ({marks})", part
            ):
                out[row_id] = position
        return out

    def next_row_id(self) -> int:
        """1 + the largest all-digit id: where row-number ids of added rows start."""
        (largest,) = (
            self._connection()
            .execute("SELECT MAX(CAST(id AS INTEGER)) FROM records WHERE id NOT GLOB '*[^0-9]*'")
            .fetchone()
        )
        return 0 if largest is None else int(largest) + 1

    def iter_all(self, batch: int = 8192):
        """(position, id, label, text) in position order, in batches (for add/delete)."""
        cursor = self._connection().execute(
            "SELECT position, id, label, text FROM records ORDER BY position"
        )
        while rows := cursor.fetchmany(batch):
            yield rows

    def close(self) -> None:
        with self._lock:
            for db in self._connections:
                db.close()
            self._connections.clear()
