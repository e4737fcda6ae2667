"""Reading text tables (CSV, JSON Lines, Parquet) in bounded chunks, with row numbers.

Both the trainer (a few hundred labelled rows) and the indexer (corpora far larger
than memory would allow as Python lists) read through `iter_table`, so the rules for
what makes a usable row live here once: text must be a non-empty string of valid
UTF-8, a labelled table needs a label on every row, ids must be present. Rows that
break a rule are reported as `RowProblem`s with the line (CSV, JSONL) or row
(Parquet) number a person can find in the file; the caller decides whether they are
fatal (training, `--strict`) or skipped with a summary (indexing).

Not for: tokenising or normalising text; that belongs to the encoder.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from siamese_search.core.errors import DataError

SUPPORTED_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
DEFAULT_CHUNK_ROWS = 8192
# Bytes that are not valid UTF-8 survive decoding as lone surrogates (surrogateescape).
_UNDECODABLE = re.compile("[\udc80-\udcff]")

#: the longest field (CSV, in characters) or line (JSON Lines, in bytes) read, and the
#: longest text of any format (Parquet too): a longer one is a row problem, not a read
#: of however much memory it asks for, and every stored text fits a CSV field, so an
#: index's export (what `retrain` trains on) reads back
MAX_FIELD_BYTES = 16 * 1024 * 1024
csv.field_size_limit(MAX_FIELD_BYTES)


@dataclass(frozen=True)
class Columns:
    """Which columns of the table hold what; `label`/`id` None means "not used"."""

    text: str = "text"
    label: str | None = "label"
    id: str | None = None
    #: columns whose values become each row's metadata fields (indexer.metadata)
    metadata: tuple[str, ...] = ()


@dataclass(frozen=True)
class RowProblem:
    """One unusable row: where it is and what is wrong with it."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class Chunk:
    """Usable rows of one chunk, in file order; ids default to the row's 0-based index."""

    texts: list[str] = field(default_factory=list)
    labels: list[str] | None = None
    ids: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    #: each row's fields from the metadata columns, as the format types them (None:
    #: no metadata columns)
    metadata: list[dict] | None = None

    def __len__(self) -> int:
        return len(self.texts)


def table_format(path: Path) -> str:
    fmt = SUPPORTED_SUFFIXES.get(Path(path).suffix.lower())
    if fmt is None:
        raise DataError(
            f"{path}: unsupported file type {Path(path).suffix or '(none)'!r}; "
            f"use one of {', '.join(sorted(SUPPORTED_SUFFIXES))}"
        )
    return fmt


def _check_columns(
    path: Path, available: list[str], columns: Columns, fields_optional: bool = False
) -> None:
    """Every column named must be there; with `fields_optional` (JSON Lines, whose
    objects may leave a field out) the metadata columns need not be."""
    wanted = [("--text-column", columns.text)]
    if columns.label is not None:
        wanted.append(("--label-column", columns.label))
    if columns.id is not None:
        wanted.append(("--id-column", columns.id))
    if not fields_optional:
        wanted += [("--metadata-columns", name) for name in columns.metadata]
    for flag, name in wanted:
        if name not in available:
            shown = ", ".join(repr(c) for c in available) or "(none)"
            raise DataError(
                f"{path}: no column {name!r}; the file has {shown}. Name the right one with {flag}."
            )


