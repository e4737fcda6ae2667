"""The record store of one index version: position -> (id, label, text, metadata), in SQLite.

Why SQLite (standard library): random access by position for the top-k hits of a
query without holding millions of texts in memory, and a UNIQUE index on ids that
finds duplicates across chunks in bounded memory. A version's store is written once,
under its staging directory, and only read after that.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from siamese_search.core.errors import DamagedArtifactError
from siamese_search.indexer.metadata import LIST, Filter, indexed_values, leaf_query, mask_of

_SCHEMA = """
CREATE TABLE records (
    position INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    label TEXT,
    text TEXT NOT NULL,
    metadata TEXT
);
"""
#: where a filter's SQL (indexer.metadata) reads a row's metadata
METADATA_COLUMN = "records.metadata"
#: the metadata fields declared filterable (`--index-metadata`): each value of each
#: declared key as a row of its own, indexed by (key, kind, value), so a filter on the
#: key reads an index range instead of parsing every row's JSON (indexer.metadata's
#: _indexed_sql). `item`: 1 for a list's item (a range passes scalars only). The same
#: tables hold a field index built on first use (indexer.field_index), in a file of its own.
FIELD_INDEX_SCHEMA = """
CREATE TABLE indexed_keys (key TEXT PRIMARY KEY);
CREATE TABLE field_values (key TEXT NOT NULL, kind TEXT NOT NULL, value, item INTEGER NOT NULL,
                           position INTEGER NOT NULL);
"""
#: made once the values are in (faster than row by row); covering (item, position too):
#: a condition's rows are read from the index alone
FIELD_VALUES_INDEX = (
    "CREATE INDEX field_values_by_value ON field_values(key, kind, value, item, position)"
)
INSERT_FIELD_VALUE = "INSERT INTO field_values VALUES (?, ?, ?, ?, ?)"
_SQL_VARIABLES = 900  # stay under SQLite's bound-parameter limit on any build


def field_values(
    rows: Iterable[tuple[int, str | None]], keys: frozenset[str]
) -> Iterator[tuple[str, str, object, int, int]]:
    """The field_values rows (key, kind, value, item, position) of `keys` for each
    (position, stored metadata JSON) row."""
    for position, fields in rows:
        if fields:
            for value in indexed_values(fields, keys):
                yield (*value, position)


#: SQLite attaches at most 10 files to a connection by default
MAX_ATTACHED_FIELD_INDEXES = 8


class RecordWriter:
    """Appends records with consecutive positions; used only while building a version.
    `indexed_keys`: the metadata fields to index (`--index-metadata`)."""

    def __init__(self, path: Path, indexed_keys: Sequence[str] = ()):
        self._db = sqlite3.connect(path)
        # the staging directory is discarded on a crash, so the journal buys nothing here;
        # the finished file is fsynced before the version is published
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.executescript(_SCHEMA)
        self._indexed = frozenset(indexed_keys)
        if self._indexed:
            self._db.executescript(FIELD_INDEX_SCHEMA)
            self._db.executemany(
                "INSERT INTO indexed_keys VALUES (?)", [(k,) for k in sorted(self._indexed)]
            )
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
        self,
        ids: Sequence[str],
        labels: Sequence[str | None],
        texts: Sequence[str],
        metadata: Sequence[str | None] | None = None,
    ) -> None:
        """Rows in order; `metadata`: each row's fields as stored JSON (None: none)."""
        stored = metadata if metadata is not None else [None] * len(ids)
        rows = (
            (self.count + i, row_id, label, text, fields)
            for i, (row_id, label, text, fields) in enumerate(
                zip(ids, labels, texts, stored, strict=True)
            )
        )
        self._db.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?)", rows)
        if self._indexed:
            numbered = ((self.count + i, fields) for i, fields in enumerate(stored))
            self._db.executemany(INSERT_FIELD_VALUE, field_values(numbered, self._indexed))
        self.count += len(ids)

    def close(self) -> None:
        if self._indexed:
            self._db.execute(FIELD_VALUES_INDEX)
        self._db.commit()
        self._db.close()


