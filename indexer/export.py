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
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from siamese_search.core.errors import UserError
from siamese_search.core.tables import SUPPORTED_SUFFIXES
from siamese_search.indexer import layout
from siamese_search.indexer.store import IndexVersion, open_index

#: rows read from the records and written at a time
PAGE_ROWS = 8192


@dataclass(frozen=True)
class ExportReport:
    version: str
    rows: int
    labelled: bool
    path: Path


def open_version(index_dir: Path, version: str | None) -> IndexVersion:
    """A retained version of `index_dir` (the current one without `version`)."""
    if version is None:
        return open_index(index_dir, load_indexes=False)
    if version not in layout.list_versions(index_dir):
        retained = ", ".join(layout.list_versions(index_dir)) or "none"
        raise UserError(f"{index_dir} has no version {version!r}; retained: {retained}")
    return open_index(layout.version_dir(index_dir, version), load_indexes=False)


def iter_rows(version: IndexVersion, page: int = PAGE_ROWS) -> Iterator[list[tuple]]:
    """(id, label, text) of the version's live rows in position order, a page at a time."""
    for rows in version.records().iter_all(page):
        yield [(row_id, label, text) for _, row_id, label, text in rows]


def export_version(
    index_dir: Path, out: Path, version: str | None = None, show_progress: bool = True
) -> ExportReport:
    """Write the live rows of a version of `index_dir` to `out` (format by suffix)."""
    out = Path(out)
    fmt = SUPPORTED_SUFFIXES.get(out.suffix.lower())
    if fmt is None:
        raise UserError(
            f"{out}: unsupported file type {out.suffix or '(none)'!r}; "
            f"use one of {', '.join(sorted(SUPPORTED_SUFFIXES))}"
        )
    with open_version(Path(index_dir), version) as opened:
        labelled = opened.has_labels
        columns = ["id", "label", "text"] if labelled else ["id", "text"]
        temporary = out.with_name(f".{out.name}.partial-{os.getpid()}")
        bar = tqdm(
            total=opened.count,
            desc=f"exporting {opened.name}",
            unit="row",
            disable=not show_progress,
            mininterval=0.5,
        )
        written = 0
        try:
            with bar, _WRITERS[fmt](temporary, columns) as write:
                for rows in iter_rows(opened):
                    page = rows if labelled else [(row_id, text) for row_id, _, text in rows]
                    write(page)
                    written += len(page)
                    bar.update(len(page))
            os.replace(temporary, out)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return ExportReport(opened.name, written, labelled, out)


class _CsvWriter:
    def __init__(self, path: Path, columns: list[str]):
        self._file = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._csv = csv.writer(self._file)
        self._csv.writerow(columns)

    def __enter__(self):
        return self._csv.writerows

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
                json.dumps(dict(zip(self._columns, row, strict=True)), ensure_ascii=False) + "\n"
                for row in rows
            )

        return write

    def __exit__(self, *exc_info) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


class _ParquetWriter:
    def __init__(self, path: Path, columns: list[str]):
        from siamese_search.core.tables import _parquet

        pq = _parquet()
        import pyarrow as pa

        self._pa = pa
        self._schema = pa.schema([(name, pa.string()) for name in columns])
        self._writer = pq.ParquetWriter(path, self._schema)
        self._columns = columns

    def __enter__(self):
        def write(rows: list[tuple]) -> None:
            arrays = [list(values) for values in zip(*rows, strict=True)] if rows else []
            table = self._pa.table(
                dict(zip(self._columns, arrays, strict=True)), schema=self._schema
            )
            self._writer.write_table(table)

        return write

    def __exit__(self, *exc_info) -> None:
        self._writer.close()


_WRITERS: dict[str, type[_CsvWriter | _JsonlWriter | _ParquetWriter]] = {
    "csv": _CsvWriter,
    "jsonl": _JsonlWriter,
    "parquet": _ParquetWriter,
}
