"""A version's rows live in segments: immutable directories of records, vectors, label
codes and a FAISS index, written once by the write that added the rows and shared by
every later version until a merge rewrites them (issue 23: a write costs what it
changes, not what the index holds).

    versions/000007/
      manifest.json  manifest.sha256  verified.json
      segments/000003/  index.faiss vectors.f32 records.sqlite labels.i32: hard links
                        to the files version 000003 wrote; deleted.bits: this
                        version's own record of which of those rows are deleted
      segments/000007/  the rows version 000007 added (or merged)

Why hard links: each version directory stays complete on its own, so the rest of the
layout is unchanged: CURRENT, atomic publish, rollback, a reader's hold on a version,
and pruning (removing a version's directory removes its links; the bytes stay while
another version links them). A link costs no copy and keeps the inode, size and mtime
the file was verified with, so a write hashes none of its base's files again.

A *position* is a row's place in the concatenation of a version's segments, deleted
rows included: positions are stable across the versions that share a segment (until a
merge), and the write planners (`indexer.build`) name the rows they drop by position.

Versions written before segments (format 1: the files at the version's top level) are
read as one segment, and a write onto one links those files into its first segment.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from siamese_search.core.errors import ArtifactMismatchError
from siamese_search.indexer import field_index, layout
from siamese_search.indexer.backends import HalfPrecisionCopy, VectorIndex, load_index
from siamese_search.indexer.backends.base import RowMask
from siamese_search.indexer.metadata import Filter
from siamese_search.indexer.records import RecordReader

SEGMENTS = "segments"
DELETED_FILE = "deleted.bits"
DATA_FILES = (layout.INDEX_FILE, layout.VECTORS_FILE, layout.RECORDS_FILE, layout.LABELS_FILE)
#: a version holds at most this many segments: a write that would make more merges
#: its new rows with the newest segments (search visits every segment)
MAX_SEGMENTS = 8
#: segments smaller than this that a write adds (or merges) are exact (flat) indexes
#: whatever the requested type: searching them costs less than building a graph
SMALL_SEGMENT_ROWS = 20_000
#: exact segments up to this size after a version's first are searched together as one
#: matrix in memory, their records held too (SmallSegments)
SMALL_MATRIX_ROWS = 5_000


def segment_path(name: str) -> str:
    """Where a segment's files are, relative to the version directory."""
    return f"{SEGMENTS}/{name}"


@dataclass(frozen=True)
class SegmentEntry:
    """What a version's manifest says of one of its segments."""

    name: str
    rows: int  # rows written, deleted ones included
    deleted: int
    kind: str
    params: dict
    labels: list[str] | None  # label code -> name, for this segment's label file
    path: str  # relative to the version directory ("" for a format-1 version)

    @property
    def live(self) -> int:
        return self.rows - self.deleted

    def to_manifest(self) -> dict:
        return {
            "name": self.name,
            "rows": self.rows,
            "deleted": self.deleted,
            "index": {"type": self.kind, "params": self.params},
            "labels": self.labels,
        }

    @classmethod
    def from_manifest(cls, entry: dict) -> SegmentEntry:
        return cls(
            str(entry["name"]),
            int(entry["rows"]),
            int(entry["deleted"]),
            str(entry["index"]["type"]),
            dict(entry["index"]["params"]),
            list(entry["labels"]) if entry.get("labels") is not None else None,
            segment_path(str(entry["name"])),
        )


def entries_of(manifest: dict, version_name: str) -> list[SegmentEntry]:
    """The segments a manifest lists; a format-1 version is one segment, its files at
    the version's top level."""
    if "segments" in manifest:
        return [SegmentEntry.from_manifest(entry) for entry in manifest["segments"]]
    labels = manifest.get("labels")
    return [
        SegmentEntry(
            version_name,
            int(manifest["count"]),
            0,
            manifest["index"]["type"],
            dict(manifest["index"]["params"]),
            list(labels["names"]) if labels else None,
            "",
        )
    ]