class RecordReader:
    """Read-only lookups by position or id, safe across threads.

    One connection, opened (and checked) when the reader is made and shared under a
    lock: everything a version needs is open before a server swaps it in, so a record
    store removed or damaged afterwards cannot fail calls one worker thread at a time.
    Lookups are a few hundred microseconds, far below encoding, so sharing costs little.
    SQLite reads pages as they are asked for, though: a file damaged in place after
    the open fails the lookups that read a damaged page, with DamagedArtifactError.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
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
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(records)")}
        #: stores written before metadata have no column for it: read as none
        self.has_metadata = "metadata" in columns
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master")}
        #: the metadata fields this store indexes (RecordWriter's `indexed_keys`)
        self.indexed_keys: frozenset[str] = (
            frozenset(row[0] for row in self._db.execute("SELECT key FROM indexed_keys"))
            if "indexed_keys" in tables
            else frozenset()
        )
        self._keys: dict[str, set[str]] | None = None
        #: key -> schema of a field index built on first use and attached (field_index)
        self._attached: dict[str, str] = {}

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Hold the connection; SQLite's word that the file is damaged (it changed on
        disk after the version was checked and opened) becomes DamagedArtifactError,
        which says what to do, where it was an unexplained internal error."""
        with self._lock:
            try:
                yield
            except sqlite3.DatabaseError as error:
                if getattr(error, "sqlite_errorname", "") not in (
                    "SQLITE_CORRUPT",
                    "SQLITE_NOTADB",
                ):
                    raise
                raise DamagedArtifactError(
                    f"{self.path}: the record store is damaged ({error}): the file changed "
                    "on disk after this index version was checked and loaded. Restore the "
                    "version from a backup, or build the index again"
                ) from None

    def _execute(self, sql: str, parameters=()):
        if self._db is None:
            raise RuntimeError("the record store is closed")
        return self._db.execute(sql, parameters)

    def fetch(self, positions: Iterable[int]) -> dict[int, tuple[str, str | None, str]]:
        """position -> (id, label, text) for the given positions."""
        wanted = [int(p) for p in positions]
        out: dict[int, tuple[str, str | None, str]] = {}
        with self._reading():
            for start in range(0, len(wanted), _SQL_VARIABLES):
                part = wanted[start : start + _SQL_VARIABLES]
                marks = ",".join("?" * len(part))
                sql = f"SELECT position, id, label, text FROM records WHERE position IN ({marks})"
                for position, row_id, label, text in self._execute(sql, part):
                    out[position] = (row_id, label, text)
        return out

    def positions_of(self, ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._reading():
            for start in range(0, len(ids), _SQL_VARIABLES):
                part = list(ids[start : start + _SQL_VARIABLES])
                marks = ",".join("?" * len(part))
                sql = f"SELECT id, position FROM records WHERE id IN ({marks})"
                for row_id, position in self._execute(sql, part):
                    out[row_id] = position
        return out

    def metadata_of(self, positions: Iterable[int]) -> dict[int, str]:
        """position -> stored metadata JSON, for the positions that have any."""
        if not self.has_metadata:
            return {}
        wanted = [int(p) for p in positions]
        out: dict[int, str] = {}
        with self._reading():
            for start in range(0, len(wanted), _SQL_VARIABLES):
                part = wanted[start : start + _SQL_VARIABLES]
                marks = ",".join("?" * len(part))
                sql = (
                    f"SELECT position, metadata FROM records WHERE position IN ({marks}) "
                    "AND metadata IS NOT NULL"
                )
                for position, stored in self._execute(sql, part):
                    out[position] = stored
        return out

    def positions_where(self, condition: str, parameters: tuple) -> list[int]:
        """Positions of the rows meeting an SQL condition on `records` (a compiled
        filter, indexer.metadata), in order."""
        if not self.has_metadata:  # no fields at all: a field's test sees none
            condition = condition.replace(METADATA_COLUMN, "NULL")
        with self._reading():
            rows = self._execute(
                f"SELECT position FROM records WHERE {condition} ORDER BY position", parameters
            ).fetchall()
        return [row[0] for row in rows]

    @property
    def field_indexed(self) -> frozenset[str]:
        """The metadata fields a filter reads from an index here: declared at build or
        built on first use (indexer.field_index)."""
        return self.indexed_keys | frozenset(self._attached)

    def attach_field_index(self, key: str, path: Path) -> bool:
        """Read `key`'s tests from a field index built on first use (a whole file, never
        changed after); False when it cannot be (store closed, SQLite's bound on
        attached files reached: the key stays scanned)."""
        with self._reading():
            if self._db is None or key in self.indexed_keys or key in self._attached:
                return key in self._attached
            if len(self._attached) >= MAX_ATTACHED_FIELD_INDEXES:
                return False
            schema = f"first_use_{len(self._attached)}"
            uri = f"file:{Path(path).absolute()}?mode=ro&immutable=1"
            self._db.execute(f"ATTACH DATABASE ? AS {schema}", (uri,))
            self._attached[key] = schema
            return True

    def passing(self, where: Filter) -> np.ndarray:
        """The rows that pass a filter, as a boolean mask over this store's positions:
        from the field indexes, condition by condition, when the filter tests only
        indexed fields; else one SQL scan of the rows."""
        if not where.reads_only(self.field_indexed):
            sql, params = where.sql_for(self.indexed_keys)
            mask = np.zeros(self.count, dtype=bool)
            mask[self.positions_where(sql, params)] = True
            return mask

        def positions(condition) -> np.ndarray:
            schema = self._attached.get(condition.key)
            table = f"{schema}.field_values" if schema else "field_values"
            sql, params = leaf_query(condition, table)
            with self._reading():
                found = self._execute(sql, params).fetchall()
            return np.fromiter((row[0] for row in found), dtype=np.int64, count=len(found))

        return mask_of(where.clauses, self.count, positions)

    def metadata_keys(self) -> dict[str, set[str]]:
        """The metadata fields this store holds, and their value kinds ("string",
        "number", "bool"; "list" for a list): read once (a scan), for filters to check
        their keys."""
        if self._keys is None:
            keys: dict[str, set[str]] = {}
            if self.has_metadata:
                kinds = {"text": "string", "integer": "number", "real": "number"}
                kinds.update({"true": "bool", "false": "bool"})
                # a list's items by their own types; a scalar by its type (json_each
                # of a boolean's value would see 1 or 0)
                sql = (
                    "SELECT DISTINCT field.key, CASE WHEN field.type = 'array' THEN item.type "
                    "ELSE field.type END FROM records, json_each(records.metadata) AS field, "
                    "json_each(CASE WHEN field.type = 'array' THEN field.value ELSE '[0]' END) "
                    "AS item WHERE records.metadata IS NOT NULL"
                )
                with self._reading():
                    found = self._execute(sql).fetchall()
                    lists = self._execute(
                        "SELECT DISTINCT field.key FROM records, json_each(records.metadata) "
                        "AS field WHERE records.metadata IS NOT NULL AND field.type = 'array'"
                    ).fetchall()
                for key, kind in found:
                    if kind in kinds:
                        keys.setdefault(key, set()).add(kinds[kind])
                for (key,) in lists:
                    keys.setdefault(key, set()).add(LIST)
            self._keys = keys
        return self._keys

    def next_row_id(self) -> int:
        """1 + the largest all-digit id: where row-number ids of added rows start."""
        with self._reading():
            (largest,) = self._execute(
                "SELECT MAX(CAST(id AS INTEGER)) FROM records WHERE id NOT GLOB '*[^0-9]*'"
            ).fetchone()
        return 0 if largest is None else int(largest) + 1

    def iter_all(self, batch: int = 8192, with_metadata: bool = False, after: int = -1):
        """(position, id, label, text) in position order, in batches (for add/delete);
        `with_metadata`: and the stored metadata JSON (None: none); `after`: from the
        position after this one."""
        last = after
        fields = "position, id, label, text"
        if with_metadata:
            fields += ", metadata" if self.has_metadata else ", NULL"
        while True:  # keyset pages: no cursor stays open across the lock
            with self._reading():
                rows = self._execute(
                    f"SELECT {fields} FROM records WHERE position > ? ORDER BY position LIMIT ?",
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