class _ChunkBuilder:
    """Applies the row rules and fills chunks; shared by the three formats."""

    def __init__(self, columns: Columns, chunk_rows: int, first_row_id: int = 0):
        self.columns = columns
        self.chunk_rows = chunk_rows
        self.row_index = first_row_id
        self.chunk = self._new_chunk()

    def _new_chunk(self) -> Chunk:
        return Chunk(
            labels=[] if self.columns.label is not None else None,
            metadata=[] if self.columns.metadata else None,
        )

    def add(self, line: int, record: dict[str, object] | None, error: str | None = None) -> None:
        row_index = self.row_index
        self.row_index += 1
        if error is not None:
            self.chunk.problems.append(RowProblem(line, error))
            return
        assert record is not None
        text = record.get(self.columns.text)
        reason = _text_problem(text, self.columns.text)
        label = None
        if reason is None and self.columns.label is not None:
            label = _as_key(record.get(self.columns.label))
            if label is None:
                reason = f"empty label in column {self.columns.label!r}"
        row_id: str | None = str(row_index)
        if reason is None and self.columns.id is not None:
            row_id = _as_key(record.get(self.columns.id))
            if row_id is None:
                reason = f"missing id in column {self.columns.id!r}"
        if reason is None:
            for name, value in ((self.columns.label, label), (self.columns.id, row_id)):
                if name is not None and value is not None and _UNDECODABLE.search(value):
                    reason = f"bytes that are not UTF-8 in column {name!r}"
        if reason is not None:
            self.chunk.problems.append(RowProblem(line, reason))
            return
        assert isinstance(text, str) and row_id is not None  # the checks above ensured both
        self.chunk.texts.append(text)
        self.chunk.ids.append(row_id)
        self.chunk.lines.append(line)
        if self.chunk.labels is not None:
            assert label is not None
            self.chunk.labels.append(label)
        if self.chunk.metadata is not None:
            self.chunk.metadata.append(
                {
                    name: record[name]
                    for name in self.columns.metadata
                    if not _missing(record.get(name))
                }
            )

    def full(self) -> bool:
        return len(self.chunk) + len(self.chunk.problems) >= self.chunk_rows

    def take(self) -> Chunk:
        chunk, self.chunk = self.chunk, self._new_chunk()
        return chunk


def _text_problem(text: object, column: str) -> str | None:
    if text is None:
        return f"no text in column {column!r}"
    if not isinstance(text, str):
        return f"text in column {column!r} is a {type(text).__name__}, not a string"
    if not text.strip():
        return f"empty text in column {column!r}"
    if len(text) > MAX_FIELD_BYTES:  # what a CSV field holds: an index's export reads back
        return (
            f"a text of {len(text):,} characters in column {column!r}; "
            f"the limit is {MAX_FIELD_BYTES:,}"
        )
    if _UNDECODABLE.search(text):
        return f"bytes that are not UTF-8 in column {column!r}"
    return None


def _missing(value: object) -> bool:
    """A metadata cell with nothing in it: absent, null, NaN, or an empty CSV cell."""
    return value is None or value == "" or (isinstance(value, float) and value != value)


def _as_key(value: object) -> str | None:
    """Labels and ids are strings on the wire; 3 and "3" are the same label."""
    if value is None:
        return None
    if isinstance(value, float):
        if value != value:  # NaN from a Parquet null
            return None
        if value.is_integer():
            value = int(value)
    text = str(value).strip()
    return text or None


def _table_file(path: str | Path) -> Path:
    """`path` as a table file, or a DataError saying what stands there instead."""
    path = Path(path)
    if path.is_dir():
        raise DataError(
            f"{path}: a directory, not a table file; give one CSV, JSON Lines or Parquet file"
        )
    if not path.is_file():
        raise DataError(f"{path}: no such file; check the path")
    return path


def iter_table(
    path: str | Path,
    columns: Columns,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    first_row_id: int = 0,
) -> Iterator[Chunk]:
    """Yield the table's rows in chunks of about `chunk_rows`; memory stays bounded.

    Without an id column, a row's id is its 0-based row number plus `first_row_id`.
    """
    path = _table_file(path)
    fmt = table_format(path)
    builder = _ChunkBuilder(columns, chunk_rows, first_row_id)
    rows = {"csv": _csv_rows, "jsonl": _jsonl_rows, "parquet": _parquet_rows}[fmt]
    for line, record, error in rows(path, columns):
        builder.add(line, record, error)
        if builder.full():
            yield builder.take()
    last = builder.take()
    if len(last) or last.problems:
        yield last


