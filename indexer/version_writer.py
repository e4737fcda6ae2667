"""One version's files, filled in a staging directory: the base version's segments it
keeps (hard links, see indexer.segments), the one new segment of this write (records,
vectors and label codes as rows come, then its FAISS index from the stored vectors),
then the manifest.

Memory stays bounded by the chunk size plus the new segment's index: texts go to
SQLite, vectors to a flat file, and the FAISS index is filled from that file by
sequential reads (an IVF index trains on a sample read through a memory map first).
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from siamese_search.core.encoders.base import sha256_files
from siamese_search.core.errors import UserError
from siamese_search.core.model_artifact import EmbeddingModel
from siamese_search.core.provenance import package_versions, utc_now
from siamese_search.indexer import layout
from siamese_search.indexer.backends import SEARCH_PARAMS, FaissIndex, create_index, resolve_kind
from siamese_search.indexer.records import RecordWriter
from siamese_search.indexer.segments import (
    DATA_FILES,
    DELETED_FILE,
    SEGMENTS,
    SMALL_SEGMENT_ROWS,
    Segment,
    SegmentEntry,
    link_segment,
    segment_path,
    segments_to_merge,
    write_deleted,
)
from siamese_search.indexer.store import FORMAT, FORMAT_VERSION, NO_LABEL, IndexVersion

if TYPE_CHECKING:
    from siamese_search.indexer.compaction import MergedSegment

ADD_BATCH = 65536


class SegmentWriter:
    """Fills one new segment's directory: records, vectors, label codes; then its index.
    `indexed_keys`: the metadata fields its record store indexes (`--index-metadata`)."""

    def __init__(
        self,
        staging: Path,
        name: str,
        dim: int,
        with_labels: bool,
        indexed_keys: Sequence[str] = (),
    ):
        self.name = name
        self.relative = segment_path(name)
        self.directory = Path(staging) / self.relative
        self.directory.mkdir(parents=True)
        self.dim = dim
        self.records = RecordWriter(self.directory / layout.RECORDS_FILE, indexed_keys)
        self.vectors = open(self.directory / layout.VECTORS_FILE, "wb")
        self.label_file = open(self.directory / layout.LABELS_FILE, "wb") if with_labels else None
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
        metadata: Sequence[str | None] | None = None,
    ) -> None:
        """Rows in order; `metadata`: each row's fields as stored JSON (None: none)."""
        if not ids:
            return
        if self.label_file is not None:
            assert labels is not None
            codes = np.array([self._code(label) for label in labels], dtype=np.int32)
            codes.tofile(self.label_file)
            self.label_counts.update(label for label in labels if label)
        self.records.append(
            ids, labels if labels is not None else [None] * len(ids), texts, metadata
        )
        np.ascontiguousarray(vectors, dtype=np.float32).tofile(self.vectors)

    def flush_vectors(self) -> Path:
        """Hand the vectors appended so far to the OS (a checkpoint fsyncs them: see
        indexer.resume); the vectors file's path."""
        self.vectors.flush()
        return self.directory / layout.VECTORS_FILE

    def _code(self, label: str | None) -> int:
        if not label:
            return NO_LABEL
        code = self._codes.get(label)
        if code is None:
            code = self._codes[label] = len(self.label_names)
            self.label_names.append(label)
        return code

    def copy_rows(self, segment: Segment, deleted: np.ndarray | None) -> None:
        """Append a segment's rows but `deleted`, in order, without re-encoding."""
        vectors = segment.vectors()
        names = segment.entry.labels
        for rows in segment.records.iter_all(with_metadata=True):
            if deleted is not None:
                rows = [row for row in rows if not deleted[row[0]]]
            if not rows:
                continue
            local = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
            labels = None
            if segment.codes is not None and names is not None:
                labels = [names[c] if c >= 0 else None for c in segment.codes[local]]
            self.append(
                [r[1] for r in rows],
                labels,
                [r[3] for r in rows],
                np.asarray(vectors[local]),
                [r[4] for r in rows],
            )

    def refuse_untrainable(self, kind: str, params: dict | None, rows_to_come: int) -> None:
        """Before any text is embedded: refuse (UserError, as `finish` would) an index
        type that cannot learn from this segment's rows, when it is the whole version
        and holds at most `rows_to_come` more (rows refused while reading only make
        fewer). Found only at `finish`, the refusal came after hours of embedding."""
        self._trainable_index(kind, params, self.count + rows_to_come, True, before=True)

    def _trainable_index(
        self, kind: str, params: dict | None, count: int, whole_version: bool, before: bool = False
    ) -> FaissIndex:
        """The empty index a segment of `count` rows gets (`finish`), refused when it
        cannot train on that many vectors."""
        if not whole_version and count < SMALL_SEGMENT_ROWS:
            kind, params = "flat", None
        resolved = resolve_kind(kind, count)
        index = create_index(resolved, self.dim, count, params)
        needed = index.min_training_vectors
        if count < needed:
            would = "could have at most" if before else "would have"
            raise UserError(
                f"--index-type {resolved} needs at least {needed} vectors to train "
                f"({index.training_needs}); this version {would} {count}"
                + (" (refused before embedding any text)" if before else "")
                + ". Use --index-type flat (exact; right below 50,000 vectors), hnsw, or auto"
            )
        return index

    def finish(self, kind: str, params: dict | None, whole_version: bool) -> SegmentEntry:
        """Close the data files and build the segment's index: the requested type for
        a segment that is the whole version (a build, a compaction) or a large one; an
        exact (flat) index for a small segment a write adds (SMALL_SEGMENT_ROWS)."""
        self.records.close()
        self.vectors.close()
        if self.label_file is not None:
            self.label_file.close()
        count = self.count
        index = self._trainable_index(kind, params, count, whole_version)
        resolved = index.kind
        if count:
            vectors_path = self.directory / layout.VECTORS_FILE
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
        index.save(self.directory / layout.INDEX_FILE)
        labels = self.label_names if self.label_file is not None else None
        return SegmentEntry(self.name, count, 0, resolved, index.params, labels, self.relative)

    def files(self) -> list[str]:
        """The segment's data files, relative to the version directory."""
        names = [layout.INDEX_FILE, layout.VECTORS_FILE, layout.RECORDS_FILE]
        if self.label_file is not None:
            names.append(layout.LABELS_FILE)
        return [f"{self.relative}/{name}" for name in names]


