"""`siamese-index export`: the live rows of a version as a table file (id, label, text).

Why: examples added over the API (Upsert) live only in the index. Exported, they are a
table like any other: `siamese-train` learns from it (`--from-index` exports for
itself) and `siamese-index build` indexes it again (export -> build keeps every id,
label and text; tested). CSV, JSON Lines or Parquet, by the file's suffix, as the
tables the project reads. Rows are read from the records in keyset pages and
written as they come, so memory stays bounded whatever the index's size; the file
appears whole or not at all (written beside, then renamed).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from siamese_search.core.errors import UserError
from siamese_search.core.tables import SUPPORTED_SUFFIXES
from siamese_search.indexer import layout
from siamese_search.indexer.metadata import RECORD_FIELDS, decode
from siamese_search.indexer.store import IndexVersion, open_index

#: rows read from the records and written at a time
PAGE_ROWS = 8192


@dataclass(frozen=True)
class ExportReport:
    version: str
    rows: int
    labelled: bool
    path: Path
    #: the columns the metadata fields were written as (build them back with
    #: --metadata-columns): each field's name, but for those in `renamed`
    fields: tuple[str, ...] = ()
    #: fields written as text though they held numbers, booleans or lists: by a CSV,
    #: or by Parquet when one field mixes kinds (they read back as strings: a range
    #: filter would no longer take them)
    as_text: tuple[str, ...] = ()
    #: fields named as one of the record's own columns, by the column written instead
    #: (field_columns)
    renamed: dict[str, str] = field(default_factory=dict)


def field_columns(fields: tuple[str, ...]) -> dict[str, str]:
    """Each metadata field's column in the export: its own name, except for a field
    named as one of the record's columns (id, label, text), which writes can no longer
    make (indexer.metadata.RECORD_FIELDS) but an index written before may hold. Such a
    field is written as `metadata.NAME`, so every row still exports whole, instead of
    the export (and `siamese-train --from-index`, `retrain`) refusing the index."""
    taken = set(fields) | set(RECORD_FIELDS)
    columns = {}
    for name in fields:
        column = name
        if name in RECORD_FIELDS:
            while column in taken:
                column = f"metadata.{column}"
            taken.add(column)
        columns[name] = column
    return columns


def open_version(index_dir: Path, version: str | None) -> IndexVersion:
    """A retained version of `index_dir` (the current one without `version`)."""
    if version is None:
        return open_index(index_dir, load_indexes=False)
    if version not in layout.list_versions(index_dir):
        retained = ", ".join(layout.list_versions(index_dir)) or "none"
        raise UserError(f"{index_dir} has no version {version!r}; retained: {retained}")
    return open_index(layout.version_dir(index_dir, version), load_indexes=False)


def iter_rows(
    version: IndexVersion, fields: tuple[str, ...] = (), page: int = PAGE_ROWS
) -> Iterator[list[tuple]]:
    """(id, label, text, *fields) of the version's live rows in position order, a page
    at a time; a field a row lacks is None."""
    for rows in version.records().iter_all(page, with_metadata=bool(fields)):
        out = []
        for row in rows:
            values = decode(row[4]) if fields else {}
            out.append((row[1], row[2], row[3], *(values.get(name) for name in fields)))
        yield out


def export_version(
    index_dir: Path,
    out: Path,
    version: str | None = None,
    show_progress: bool = True,
    page_rows: int = PAGE_ROWS,
) -> ExportReport:
    """Write the live rows of a version of `index_dir` to `out` (format by suffix),
    `page_rows` rows read and written at a time."""
    out = Path(out)
    fmt = SUPPORTED_SUFFIXES.get(out.suffix.lower())
    if fmt is None:
        raise UserError(
            f"{out}: unsupported file type {out.suffix or '(none)'!r}; "
            f"use one of {', '.join(sorted(SUPPORTED_SUFFIXES))}"
        )
    if not out.parent.is_dir():
        raise UserError(f"{out}: no directory {out.parent}; create it or choose another --out")
    with open_version(Path(index_dir), version) as opened:
        labelled = opened.has_labels
        fields = tuple(sorted(opened.metadata_keys()))
        column_of = field_columns(fields)
        columns = (["id", "label", "text"] if labelled else ["id", "text"]) + [
            column_of[name] for name in fields
        ]
        temporary = out.with_name(f".{out.name}.partial-{os.getpid()}")
        bar = tqdm(
            total=opened.count,
            desc=f"exporting {opened.name}",
            unit="row",
            disable=not show_progress,
            mininterval=0.5,
        )
        written = 0
        writer: _CsvWriter | _JsonlWriter | _ParquetWriter
        if fmt == "parquet":  # a typed file: each field's type is fixed before any page
            types = parquet_types(opened, fields, page_rows)
            writer = _ParquetWriter(
                temporary, columns, {column_of[name]: kind for name, kind in types.items()}
            )
        else:
            writer = _WRITERS[fmt](temporary, columns)
        try:
            with bar, writer as write:
                for rows in iter_rows(opened, fields, page_rows):
                    page = rows if labelled else [(row[0], *row[2:]) for row in rows]
                    write(page)
                    written += len(page)
                    bar.update(len(page))
            os.replace(temporary, out)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        as_text = tuple(sorted(getattr(writer, "as_text", ())))
        renamed = {name: column for name, column in column_of.items() if name != column}
        return ExportReport(
            opened.name, written, labelled, out, tuple(column_of.values()), as_text, renamed
        )


class _CsvWriter:
    """CSV: a missing field is an empty cell, a list its JSON text (a CSV cell is text:
    read back, every field is a string)."""

    def __init__(self, path: Path, columns: list[str]):
        self._file = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._csv = csv.writer(self._file)
        self._csv.writerow(columns)
        self._columns = columns
        #: the columns that held a value other than a string (ExportReport.as_text)
        self.as_text: set[str] = set()

    def __enter__(self):
        def write(rows: list[tuple]) -> None:
            self._csv.writerows(
                tuple(
                    self._cell(name, value) for name, value in zip(self._columns, row, strict=True)
                )
                for row in rows
            )

        return write

    def _cell(self, name: str, value) -> object:
        """A value as a CSV cell: None empty, a list its JSON text; a column that holds
        anything but a string is noted in `as_text`."""
        if value is None:
            return ""
        if not isinstance(value, str):
            self.as_text.add(name)
        if isinstance(value, list):
            return json.dumps(value, ensure_ascii=False)
        return value

    def __exit__(self, *exc_info) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


class _JsonlWriter:
    def __init__(self, path: Path, columns: list[str]):
        self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115
        self._columns = columns

    def __enter__(self):
        def write(rows: list[tuple]) -> None:
            self._file.writelines(
                json.dumps(
                    {
                        name: value
                        for name, value in zip(self._columns, row, strict=True)
                        if value is not None
                    },
                    ensure_ascii=False,
                )
                + "\n"
                for row in rows
            )

        return write

    def __exit__(self, *exc_info) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def parquet_types(version: IndexVersion, fields: tuple[str, ...], page: int) -> dict:
    """Each field's Parquet type, from every live row's values (a pass before the
    writing one): one page's values cannot fix a file's schema, since a field may be
    absent from the first page, or hold a whole number there and a fraction later.
    None: the field mixes kinds of values and is written as JSON text."""
    import pyarrow as pa

    seen: dict[str, set[str]] = {name: set() for name in fields}
    if fields:
        for rows in iter_rows(version, fields, page):
            for row in rows:
                for name, value in zip(fields, row[3:], strict=True):
                    if value is not None:
                        seen[name].add(_parquet_kind(value))
    return {name: _arrow_type(pa, kinds) for name, kinds in seen.items()}


def _parquet_kind(value: object) -> str:
    """ "bool", "int", "float", "string", or "list of <kinds>" (sorted, comma-joined):
    finer than indexer.metadata's kinds, which count int and float as one "number"
    (a Parquet column must tell them apart)."""
    if isinstance(value, list):
        return "list of " + ",".join(sorted({_parquet_kind(item) for item in value}))
    if isinstance(value, bool):
        return "bool"
    return {int: "int", float: "float", str: "string"}.get(type(value), "other")


def _arrow_type(pa, kinds: set[str]):
    """The Parquet type that holds every value of these kinds; None: none does."""
    scalar = {
        frozenset(): pa.string(),  # no values: a column of nulls
        frozenset({"bool"}): pa.bool_(),
        frozenset({"int"}): pa.int64(),
        frozenset({"float"}): pa.float64(),
        frozenset({"int", "float"}): pa.float64(),
        frozenset({"string"}): pa.string(),
    }
    if kinds and all(kind.startswith("list of ") for kind in kinds):
        items = {item for kind in kinds for item in kind[len("list of ") :].split(",") if item}
        item_type = scalar.get(frozenset(items))
        return None if item_type is None else pa.list_(item_type)
    return scalar.get(frozenset(kinds))


class _ParquetWriter:
    """Parquet with a schema fixed up front: the record columns as strings, each field
    by `types` (parquet_types); a field of mixed kinds as JSON text, named in
    `as_text` as the CSV writer names its own."""

    def __init__(self, path: Path, columns: list[str], types: dict):
        from siamese_search.core.tables import _parquet

        pq = _parquet()
        import pyarrow as pa

        self._pa = pa
        self._path = path
        self._columns = columns
        self.as_text = {name for name, kind in types.items() if kind is None}
        self._schema = pa.schema([(name, types.get(name) or pa.string()) for name in columns])
        self._writer = pq.ParquetWriter(path, self._schema)

    def __enter__(self):
        def write(rows: list[tuple]) -> None:
            if not rows:
                return
            arrays = []
            for name, values in zip(self._columns, zip(*rows, strict=True), strict=True):
                if name in self.as_text:
                    values = tuple(None if v is None else json.dumps(v) for v in values)
                arrays.append(self._pa.array(values, type=self._schema.field(name).type))
            self._writer.write_table(self._pa.Table.from_arrays(arrays, schema=self._schema))

        return write

    def __exit__(self, *exc_info) -> None:
        self._writer.close()


#: the untyped writers (Parquet's takes each field's type as well: parquet_types)
_WRITERS: dict[str, type[_CsvWriter | _JsonlWriter]] = {
    "csv": _CsvWriter,
    "jsonl": _JsonlWriter,
}