def _parquet():
    """pyarrow.parquet, or a DataError naming the extra that installs it."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            "reading Parquet needs pyarrow, the parquet extra: pip install "
            "'siamese-search[parquet]' (or give the table as CSV or JSON Lines)"
        ) from None
    return pq


def table_columns(path: str | Path) -> list[str]:
    """The column names of a table (CSV header, first JSON object, Parquet schema)."""
    path = _table_file(path)
    fmt = table_format(path)
    if fmt == "parquet":
        pq = _parquet()

        try:
            return list(pq.ParquetFile(path).schema_arrow.names)
        except Exception as error:  # pyarrow raises several types for a corrupt file
            raise DataError(f"{path}: not a readable Parquet file ({error})") from None
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        if fmt == "csv":
            first = handle.read(1)
            if first != "\ufeff":
                handle.seek(0)
            return next(csv.reader(handle), [])
        for line in handle:
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    return []
                return list(record) if isinstance(record, dict) else []
    return []


def count_records(path: str | Path) -> int:
    """How many records `iter_table` will read (usable or not): a progress bar's total.

    Counted as the readers count them, not as lines: a CSV field may span lines, and
    blank lines are no records. One fast pass, small next to encoding the texts.
    """
    path = _table_file(path)
    fmt = table_format(path)
    if fmt == "parquet":
        pq = _parquet()

        return int(pq.ParquetFile(path).metadata.num_rows)
    if fmt == "jsonl":
        with open(path, "rb") as handle:
            return sum(1 for _, raw in _jsonl_lines(handle) if raw is None or raw.strip())
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        try:
            rows = sum(1 for _, row, _ in _csv_records(path, handle) if row != [])
        except DataError:
            return 0  # the reading pass reports the problem; the bar just has no total
    return max(rows - 1, 0)  # the header


def _csv_records(path: Path, handle) -> Iterator[tuple[int, list[str] | None, str | None]]:
    """(first line, fields, None) per CSV record ([] for a blank line), or (first
    line, None, why) for one that cannot be read, from the header on.

    Read strictly: a quoted field followed by more than a delimiter (`"a"b`) is a
    problem, not silently rejoined, and a quote left open is found. A quote left open
    swallows every line up to the next quote character; the record's problem names
    the lines it ran over, and when the file ends inside it, the file is refused
    (DataError): the rest of the file was read as one field, however many rows it
    held, so skipping it as one bad row would publish a table cut short.
    """
    reader = csv.reader(handle, strict=True)
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            end = reader.line_num
            if str(error) == "unexpected end of data":
                raise DataError(
                    f"{path}: line {start}: a quoted field opened on this line is never "
                    f"closed, so lines {start}-{end} (the rest of the file) were read as one "
                    'field. Close the quote; a quote inside a quoted field is written twice ("")'
                ) from None
            ran = f" (the record ran over lines {start}-{end}: is a quote left open?)"
            yield start, None, f"unreadable CSV: {error}" + (ran if end > start else "")
        else:
            yield start, row, None
        start = reader.line_num + 1


def _csv_rows(path: Path, columns: Columns):
    # surrogateescape keeps undecodable bytes as markers we can report per line,
    # instead of one UnicodeDecodeError for the whole file.
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        first = handle.read(1)
        if first != "\ufeff":  # tolerate a UTF-8 byte-order mark
            handle.seek(0)
        records = _csv_records(path, handle)
        _, header, problem = next(records, (1, None, None))
        if header is None and problem is None:
            raise DataError(f"{path}: the file is empty; expected a header line")
        if header is None:
            raise DataError(f"{path}: not a readable CSV header: {problem}")
        _check_columns(path, header, columns)
        width = len(header)
        for line, row, problem in records:
            if row is None:
                yield line, None, problem
            elif not row:
                continue  # blank line
            elif len(row) != width:
                yield line, None, f"{len(row)} fields where the header has {width}"
            else:
                yield line, dict(zip(header, row, strict=True)), None


def _jsonl_lines(handle) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) per line, or (line number, None) for one longer than
    MAX_FIELD_BYTES, read past in bounded pieces instead of whole."""
    line_no = 0
    while line := handle.readline(MAX_FIELD_BYTES + 1):
        line_no += 1
        if len(line) <= MAX_FIELD_BYTES or line.endswith(b"\n"):
            yield line_no, line
            continue
        while (rest := handle.readline(MAX_FIELD_BYTES)) and not rest.endswith(b"\n"):
            pass
        yield line_no, None