class VersionWriter:
    """Fills one staging directory: the base segments kept (linked, with this
    version's deletions), the new segment (`append`), then the manifest (`finish`)."""

    def __init__(
        self,
        staging: Path,
        dim: int,
        with_labels: bool,
        segment_name: str,
        indexed_keys: Sequence[str] = (),
    ):
        self.staging = Path(staging)
        self.dim = dim
        self.with_labels = with_labels
        self.indexed_keys = sorted(indexed_keys)
        self.new = SegmentWriter(self.staging, segment_name, dim, with_labels, indexed_keys)
        self._kept: list[SegmentEntry] = []
        self._kept_files: dict[str, dict] = {}  # linked: path -> {"sha256", "bytes"}
        self._kept_live = 0
        self._kept_labels: Counter = Counter()

    @property
    def count(self) -> int:
        return self._kept_live + self.new.count

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Ids among `ids` already in the new segment (the planner checked the base)."""
        return self.new.existing_ids(ids)

    def append(
        self,
        ids: Sequence[str],
        labels: Sequence[str | None] | None,
        texts: Sequence[str],
        vectors: np.ndarray,
        metadata: Sequence[str | None] | None = None,
    ) -> None:
        self.new.append(ids, labels, texts, vectors, metadata)

    def keep(self, segment: Segment, deleted: np.ndarray | None, base_files: dict) -> None:
        """Link a base segment into this version as it is, with `deleted` rows."""
        linked = link_segment(segment, self.staging)
        for path in linked:
            name = path.rsplit("/", 1)[1]
            base_path = f"{segment.entry.path}/{name}" if segment.entry.path else name
            self._kept_files[path] = base_files[base_path]
        deleted_count = 0
        if deleted is not None and deleted.any():
            write_deleted(self.staging / segment_path(segment.name), deleted)
            deleted_count = int(deleted.sum())
        entry = dataclasses.replace(
            segment.entry, deleted=deleted_count, path=segment_path(segment.name)
        )
        self._kept.append(entry)
        self._kept_live += entry.live
        if segment.codes is not None and segment.entry.labels is not None:
            codes = segment.codes if deleted is None else segment.codes[~deleted]
            self._count_labels(codes, segment.entry.labels)

    def merge(self, segment: Segment, deleted: np.ndarray | None) -> None:
        """Copy a base segment's live rows (not `deleted`) into the new segment."""
        self.new.copy_rows(segment, deleted)

    def adopt(self, merged: MergedSegment, deleted: np.ndarray | None) -> None:
        """Move a segment built beforehand (a compaction's) into this version, with
        `deleted` rows; its files were hashed when it was built."""
        relative = segment_path(merged.entry.name)
        (self.staging / SEGMENTS).mkdir(exist_ok=True)
        os.rename(merged.directory, self.staging / relative)
        for name, info in merged.files.items():
            self._kept_files[f"{relative}/{name}"] = info
        count = 0
        if deleted is not None:
            write_deleted(self.staging / relative, deleted)
            count = int(deleted.sum())
        entry = dataclasses.replace(merged.entry, deleted=count)
        self._kept.append(entry)
        self._kept_live += entry.live
        if entry.labels is not None:
            codes = np.fromfile(self.staging / relative / layout.LABELS_FILE, dtype=np.int32)
            self._count_labels(codes if deleted is None else codes[~deleted], entry.labels)

    def _count_labels(self, codes: np.ndarray, names: list[str]) -> None:
        counts = np.bincount(codes[codes >= 0], minlength=len(names))
        self._kept_labels.update({name: int(n) for name, n in zip(names, counts, strict=True) if n})

    def refuse_untrainable(self, kind: str, params: dict | None, rows_to_come: int) -> None:
        """Before the new rows are embedded (`SegmentWriter.refuse_untrainable`), once
        the base is carried: only a new segment that will be the whole version is
        sure to get `kind` (a smaller one beside kept segments may be exact)."""
        if not self._kept:
            self.new.refuse_untrainable(kind, params, rows_to_come)

    def finish(self, kind: str, params: dict | None, model: EmbeddingModel, extra: dict) -> dict:
        new = self.new.finish(kind, params, whole_version=not self._kept)
        segments = [_with_search_params(entry, params) for entry in self._kept]
        files = dict(self._kept_files)
        for entry in self._kept:
            if entry.deleted:
                path = f"{entry.path}/{DELETED_FILE}"
                files[path] = described(self.staging, path)
        if new.rows:
            segments.append(new)
            files.update({path: described(self.staging, path) for path in self.new.files()})
        else:  # a write that only deletes: no new segment
            for name in DATA_FILES:
                (self.new.directory / name).unlink(missing_ok=True)
            self.new.directory.rmdir()
        label_counts = self._kept_labels + self.new.label_counts
        largest = max(segments, key=lambda entry: entry.live, default=new)
        layout.checkpoint("before-manifest")
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created_at": utc_now(),
            "count": sum(entry.live for entry in segments),
            "dim": self.dim,
            "metric": "inner_product",
            "normalized": True,
            "similarity": "cosine (vectors are L2-normalised, so inner product = cosine)",
            "index": {
                "type": largest.kind,
                "requested_type": kind,
                "params": largest.params,
                "requested_params": params or {},
            },
            "segments": [entry.to_manifest() for entry in segments],
            "model": {
                "fingerprint": model.fingerprint,
                "directory": str(Path(model.directory).absolute()),
                "encoder_fingerprint": model.manifest["encoder"]["fingerprint"],
            },
            "labels": (
                {
                    "names": _live_names(segments, label_counts),
                    "counts": {name: n for name, n in label_counts.items() if n},
                }
                if self.with_labels
                else None
            ),
            "files": files,
            "versions": package_versions(),
            # the metadata fields declared filterable: new segments index them, and
            # every later write carries the declaration (indexed_keys_of)
            "metadata_index": self.indexed_keys,
            **extra,
        }
        layout.record_verified(self.staging, manifest["files"])
        layout.write_manifest(self.staging, manifest)  # its checksum: the last file
        return manifest


