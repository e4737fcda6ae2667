"""Writing index versions: full builds, additions and deletions.

Every operation writes a complete new version in a staging directory and publishes
it atomically (see `indexer.layout`). A version stores its unit vectors
(`vectors.f32`), so `add` and `delete` re-use them and only encode new texts; the
FAISS index of the new version is rebuilt from the stored vectors.

Memory stays bounded by the chunk size plus the index itself: texts go to SQLite,
vectors to a flat file, and the FAISS index is filled from that file by sequential
reads (an IVF index trains on a sample read through a memory map first).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from siamese_search.core.atomic import write_json_atomic
from siamese_search.core.encoders.base import sha256_files
from siamese_search.core.errors import DataError, UserError
from siamese_search.core.model_artifact import EmbeddingModel
from siamese_search.core.provenance import package_versions, utc_now
from siamese_search.core.tables import (
    Chunk,
    Columns,
    RowProblem,
    Table,
    count_records,
    describe_problems,
    iter_table,
)
from siamese_search.indexer import layout
from siamese_search.indexer.backends import INDEX_KINDS, create_index, resolve_kind
from siamese_search.indexer.records import RecordWriter
from siamese_search.indexer.store import FORMAT, FORMAT_VERSION, NO_LABEL, IndexVersion, open_index

ADD_BATCH = 65536
MAX_REPORTED_PROBLEMS = 20


@dataclass
class BuildOptions:
    index_type: str = "auto"
    index_params: dict | None = None
    keep_versions: int = layout.DEFAULT_KEEP_VERSIONS
    strict: bool = False
    chunk_rows: int = 8192
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.index_type not in INDEX_KINDS:
            raise UserError(f"--index-type must be one of {', '.join(INDEX_KINDS)}")
        if self.keep_versions < 1:
            raise UserError("--keep must be at least 1 (the current version)")


@dataclass
class BuildReport:
    version: str
    count: int
    added: int
    removed: int
    index_type: str
    problems: list[RowProblem] = field(default_factory=list)
    seconds: float = 0.0


class _VersionWriter:
    """Fills one staging directory: records, vectors, label codes; then index + manifest."""

    def __init__(self, staging: Path, dim: int, with_labels: bool):
        self.staging = staging
        self.dim = dim
        self.records = RecordWriter(staging / layout.RECORDS_FILE)
        self.vectors = open(staging / layout.VECTORS_FILE, "wb")
        self.label_file = open(staging / layout.LABELS_FILE, "wb") if with_labels else None
        self.label_names: list[str] = []
        self._codes: dict[str, int] = {}
        self.label_counts: Counter = Counter()

    @property
    def count(self) -> int:
        return self.records.count

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        return self.records.existing_ids(ids)

    def append(
        self,
        ids: Sequence[str],
        labels: Sequence[str | None] | None,
        texts: Sequence[str],
        vectors: np.ndarray,
    ) -> None:
        if not ids:
            return
        if self.label_file is not None:
            assert labels is not None
            codes = np.array([self._code(label) for label in labels], dtype=np.int32)
            codes.tofile(self.label_file)
            self.label_counts.update(label for label in labels if label)
        self.records.append(ids, labels if labels is not None else [None] * len(ids), texts)
        np.ascontiguousarray(vectors, dtype=np.float32).tofile(self.vectors)

    def _code(self, label: str | None) -> int:
        if not label:
            return NO_LABEL
        code = self._codes.get(label)
        if code is None:
            code = self._codes[label] = len(self.label_names)
            self.label_names.append(label)
        return code

    def finish(self, kind: str, params: dict | None, model: EmbeddingModel, extra: dict) -> dict:
        self.records.close()
        self.vectors.close()
        if self.label_file is not None:
            self.label_file.close()
        count = self.count
        resolved = resolve_kind(kind, count)
        index = create_index(resolved, self.dim, count, params)
        if count:
            vectors_path = self.staging / layout.VECTORS_FILE
            if index.needs_training:  # IVF: centroids from a random sample of the vectors
                stored = np.memmap(
                    vectors_path, dtype=np.float32, mode="r", shape=(count, self.dim)
                )
                sample_size = min(count, index.params.get("nlist", 1) * 256)
                sample = np.sort(np.random.default_rng(0).choice(count, sample_size, replace=False))
                index.train(np.asarray(stored[sample]))
                del stored
            # plain sequential reads, not a memory map: mapped pages would count in the
            # process's memory on top of the index being built
            with open(vectors_path, "rb") as handle:
                while batch := handle.read(ADD_BATCH * self.dim * 4):
                    index.add(np.frombuffer(batch, dtype=np.float32).reshape(-1, self.dim))
        index.save(self.staging / layout.INDEX_FILE)
        layout.checkpoint("before-manifest")
        files = [layout.INDEX_FILE, layout.VECTORS_FILE, layout.RECORDS_FILE]
        if self.label_file is not None:
            files.append(layout.LABELS_FILE)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created_at": utc_now(),
            "count": count,
            "dim": self.dim,
            "metric": "inner_product",
            "normalized": True,
            "similarity": "cosine (vectors are L2-normalised, so inner product = cosine)",
            "index": {"type": resolved, "requested_type": kind, "params": index.params},
            "model": {
                "fingerprint": model.fingerprint,
                "directory": str(Path(model.directory).absolute()),
                "encoder_fingerprint": model.manifest["encoder"]["fingerprint"],
            },
            "labels": (
                {"names": self.label_names, "counts": dict(self.label_counts)}
                if self.label_file is not None
                else None
            ),
            "files": {
                name: {
                    "sha256": sha256_files([self.staging / name]),
                    "bytes": (self.staging / name).stat().st_size,
                }
                for name in files
            },
            "versions": package_versions(),
            **extra,
        }
        write_json_atomic(self.staging / layout.MANIFEST, manifest)
        return manifest


def _problem_summary(problems: list[RowProblem]) -> dict:
    return {
        "count": len(problems),
        "by_reason": dict(Counter(p.reason for p in problems)),
        "first": [str(p) for p in problems[:MAX_REPORTED_PROBLEMS]],
    }


def _copy_base(writer: _VersionWriter, base: IndexVersion, drop: set[int]) -> int:
    """Carry the base version's rows over (minus `drop` positions) without re-encoding."""
    vectors = base.vectors()
    codes = base.label_codes()
    kept = 0
    for rows in base.records().iter_all():
        rows = [row for row in rows if row[0] not in drop]
        if not rows:
            continue
        positions = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        labels = None
        if codes is not None:
            labels = [base.label_names[c] if c >= 0 else None for c in codes[positions]]
        writer.append(
            [r[1] for r in rows], labels, [r[3] for r in rows], np.asarray(vectors[positions])
        )
        kept += len(rows)
    return kept