def _jsonl_rows(path: Path, columns: Columns):
    checked = False
    with open(path, "rb") as handle:
        for line_no, raw in _jsonl_lines(handle):
            if raw is None:
                yield line_no, None, f"a line longer than the limit of {MAX_FIELD_BYTES:,} bytes"
                continue
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield line_no, None, "bytes that are not UTF-8"
                continue
            except json.JSONDecodeError as error:
                yield line_no, None, f"not valid JSON ({error.msg})"
                continue
            if not isinstance(record, dict):
                yield line_no, None, f"a JSON {type(record).__name__}, expected an object"
                continue
            if not checked:
                _check_columns(path, list(record), columns, fields_optional=True)
                checked = True
            yield line_no, record, None
    if not checked:
        raise DataError(f"{path}: no JSON object found; expected one object per line")


def _parquet_rows(path: Path, columns: Columns):
    pq = _parquet()

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{path}: not a readable Parquet file ({error})") from None
    _check_columns(path, parquet.schema_arrow.names, columns)
    wanted = [c for c in (columns.text, columns.label, columns.id) if c is not None]
    wanted += [c for c in columns.metadata if c not in wanted]
    row = 0
    for batch in parquet.iter_batches(batch_size=DEFAULT_CHUNK_ROWS, columns=wanted):
        values = {name: batch.column(name).to_pylist() for name in wanted}
        for i in range(batch.num_rows):
            row += 1
            yield row, {name: values[name][i] for name in wanted}, None


def describe_problems(path: Path, problems: list[RowProblem], limit: int = 10) -> str:
    """A summary a person can act on: counts by reason, then the first few lines."""
    by_reason = Counter(p.reason for p in problems)
    summary = "; ".join(f"{count} x {reason}" for reason, count in by_reason.most_common())
    shown = "\n  ".join(str(p) for p in problems[:limit])
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{path}: {len(problems)} unusable row(s) ({summary}):\n  {shown}{more}"


@dataclass
class Table:
    """A whole (small) table in memory: what the trainer and the evaluation read."""

    texts: list[str]
    labels: list[str] | None
    ids: list[str]
    #: each row's metadata fields (None: none given)
    metadata: list[dict] | None = None

    @property
    def label_list(self) -> list[str]:
        """The labels of a table read with a label column (a bug to ask otherwise)."""
        if self.labels is None:
            raise ValueError("this table was read without a label column")
        return self.labels


def read_table(path: str | Path, columns: Columns) -> Table:
    """Read a table that must be entirely usable; any bad row is a DataError."""
    path = Path(path)
    texts: list[str] = []
    labels: list[str] | None = [] if columns.label is not None else None
    ids: list[str] = []
    problems: list[RowProblem] = []
    for chunk in iter_table(path, columns):
        texts += chunk.texts
        ids += chunk.ids
        if labels is not None:
            labels += chunk.labels or []
        problems += chunk.problems
    if problems:
        raise DataError(describe_problems(path, problems) + "\nFix or remove these rows.")
    if not texts:
        raise DataError(f"{path}: no rows; expected at least one text in {columns.text!r}")
    return Table(texts=texts, labels=labels, ids=ids)


def check_trainable(path: Path, labels: list[str]) -> Counter:
    """Triplets need >= 2 classes and an anchor-positive pair in every class."""
    counts = Counter(labels)
    if len(counts) < 2:
        raise DataError(
            f"{path}: found {len(counts)} class ({', '.join(counts) or 'none'}); "
            "training needs at least 2 classes to draw negatives from"
        )
    singles = sorted(label for label, n in counts.items() if n < 2)
    if singles:
        raise DataError(
            f"{path}: {len(singles)} class(es) have a single example: {name_some(singles)}; "
            "each class needs at least 2 (an anchor and a positive). Add examples or drop them."
        )
    return counts


def name_some(names: list[str], most: int = 10) -> str:
    """Up to `most` names, quoted, and how many more: a message stays a line whatever
    a table holds (100 single-example labels were listed one by one)."""
    shown = ", ".join(map(repr, names[:most]))
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