class SegmentFiles:
    """A segment's files, open: its records, label codes and FAISS index (read on
    first use, or when a version is opened with `load_indexes`). Shared by every
    version a reader opens that links the same segment with the same search
    parameters (SegmentCache), so a server reloading after a small write reads only
    the new segment, not the large ones it already holds."""

    def __init__(self, directory: Path, entry: SegmentEntry):
        self.entry = entry
        self.refs = 0
        self.records = RecordReader(directory / layout.RECORDS_FILE)
        for key, path in field_index.existing(directory).items():
            self.records.attach_field_index(key, path)
        try:
            if self.records.count != entry.rows:
                raise ArtifactMismatchError(
                    f"{directory / layout.RECORDS_FILE} holds {self.records.count} records, "
                    f"the manifest says {entry.rows}; the index version is damaged: rebuild it"
                )
            self.codes = (
                np.fromfile(directory / layout.LABELS_FILE, dtype=np.int32)
                if entry.labels is not None
                else None
            )
        except BaseException:
            self.records.close()
            raise
        self._index_path = directory / layout.INDEX_FILE
        self._index: VectorIndex | None = None
        self._index_lock = threading.Lock()

    def index(self) -> VectorIndex:
        with self._index_lock:
            if self._index is None:
                self._index = load_index(self._index_path, self.entry.kind, self.entry.params)
            return self._index

    def close(self) -> None:
        self.records.close()
        with self._index_lock:
            if self._index is not None:
                self._index.close()
                self._index = None


class SegmentCache:
    """The segments' files a reader holds open, by what they are (name, checksums,
    search parameters), counted by the open versions that use them: a version opened
    through the same cache as the one before it shares the segments they have in
    common (`DirectorySource` keeps one per index directory). Files are closed when
    the last version using them is."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, SegmentFiles] = {}

    def acquire(self, key: str, directory: Path, entry: SegmentEntry) -> SegmentFiles:
        with self._lock:
            files = self._open.get(key)
            if files is None:
                files = self._open[key] = SegmentFiles(directory, entry)
            files.refs += 1
            return files

    def release(self, key: str, files: SegmentFiles) -> None:
        with self._lock:
            files.refs -= 1
            if files.refs > 0:
                return
            if self._open.get(key) is files:
                del self._open[key]
        files.close()

    def __len__(self) -> int:
        return len(self._open)


class Segment:
    """One segment as a version holds it: the segment's (shared) files, where its rows
    start among the version's positions, and this version's deletions."""

    def __init__(
        self,
        version_dir: Path,
        entry: SegmentEntry,
        dim: int,
        offset: int,
        files: dict,
        cache: SegmentCache,
    ):
        self.entry = entry
        self.name = entry.name
        self.rows = entry.rows
        self.dim = dim
        self.offset = offset  # the position of its first row in the version
        self.directory = Path(version_dir) / entry.path if entry.path else Path(version_dir)
        self.deleted = read_deleted(self.directory, self.rows) if entry.deleted else None
        self.live_mask = None if self.deleted is None else ~self.deleted
        self._cache = cache
        self._key = _identity(entry, files)
        self._files: SegmentFiles | None = cache.acquire(self._key, self.directory, entry)
        self.records = self._files.records
        self.codes = self._files.codes

    @property
    def live(self) -> int:
        return self.entry.live

    def ask_field_indexes(self, where: Filter) -> None:
        """Have the fields `where` tests that this segment does not index built in the
        background (indexer.field_index), when the segment is large enough for a scan
        to cost more than a file; later filters on them read the index."""
        if self.rows < field_index.MIN_ROWS:
            return
        records = self.records
        for key in sorted(where.fields() - records.field_indexed):
            field_index.BUILDER.request(
                self.directory,
                self.directory / layout.RECORDS_FILE,
                key,
                records.attach_field_index,
            )

    def index(self) -> VectorIndex:
        assert self._files is not None, "the segment is closed"
        return self._files.index()

    def vectors(self) -> np.ndarray:
        """Every row's unit vector, deleted rows included, memory-mapped (rows, dim)."""
        if self.rows == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.memmap(
            self.directory / layout.VECTORS_FILE,
            dtype=np.float32,
            mode="r",
            shape=(self.rows, self.dim),
        )

    def label_mask(self, names: set[str]) -> np.ndarray:
        """Which rows have one of `names` as their label."""
        assert self.codes is not None and self.entry.labels is not None
        wanted = [code for code, name in enumerate(self.entry.labels) if name in names]
        return np.isin(self.codes, wanted)

    def is_live(self, local: int) -> bool:
        return self.deleted is None or not self.deleted[local]

    def plan(self, allowed: np.ndarray | None) -> Subset | RowMask | None:
        """How a search restricted to `allowed` runs here, worked out once per filter
        (the caller keeps it with the filter's mask): None when nothing is filtered or
        the segment is flat (the mask is applied as it is); a Subset to score exactly
        when a graph or IVF segment lets few rows through; otherwise the RowMask its
        index's walk reads.

        A graph or IVF index searched with a selector that lets few rows through finds
        too few of them (the walk is cut off among rows it may not return), so a
        subset of at most EXACT_SUBSET_ROWS rows is scored exactly from the vectors,
        as Qdrant plans a filtered search below its cardinality threshold. Gathering
        10,000 rows from the memory map took 20 ms a query, scoring them well under 1.
        A subset the index's widened walk covers (`walk_covers`: half the rows of a
        30,000-row graph) is walked: scoring 15,000 rows exactly cost 4.6 ms a query,
        the walk 0.6 (bench/filters.py --rows 30000)."""
        if allowed is None or self.entry.kind == "flat":
            return None
        chosen = np.flatnonzero(allowed)
        walked = self.index().walk_covers(len(chosen) / max(len(allowed), 1))
        if walked or len(chosen) > EXACT_SUBSET_ROWS:
            return RowMask.of(allowed)
        vectors = np.ascontiguousarray(self.vectors()[chosen])
        small = len(chosen) <= FLOAT32_SUBSET_ROWS
        return Subset(chosen, vectors, None if small else HalfPrecisionCopy(vectors))

    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray | None,
        plan: Subset | RowMask | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, version positions) among `allowed` rows; -1 pads. `plan`:
        `plan(allowed)`, kept by the caller (made here when not given)."""
        if plan is None:
            plan = self.plan(allowed)
        if isinstance(plan, Subset):
            return self._exact(queries, k, plan)
        scores, local = self.index().search(queries, k, allowed if plan is None else plan)
        positions = np.where(local >= 0, local + self.offset, -1)
        return scores, positions

    def _exact(self, queries: np.ndarray, k: int, subset: Subset) -> tuple[np.ndarray, np.ndarray]:
        """The subset's top k: every row scored in float32 when it has no half-precision
        copy (FLOAT32_SUBSET_ROWS), else candidates from the copy re-scored from the
        float32 vectors (exact but where a near-tie within ~1e-3 of the k-th score lies
        beyond the SUBSET_CANDIDATES best)."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if subset.copy is None:  # few rows: every one scored in float32
            top_scores, top = exact_top_k(queries @ subset.vectors.T, k)
            return top_scores, subset.rows[top] + self.offset
        found = subset.copy.candidates(queries, max(SUBSET_CANDIDATES, 4 * k))
        chosen = np.maximum(found, 0)
        gathered = subset.vectors[chosen.ravel()].reshape(*chosen.shape, -1)
        exact = np.einsum("qnd,qd->qn", gathered, queries)
        exact[found < 0] = -np.inf
        top_scores, top = exact_top_k(exact, k)
        positions = subset.rows[np.take_along_axis(chosen, top, axis=1)] + self.offset
        missing = np.take_along_axis(found, top, axis=1) < 0
        return np.where(missing, -np.inf, top_scores), np.where(missing, -1, positions)

    def close(self) -> None:
        if self._files is not None:
            self._cache.release(self._key, self._files)
            self._files = None


