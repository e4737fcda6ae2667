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

import dataclasses
import shutil
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

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
from siamese_search.indexer.backends.milvus_backend import MilvusTarget, MilvusWriter
from siamese_search.indexer.ray_engine import RaySettings
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
    #: `build` onto a directory that already has versions (a new version; old ones stay)
    replace: bool = False
    #: how long to wait for another writer of the same index directory (0: fail at once)
    wait_seconds: float = layout.DEFAULT_WAIT_SECONDS
    #: where texts are embedded: "local" (this process) or "ray" (indexer.ray_engine)
    engine: str = "local"
    ray: RaySettings = field(default_factory=RaySettings)
    #: also serve each version from Milvus (a collection per version, an alias to the
    #: current one); None: the index directory alone (FAISS)
    milvus: MilvusTarget | None = None

    def __post_init__(self) -> None:
        if self.index_type not in INDEX_KINDS:
            raise UserError(f"--index-type must be one of {', '.join(INDEX_KINDS)}")
        if self.keep_versions < 1:
            raise UserError("--keep must be at least 1 (the current version)")
        if self.engine not in ("local", "ray"):
            raise UserError(f"--engine must be local or ray, not {self.engine!r}")
        if self.ray.actors < 1 or self.ray.threads_per_actor < 1:
            raise UserError("--ray-actors and --ray-threads must be at least 1")


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
        needed = index.min_training_vectors
        if count < needed:
            raise UserError(
                f"--index-type {resolved} needs at least {needed} vectors to train "
                f"({index.training_needs}); this version would have {count}. Use "
                "--index-type flat (exact; right below 50,000 vectors), hnsw, or auto"
            )
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
            "index": {
                "type": resolved,
                "requested_type": kind,
                "params": index.params,
                "requested_params": params or {},
            },
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
        layout.write_manifest(self.staging, manifest)
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
    Rows are checked here whatever the engine; only the embedding runs locally or on
    Ray (`options.engine`), and rows are appended in input order either way.
    """
    problems: list[RowProblem] = []
    added = 0
    chunks, total = _chunks_of(source, columns, options, first_row_id)
    name = source.name if isinstance(source, Path) else "rows"
    accepted: deque[tuple[Chunk, list[int]]] = deque()  # checked, not yet written
    pending: set[str] = set()  # their ids: an engine reads ahead of the writer

    def checked_texts() -> Iterator[list[str]]:
        for chunk in chunks:
            problems.extend(chunk.problems)
            keep = []
            taken = writer.existing_ids(chunk.ids)
            for i, row_id in enumerate(chunk.ids):
                if row_id in pending or row_id in taken:
                    problems.append(RowProblem(chunk.lines[i], f"duplicate id {row_id!r}"))
                    continue
                pending.add(row_id)
                keep.append(i)
            accepted.append((chunk, keep))
            yield [chunk.texts[i] for i in keep]

    bar = tqdm(
        total=total,
        desc=f"indexing {name}" + (" on Ray" if options.engine == "ray" else ""),
        unit="text",
        disable=not options.show_progress,
        mininterval=0.5,
        smoothing=0.1,
    )
    with bar, _embedder(model, options) as embed:
        for vectors in embed(checked_texts()):
            chunk, keep = accepted.popleft()
            ids = [chunk.ids[i] for i in keep]
            labels = [chunk.labels[i] for i in keep] if chunk.labels is not None else None
            writer.append(ids, labels, [chunk.texts[i] for i in keep], vectors)
            pending.difference_update(ids)
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


@contextmanager
def _embedder(
    model: EmbeddingModel, options: BuildOptions
) -> Iterator[Callable[[Iterator[list[str]]], Iterator[np.ndarray]]]:
    """What turns lists of texts into arrays of vectors, one per list, in order."""
    if options.engine == "ray":
        from siamese_search.indexer.ray_engine import RayEmbedder

        with RayEmbedder(model, options.ray) as ray_embedder:
            yield ray_embedder.embed
        return

    def local(text_lists: Iterator[list[str]]) -> Iterator[np.ndarray]:
        for texts in text_lists:
            yield model.embed_unique(texts) if texts else np.zeros((0, model.dim), np.float32)

    yield local


def _check_model_dim(model: EmbeddingModel) -> None:
    if model.dim <= 0:
        raise UserError("the model produces no vectors")


@dataclass
class _Plan:
    """What one write does, decided under the writer lock from the version it builds on."""

    kind: str  # requested index type ("auto" resolves by size)
    params: dict | None  # requested index parameters (sizes derive the rest)
    with_labels: bool
    columns: Columns | None  # how the rows were read (recorded for later adds)
    fill: Callable[[_VersionWriter], tuple[int, int, list[RowProblem]]]
    extra: dict


def _write_version(
    index_dir: Path,
    model: EmbeddingModel,
    options: BuildOptions,
    plan_for: Callable[[IndexVersion | None], _Plan],
    needs_base: bool,
) -> BuildReport:
    """Under the writer lock: open the current version (the base), plan, stage, publish.

    Reading the base and publishing happen under one lock, so a second writer builds on
    the first one's result instead of overwriting it (no lost update).
    """
    started = time.perf_counter()
    index_dir = Path(index_dir)
    with layout.writer_lock(index_dir, options.wait_seconds), _milvus_writer(options) as milvus:
        if milvus is not None:
            reconcile_milvus(index_dir, milvus, options.show_progress)
        base = open_index(index_dir, model=model) if needs_base else None
        try:
            if base is not None and milvus is None:
                _refuse_local_write_of_milvus_index(base.manifest)
            layout.checkpoint("base-opened")
            plan = plan_for(base)
            layout.sweep_staging(index_dir)
            staging = layout.new_staging(index_dir)
            try:
                writer = _VersionWriter(staging, model.dim, plan.with_labels)
                added, removed, problems = plan.fill(writer)
                layout.checkpoint("before-finish")
                extra = {**plan.extra, "problems": _problem_summary(problems)}
                if options.engine == "ray":  # what embedded the new rows
                    extra["engine"] = {"kind": "ray", **dataclasses.asdict(options.ray)}
                    del extra["engine"]["address"]  # may name a private host or token
                # what ran the encoder's forward pass for the new rows (not part of the
                # fingerprint: a runtime is only used once it gives numpy's vectors)
                extra["encoder_runtime"] = model.encoder_runtime
                if plan.columns is not None:
                    extra["source"] = {
                        "text_column": plan.columns.text,
                        "label_column": plan.columns.label,
                        "id_column": plan.columns.id,
                    }
                next_name = layout.next_version_name(index_dir)
                if milvus is not None:
                    extra["backend"] = _milvus_record(milvus, next_name)
                manifest = writer.finish(plan.kind, plan.params, model, extra)
                if milvus is not None:  # the collection first, the alias last
                    milvus.write_version(next_name, staging, manifest, options.show_progress)
                name = layout.publish(index_dir, staging, keep=options.keep_versions)
                assert name == next_name, "version numbers move only under the writer lock"
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            if milvus is not None:
                milvus.point_alias_at(name)
                layout.checkpoint("after-alias")
                milvus.prune(layout.list_versions(index_dir))
        finally:
            if base is not None:
                base.close()
    return BuildReport(
        name,
        manifest["count"],
        added,
        removed,
        manifest["index"]["type"],
        problems,
        time.perf_counter() - started,
    )


@contextmanager
def _milvus_writer(options: BuildOptions) -> Iterator[MilvusWriter | None]:
    if options.milvus is None:
        yield None
        return
    writer = MilvusWriter(options.milvus)
    try:
        yield writer
    finally:
        writer.close()


def _milvus_record(milvus: MilvusWriter, version: str) -> dict:
    """What the manifest says of where the version is served from (never the token)."""
    return {
        "name": "milvus",
        "alias": milvus.target.name,
        "collection": milvus.target.collection_for(version),
        "version": version,
        "server_version": milvus.server_version(),
    }


def _refuse_local_write_of_milvus_index(manifest: dict) -> None:
    backend = manifest.get("backend") or {}
    if backend.get("name") == "milvus":
        raise UserError(
            f"this index is served from Milvus (alias {backend.get('alias')!r}); a version "
            "written here alone would never reach its servers. Pass --backend milvus "
            "--milvus-uri URI (and --milvus-collection if it is not the default)"
        )


def reconcile_milvus(index_dir: Path, milvus: MilvusWriter, show_progress: bool = True) -> None:
    """Point the alias at the local current version (hold the writer lock).

    A writer killed between publishing its version here and moving the alias left the
    two apart; so does a rollback. The current version's collection is written again
    from the local files when it is missing.
    """
    current = layout.current_version(index_dir)
    if current is None:
        return
    directory = layout.version_dir(index_dir, current)
    manifest = layout.read_manifest(directory)
    if (manifest.get("backend") or {}).get("name") != "milvus":
        return  # a FAISS-only version: the next write copies its successor to Milvus
    if milvus.aliased_collection() == milvus.target.collection_for(current):
        return
    if not milvus.has_version(current):
        milvus.write_version(current, directory, manifest, show_progress)
    milvus.point_alias_at(current)


def build_index(
    index_dir: Path,
    model: EmbeddingModel,
    data: Path | Table,
    columns: Columns,
    options: BuildOptions,
) -> BuildReport:
    """A new version holding exactly the rows of `data`: a table file, or a `Table`
    already read in memory (siamese-evaluate's reference set).

    Onto a directory that already has versions only with `options.replace` (the old
    versions stay until pruned, and `rollback` can return to them).
    """
    _check_model_dim(model)
    source = data if isinstance(data, Table) else Path(data)
    described = "(in memory)" if isinstance(source, Table) else str(source)

    def plan_for(_base: IndexVersion | None) -> _Plan:
        existing = layout.list_versions(index_dir)
        if existing and not options.replace:
            raise UserError(
                f"{index_dir} already holds index versions ({', '.join(existing)}; current "
                f"{layout.current_version(index_dir)}). `build` would replace what it serves: "
                "pass --replace to publish this table as a new version (the old ones stay "
                "until pruned; `siamese-index rollback` returns to them), or use `add` to "
                "extend the current version"
            )

        def fill(writer: _VersionWriter) -> tuple[int, int, list[RowProblem]]:
            added, problems = _ingest(writer, model, source, columns, options)
            return added, 0, problems

        extra = {"operation": {"kind": "build", "data": described, "base_version": None}}
        return _Plan(
            options.index_type,
            options.index_params,
            columns.label is not None,
            columns,
            fill,
            extra,
        )

    return _write_version(index_dir, model, options, plan_for, needs_base=False)


def carried_index_settings(manifest: dict, options: BuildOptions) -> tuple[str, dict | None]:
    """The index type and parameters a new version built on a base manifest gets.

    `--index-type auto` (the default) keeps how the base was asked to be built (its
    requested type and parameters, so a custom M, ef_search or nprobe survives), with
    any --index-param on top; an explicit --index-type starts afresh with its params.
    """
    if options.index_type != "auto":
        return options.index_type, options.index_params
    info = manifest["index"]
    kind = info.get("requested_type", info["type"])
    carried = info.get("requested_params")
    if carried is None:  # versions written before requested_params was recorded
        carried = info["params"] if kind != "auto" else {}
    merged = {**carried, **(options.index_params or {})}
    return kind, merged or None


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

    def plan_for(base: IndexVersion | None) -> _Plan:
        assert base is not None
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

        def fill(writer: _VersionWriter) -> tuple[int, int, list[RowProblem]]:
            _copy_base(writer, base, drop)
            added, problems = _ingest(
                writer, model, Path(data_path), columns, options, first_row_id
            )
            return added, len(drop), problems

        kind, params = carried_index_settings(base.manifest, options)
        extra = {
            "operation": {
                "kind": "upsert" if upsert else "add",
                "data": str(data_path),
                "base_version": base.name,
                "replaced": len(drop),
            }
        }
        return _Plan(kind, params, base.has_labels, columns, fill, extra)

    return _write_version(index_dir, model, options, plan_for, needs_base=True)


def _source_columns(base: IndexVersion) -> Columns | None:
    """How the base version's rows were read (carried to a version without a table)."""
    source = base.manifest.get("source")
    if not source:
        return None
    return Columns(source["text_column"], source["label_column"], source["id_column"])


def delete_from_index(
    index_dir: Path,
    model: EmbeddingModel,
    ids: Iterable[str],
    options: BuildOptions,
    ignore_missing: bool = False,
) -> BuildReport:
    """A new version: the current one without the rows whose ids are given."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        raise UserError("no ids given; pass --ids ID [ID ...] or --ids-file FILE")

    def plan_for(base: IndexVersion | None) -> _Plan:
        assert base is not None
        found = base.records().positions_of(wanted)
        missing = [i for i in wanted if i not in found]
        if missing and not ignore_missing:
            shown = ", ".join(repr(i) for i in missing[:10])
            raise UserError(
                f"{len(missing)} id(s) are not in index version {base.name} "
                f"({shown}); nothing was deleted. Pass --ignore-missing to skip them."
            )
        drop = set(found.values())

        def fill(writer: _VersionWriter) -> tuple[int, int, list[RowProblem]]:
            _copy_base(writer, base, drop)
            return 0, len(drop), []

        kind, params = carried_index_settings(base.manifest, options)
        extra = {"operation": {"kind": "delete", "base_version": base.name, "deleted": len(drop)}}
        return _Plan(kind, params, base.has_labels, _source_columns(base), fill, extra)

    try:
        return _write_version(index_dir, model, options, plan_for, needs_base=True)
    except _NothingToChange as unchanged:
        return unchanged.report


class ChangeConflict(UserError):
    """A change cannot apply to the current version (e.g. labels sent to an index that
    has none): retrying cannot help, unlike a busy writer lock."""


@dataclass(frozen=True)
class Change:
    """One write of a stream applied in order (the server's Upsert / Delete).

    kind "upsert": `ids`, `texts`, `labels` (None for an unlabelled index) replace or
    add rows; "delete": rows with `ids` go; "delete-label": every row labelled `label`
    goes. All are idempotent, so replaying a change already applied changes nothing.
    """

    kind: str
    ids: tuple[str, ...] = ()
    texts: tuple[str, ...] = ()
    labels: tuple[str, ...] | None = None
    label: str = ""


class _NothingToChange(Exception):
    """The changes leave the base version as it is: no new version is written."""

    def __init__(self, report: BuildReport):
        super().__init__(report.version)
        self.report = report


def apply_changes(
    index_dir: Path, model: EmbeddingModel, changes: Sequence[Change], options: BuildOptions
) -> BuildReport:
    """A new version: the current one with `changes` applied in order, by the same
    writer (lock, staging, atomic publish) as `add` and `delete`; only the texts
    upserted are encoded. Deleting ids that are not there is not an error, and
    changes that change nothing (only such deletes) publish nothing: the report names
    the current version (each one used to push an older version out of `--keep`)."""
    pending: dict[str, tuple[str, str | None]] = {}  # id -> (text, label), last wins
    dropped_ids: set[str] = set()
    dropped_labels: set[str] = set()
    for change in changes:
        if change.kind == "upsert":
            labels = change.labels or (None,) * len(change.ids)
            for row_id, text, label in zip(change.ids, change.texts, labels, strict=True):
                pending[row_id] = (text, label)
                dropped_ids.add(row_id)
        elif change.kind == "delete":
            for row_id in change.ids:
                pending.pop(row_id, None)
                dropped_ids.add(row_id)
        elif change.kind == "delete-label":
            pending = {i: row for i, row in pending.items() if row[1] != change.label}
            dropped_labels.add(change.label)
        else:
            raise ValueError(f"unknown change {change.kind!r}")

    def plan_for(base: IndexVersion | None) -> _Plan:
        assert base is not None
        if not base.has_labels and any(label for _, label in pending.values()):
            raise ChangeConflict("the index has no labels; send examples without labels")
        if base.has_labels and any(not label for _, label in pending.values()):
            raise ChangeConflict("the index is labelled; every example needs a label")
        drop = set(base.records().positions_of(sorted(dropped_ids)).values())
        codes = base.label_codes()
        if dropped_labels and codes is not None:
            doomed = [c for c, name in enumerate(base.label_names) if name in dropped_labels]
            drop.update(int(p) for p in np.flatnonzero(np.isin(codes, doomed)))
        replaced = len(drop)
        if not pending and not drop:
            raise _NothingToChange(BuildReport(base.name, base.count, 0, 0, base.kind))
        table = Table(
            texts=[text for text, _ in pending.values()],
            labels=[label or "" for _, label in pending.values()] if base.has_labels else None,
            ids=list(pending),
        )
        columns = Columns(text="text", label="label" if base.has_labels else None, id="id")

        def fill(writer: _VersionWriter) -> tuple[int, int, list[RowProblem]]:
            _copy_base(writer, base, drop)
            if not table.ids:
                return 0, replaced, []
            added, problems = _ingest(writer, model, table, columns, options)
            return added, replaced, problems

        kind, params = carried_index_settings(base.manifest, options)
        extra = {
            "operation": {
                "kind": "changes",
                "base_version": base.name,
                "upserted": len(pending),
                "removed": replaced,
                "writes": len(changes),
            }
        }
        return _Plan(kind, params, base.has_labels, _source_columns(base), fill, extra)

    try:
        return _write_version(index_dir, model, options, plan_for, needs_base=True)
    except _NothingToChange as unchanged:
        return unchanged.report


@dataclass(frozen=True)
class VersionInfo:
    name: str
    count: int
    created_at: str
    operation: str
    current: bool
    held: bool  # a reader (a server) has it open


def list_index_versions(index_dir: Path) -> list[VersionInfo]:
    """Every retained version, oldest first, with what `siamese-index list` shows."""
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise UserError(f"{index_dir}: no such index directory")
    current = layout.current_version(index_dir)
    listed = []
    for name in layout.list_versions(index_dir):
        directory = layout.version_dir(index_dir, name)
        try:
            manifest = layout.read_manifest(directory, verify=False)
        except UserError:
            manifest = {}
        listed.append(
            VersionInfo(
                name,
                int(manifest.get("count", -1)),
                str(manifest.get("created_at", "?")),
                str((manifest.get("operation") or {}).get("kind", "?")),
                name == current,
                layout.is_held(directory),
            )
        )
    return listed


def rollback(
    index_dir: Path,
    to: str | None = None,
    wait: float = layout.DEFAULT_WAIT_SECONDS,
    milvus: MilvusTarget | None = None,
) -> tuple[str, str]:
    """Point CURRENT at a retained version: `to`, or the newest one before the current.

    Returns (previous, now current). A server picks it up like any new version. The
    target is verified (manifest checksum) before CURRENT moves. Refused while a server
    takes writes for the index (see `layout.writes_are_taken`).
    """
    index_dir = Path(index_dir)
    if layout.writes_are_taken(index_dir):
        # its journal and commits build on CURRENT: moving CURRENT back under it would
        # drop acknowledged writes, and a later rollback could bring them back
        raise UserError(
            f"a siamese-serve takes writes for {index_dir}; stop it (its pending writes "
            "stay journaled and are applied on top of the rolled-back version at its next "
            "start), or restart it with --no-writes, then roll back"
        )
    with layout.writer_lock(index_dir, wait):
        current = layout.current_version(index_dir)
        versions = layout.list_versions(index_dir)
        if to is None:
            older = [v for v in versions if current is None or v < current]
            if not older:
                raise UserError(
                    f"{index_dir}: no version older than the current one ({current}) is "
                    f"retained; versions: {', '.join(versions) or 'none'}"
                )
            target = older[-1]
        else:
            target = layout.version_name(int(to)) if to.isdigit() else to
            if target not in versions:
                raise UserError(
                    f"{index_dir}: no version {to!r}; retained versions: "
                    f"{', '.join(versions) or 'none'} (see `siamese-index list`)"
                )
        manifest = layout.read_manifest(layout.version_dir(index_dir, target))  # not damaged
        if milvus is None:
            _refuse_local_write_of_milvus_index(manifest)
        layout.point_current_at(index_dir, target)
        if milvus is not None:
            with _milvus_writer(BuildOptions(milvus=milvus)) as writer:
                assert writer is not None
                reconcile_milvus(index_dir, writer)
    return current or "", target