def _chunks_of(
    source: Path | Table, columns: Columns, options: BuildOptions, first_row_id: int
) -> tuple[Iterator[Chunk], int]:
    """The rows to ingest, in chunks, and how many records that is (for progress)."""
    if isinstance(source, Table):  # already read and checked (siamese-evaluate)
        chunk = Chunk(
            texts=source.texts,
            labels=source.labels if columns.label is not None else None,
            ids=source.ids,
            lines=list(range(1, len(source.texts) + 1)),
        )
        return iter([chunk]), len(chunk)
    return iter_table(source, columns, options.chunk_rows, first_row_id), count_records(source)


def _ingest(
    writer: _VersionWriter,
    model: EmbeddingModel,
    source: Path | Table,
    columns: Columns,
    options: BuildOptions,
    first_row_id: int = 0,
) -> tuple[int, list]:
    """Read, check, embed and append new rows. Returns (rows added, row problems).

    Ids already written (from the base version, or earlier in the file) are duplicates.
    """
    problems: list[RowProblem] = []
    added = 0
    chunks, total = _chunks_of(source, columns, options, first_row_id)
    name = source.name if isinstance(source, Path) else "rows"
    bar = tqdm(
        total=total,
        desc=f"indexing {name}",
        unit="text",
        disable=not options.show_progress,
        mininterval=0.5,
        smoothing=0.1,
    )
    with bar:
        for chunk in chunks:
            problems.extend(chunk.problems)
            keep, seen = [], set()
            taken = writer.existing_ids(chunk.ids)
            for i, row_id in enumerate(chunk.ids):
                if row_id in seen or row_id in taken:
                    problems.append(RowProblem(chunk.lines[i], f"duplicate id {row_id!r}"))
                    continue
                seen.add(row_id)
                keep.append(i)
            texts = [chunk.texts[i] for i in keep]
            vectors = model.embed_unique(texts) if texts else np.zeros((0, model.dim))
            labels = [chunk.labels[i] for i in keep] if chunk.labels is not None else None
            writer.append([chunk.ids[i] for i in keep], labels, texts, vectors)
            added += len(keep)
            layout.checkpoint("during-ingest")
            bar.update(len(chunk) + len(chunk.problems))
            bar.set_postfix(indexed=writer.count, skipped=len(problems), refresh=False)
    if problems and options.strict:
        raise DataError(
            describe_problems(Path(name), problems)
            + "\n--strict is set: nothing was written. Fix these rows or drop --strict."
        )
    return added, problems


def _check_model_dim(model: EmbeddingModel) -> None:
    if model.dim <= 0:
        raise UserError("the model produces no vectors")