#: a filtered search of a graph or IVF segment that lets at most this many rows
#: through is scored exactly (Segment.subset); bench/filters.py measures the choice
EXACT_SUBSET_ROWS = 20_000


#: candidates a subset's half-precision copy proposes for re-scoring (4k if more)
SUBSET_CANDIDATES = 64
#: a subset of at most this many rows gets no half-precision copy: reading it whole in
#: float32 costs less than the copy's search and the re-scoring (bench/filters.py
#: --float32-rows compares the two in one run)
FLOAT32_SUBSET_ROWS = 2_000


@dataclass(frozen=True)
class Subset:
    """Rows of a segment gathered for exact scoring: their local positions, their
    vectors, and (above FLOAT32_SUBSET_ROWS) the vectors' half-precision copy that
    proposes the candidates the float32 vectors re-score (`Segment._exact`)."""

    rows: np.ndarray
    vectors: np.ndarray
    copy: HalfPrecisionCopy | None

    @property
    def nbytes(self) -> int:
        copy = self.copy.nbytes if self.copy is not None else 0
        return int(self.rows.nbytes + self.vectors.nbytes + copy)


def _identity(entry: SegmentEntry, files: dict) -> str:
    """What makes two versions' copies of a segment the same open files: its name, its
    files' checksums (from the manifest) and the parameters it is searched with."""
    prefix = f"{entry.path}/" if entry.path else ""
    sums = [files.get(prefix + name, {}).get("sha256", "") for name in DATA_FILES]
    return json.dumps([entry.name, sums, entry.params], sort_keys=True)