def _with_search_params(entry: SegmentEntry, requested: dict | None) -> SegmentEntry:
    """A kept segment searched with the search parameters this write asks for
    (ef_search, nprobe: they apply to the whole version), its build ones unchanged."""
    changed = {
        name: value
        for name, value in (requested or {}).items()
        if name in SEARCH_PARAMS and name in entry.params
    }
    return dataclasses.replace(entry, params={**entry.params, **changed}) if changed else entry


def described(directory: Path, path: str) -> dict:
    """A file a writer made (`path` under `directory`): its checksum and size, for the
    manifest."""
    return {
        "sha256": sha256_files([directory / path]),
        "bytes": (directory / path).stat().st_size,
    }


def _live_names(segments: list[SegmentEntry], counts: Counter) -> list[str]:
    """The labels the version holds rows of, in the order the segments first name them."""
    names: dict[str, None] = {}
    for entry in segments:
        for name in entry.labels or ():
            if counts.get(name):
                names.setdefault(name)
    return list(names)


def carry_base(
    writer: VersionWriter,
    base: IndexVersion,
    drop: set[int],
    new_rows: int,
    merged: MergedSegment | None = None,
    may_merge: bool = True,
) -> None:
    """The base version's rows but `drop` (positions), without re-encoding: its
    segments linked as they are (with the deletions), the newest merged into the new
    segment where the size-tiered policy says so (segments_to_merge); none while a
    compaction runs (`may_merge` False: it is merging
    them; the segment count may exceed MAX_SEGMENTS until the next write after it).
    With `merged` (a compaction's segment, which replaces the base's oldest
    segments), that one first, then the segments written since, linked. A segment
    left with no live rows leaves the version."""
    if merged is not None:
        writer.adopt(merged, merged.deleted_since(base))
    dropped = np.fromiter(drop, dtype=np.int64, count=len(drop))
    carried: list[tuple[Segment, np.ndarray | None, int]] = []
    for segment in base.segments:
        if merged is not None and segment.name in merged.replaces:
            continue
        deleted = segment.deleted
        mine = dropped[(dropped >= segment.offset) & (dropped < segment.offset + segment.rows)]
        if len(mine):
            deleted = np.zeros(segment.rows, bool) if deleted is None else deleted.copy()
            deleted[mine - segment.offset] = True
        live = segment.rows - (int(deleted.sum()) if deleted is not None else 0)
        if live:
            carried.append((segment, deleted, live))
    if merged is not None or not may_merge:
        count = 0
    else:
        count = segments_to_merge([live for *_, live in carried], new_rows)
    kept = len(carried) - count
    for segment, deleted, _ in carried[:kept]:
        writer.keep(segment, deleted, base.manifest["files"])
    for segment, deleted, _ in carried[kept:]:
        writer.merge(segment, deleted)


def indexed_keys_of(manifest: dict | None, declared: Sequence[str] = ()) -> list[str]:
    """The metadata fields a new version indexes: those its base declared and those
    this write declares (a declaration stays; `--index-metadata` adds to it)."""
    held = (manifest or {}).get("metadata_index") or []
    return sorted(set(held) | set(declared))