def _publish(
    index_dir: Path,
    kind: str,
    params: dict | None,
    model: EmbeddingModel,
    with_labels: bool,
    options: BuildOptions,
    fill,
    extra: dict,
) -> BuildReport:
    """Stage a version with `fill(writer)`, finish and publish it, under the writer lock."""
    started = time.perf_counter()
    index_dir = Path(index_dir)
    with layout.writer_lock(index_dir):
        layout.sweep_staging(index_dir)
        staging = layout.new_staging(index_dir)
        try:
            writer = _VersionWriter(staging, model.dim, with_labels)
            added, removed, problems = fill(writer)
            layout.checkpoint("before-finish")
            manifest = writer.finish(
                kind, params, model, {**extra, "problems": _problem_summary(problems)}
            )
            name = layout.publish(index_dir, staging, keep=options.keep_versions)
        except BaseException:
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
            raise
    return BuildReport(
        name,
        manifest["count"],
        added,
        removed,
        manifest["index"]["type"],
        problems,
        time.perf_counter() - started,
    )


def build_index(
    index_dir: Path,
    model: EmbeddingModel,
    data: Path | Table,
    columns: Columns,
    options: BuildOptions,
) -> BuildReport:
    """A new version holding exactly the rows of `data`: a table file, or a `Table`
    already read in memory (siamese-evaluate's reference set)."""
    _check_model_dim(model)
    source = data if isinstance(data, Table) else Path(data)

    def fill(writer):
        added, problems = _ingest(writer, model, source, columns, options)
        return added, 0, problems

    described = "(in memory)" if isinstance(source, Table) else str(source)
    extra = {"operation": {"kind": "build", "data": described, "base_version": None}}
    return _publish(
        index_dir,
        options.index_type,
        options.index_params,
        model,
        columns.label is not None,
        options,
        fill,
        extra,
    )


def add_to_index(
    index_dir: Path,
    model: EmbeddingModel,
    data_path: Path,
    columns: Columns,
    options: BuildOptions,
    upsert: bool = False,
) -> BuildReport:
    """A new version: the current one plus the rows of `data_path`.

    Ids already in the index are an error, or with `upsert` replace the old rows.
    """
    base = open_index(index_dir, model=model)
    try:
        if base.has_labels != (columns.label is not None):
            raise UserError(
                f"the index {'has' if base.has_labels else 'has no'} labels but the new rows "
                f"{'have none' if base.has_labels else 'do'}; "
                + ("give --label-column" if base.has_labels else "pass --no-labels")
            )
        # without an id column, new rows are numbered after the index's largest row number
        first_row_id = 0 if columns.id is not None else base.records().next_row_id()
        # which base rows the new data replaces (upsert) or collides with (error)
        new_ids: list[str] = []
        for chunk in iter_table(data_path, columns, options.chunk_rows, first_row_id):
            new_ids.extend(chunk.ids)
        clashes = base.records().positions_of(new_ids)
        if clashes and not upsert:
            shown = ", ".join(repr(i) for i in list(clashes)[:10])
            raise DataError(
                f"{data_path}: {len(clashes)} id(s) are already in the index ({shown}"
                f"{', ...' if len(clashes) > 10 else ''}); pass --upsert to replace those rows, "
                "or give new ids"
            )
        drop = set(clashes.values())

        def fill(writer):
            _copy_base(writer, base, drop)
            added, problems = _ingest(
                writer, model, Path(data_path), columns, options, first_row_id
            )
            return added, len(drop), problems

        kind = options.index_type if options.index_type != "auto" else base.kind
        params = options.index_params if options.index_type != "auto" else None
        extra = {
            "operation": {
                "kind": "upsert" if upsert else "add",
                "data": str(data_path),
                "base_version": base.name,
                "replaced": len(drop),
            }
        }
        return _publish(index_dir, kind, params, model, base.has_labels, options, fill, extra)
    finally:
        base.close()


def delete_from_index(
    index_dir: Path,
    model: EmbeddingModel,
    ids: Iterable[str],
    options: BuildOptions,
    ignore_missing: bool = False,
) -> BuildReport:
    """A new version: the current one without the rows whose ids are given."""
    base = open_index(index_dir, model=model)
    try:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            raise UserError("no ids given; pass --ids ID [ID ...] or --ids-file FILE")
        found = base.records().positions_of(wanted)
        missing = [i for i in wanted if i not in found]
        if missing and not ignore_missing:
            shown = ", ".join(repr(i) for i in missing[:10])
            raise UserError(
                f"{len(missing)} id(s) are not in index version {base.name} "
                f"({shown}); nothing was deleted. Pass --ignore-missing to skip them."
            )
        drop = set(found.values())

        def fill(writer):
            _copy_base(writer, base, drop)
            return 0, len(drop), []

        kind, params = base.kind, base.manifest["index"]["params"]
        if kind != "flat" and options.index_type == "auto":
            params = None  # re-size IVF lists etc. for the new count
        extra = {"operation": {"kind": "delete", "base_version": base.name, "deleted": len(drop)}}
        return _publish(index_dir, kind, params, model, base.has_labels, options, fill, extra)
    finally:
        base.close()