class SmallSegments:
    """The small exact segments that writes add, searched together as one matrix held
    in memory, with their records: each write's segment would otherwise cost a FAISS
    call and a record lookup of its own per search (measured: a version of a 100k
    HNSW segment and 7 small ones searched in 2.4x the time of the same rows as one
    segment). A version's first segment is never one of them, so a version of one
    segment searches exactly as before."""

    def __init__(self, segments: Sequence[Segment]):
        self.segments = list(segments)
        self.names = {segment.name for segment in self.segments}
        vectors = [np.asarray(segment.vectors()) for segment in self.segments]
        self.vectors = np.concatenate(vectors) if vectors else np.zeros((0, 0), dtype=np.float32)
        self.positions = (
            np.concatenate(
                [np.arange(s.offset, s.offset + s.rows, dtype=np.int64) for s in self.segments]
            )
            if self.segments
            else np.zeros(0, dtype=np.int64)
        )
        self.records: dict[int, tuple[str, str | None, str]] = {}
        for segment in self.segments:
            for rows in segment.records.iter_all():
                for local, row_id, label, text in rows:
                    self.records[local + segment.offset] = (row_id, label, text)

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k (scores, version positions) among `allowed` rows; -1 pads."""
        scores = queries @ self.vectors.T
        if allowed is not None:
            scores[:, ~allowed] = -np.inf
        top_scores, top = exact_top_k(scores, k)
        positions = np.where(np.isfinite(top_scores), self.positions[top], -1)
        return top_scores, positions


def small_segments(segments: Sequence[Segment]) -> list[Segment]:
    """The segments searched as one matrix: exact ones of at most SMALL_MATRIX_ROWS
    rows, after the version's first."""
    return [
        segment
        for segment in segments[1:]
        if segment.entry.kind == "flat" and segment.rows <= SMALL_MATRIX_ROWS
    ]


def exact_top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's min(k, columns) best (scores as float32, column indices), best first."""
    k = min(k, scores.shape[1])
    if k == 0:
        return np.zeros((len(scores), 0), np.float32), np.zeros((len(scores), 0), np.int64)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    return np.take_along_axis(top_scores, order, axis=1).astype(np.float32), top


def merge_top_k(
    results: Sequence[tuple[np.ndarray, np.ndarray]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The exact top-k across segments' own top-k lists (scores, positions), best first."""
    if len(results) == 1:
        return results[0]
    scores = np.concatenate([s for s, _ in results], axis=1)
    positions = np.concatenate([p for _, p in results], axis=1)
    scores = np.where(positions >= 0, scores, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(positions, order, axis=1)


def read_deleted(directory: Path, rows: int) -> np.ndarray:
    packed = np.fromfile(Path(directory) / DELETED_FILE, dtype=np.uint8)
    return np.unpackbits(packed, count=rows, bitorder="little").astype(bool)


def write_deleted(directory: Path, deleted: np.ndarray) -> None:
    np.packbits(deleted.astype(np.uint8), bitorder="little").tofile(Path(directory) / DELETED_FILE)


def link_segment(segment: Segment, staging: Path) -> list[str]:
    """Hard-link a base segment's data files into a staging version; the files'
    paths relative to the staging directory. Its field indexes built on first use
    are linked too (derived files, not in the manifest), so a write does not make
    the next filter build them again."""
    target = Path(staging) / segment_path(segment.name)
    target.mkdir(parents=True)
    linked = []
    for name in DATA_FILES:
        source = segment.directory / name
        if source.exists():
            os.link(source, target / name)
            linked.append(f"{segment_path(segment.name)}/{name}")
    for built in field_index.existing(segment.directory).values():
        (target / field_index.DIRECTORY).mkdir(exist_ok=True)
        os.link(built, target / field_index.DIRECTORY / built.name)
    return linked


def segments_to_merge(live: Sequence[int], new_rows: int) -> int:
    """How many of the newest kept segments a write merges with its new rows (the
    rest are linked as they are). Size-tiered, like Lucene's log merge policy: the
    new segment absorbs the newest segments no bigger than what it already holds,
    so a row is rewritten about log2(index / write) times over its life, and a large
    segment only when the writes since reach its size; also while the version would
    hold more than MAX_SEGMENTS. Deleted rows stay in their segment until it is
    merged (or `siamese-index compact` rewrites everything)."""
    merged = 0
    size = new_rows
    while merged < len(live):
        previous = len(live) - 1 - merged
        too_many = len(live) - merged + (1 if size else 0) > MAX_SEGMENTS
        if too_many or (size and live[previous] <= size):
            size += live[previous]
            merged += 1
            continue
        break
    return merged
