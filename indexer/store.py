"""The one reader of index versions: what the server and `siamese-evaluate` search through.

`open_index(path)` accepts an index directory (follows CURRENT) or one version's
directory, verifies the files against the manifest's checksums, and returns an
`IndexVersion` that searches a batch of query vectors with top-k, an optional label
filter and a minimum score, returning ids, labels, texts and scores.
"""

from __future__ import annotations

import bisect
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import numpy as np

from siamese_search.core.encoders.base import sha256_files
from siamese_search.core.errors import ArtifactMismatchError, UserError
from siamese_search.core.model_artifact import EmbeddingModel
from siamese_search.indexer import layout
from siamese_search.indexer.backends.base import RowMask
from siamese_search.indexer.metadata import Filter, decode, parse_filter
from siamese_search.indexer.segments import (
    Segment,
    SegmentCache,
    SmallSegments,
    Subset,
    entries_of,
    merge_top_k,
    small_segments,
)

FORMAT = "siamese-search-index"
#: 2: a version is a list of segments (indexer.segments); 1: one set of files
FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)
NO_LABEL = -1


class UnknownLabelError(UserError):
    """A label filter names a label the index does not hold."""


class BackendUnavailableError(Exception):
    """The store holding the vectors (a Milvus server) did not answer a search; the
    server answers UNAVAILABLE, which clients retry."""


@dataclass(frozen=True)
class Hit:
    id: str
    label: str  # "" when the index has no labels
    text: str
    score: float  # cosine similarity, in [-1, 1]
    position: int
    metadata: dict = field(default_factory=dict)  # the row's fields (indexer.metadata)


@dataclass(frozen=True)
class StoredRow:
    """A live row as stored: what Get and Scroll answer."""

    id: str
    label: str
    text: str
    metadata: dict
    position: int


def resolve_version_dir(path: Path) -> Path:
    """An index directory resolves to its CURRENT version; a version dir to itself."""
    path = Path(path)
    if (path / layout.MANIFEST).is_file():
        return path
    name = layout.current_version(path)
    if name is None:
        if not path.exists():
            raise UserError(f"{path}: no such index directory; build one with siamese-index build")
        raise UserError(
            f"{path} holds no index version yet (no {layout.CURRENT} file); "
            "build one with siamese-index build"
        )
    directory = layout.version_dir(path, name)
    if not (directory / layout.MANIFEST).is_file():
        raise UserError(f"{path}: {layout.CURRENT} names version {name}, which is missing")
    return directory


class ServedVersion(Protocol):
    """What a server needs of an open index version, whatever the backend holds it:
    `IndexVersion` (files + FAISS) and the Milvus backend's `MilvusVersion`."""

    name: str
    kind: str
    count: int
    dim: int
    label_names: list[str]
    manifest: dict

    @property
    def has_labels(self) -> bool: ...

    @property
    def model_fingerprint(self) -> str: ...

    def check_model(self, model: EmbeddingModel) -> None: ...

    def metadata_keys(self) -> dict[str, set[str]]: ...

    def parse_filter(self, spec: dict | None) -> Filter | None: ...

    def search(
        self,
        vectors: np.ndarray,
        k: int,
        labels: Sequence[str] = (),
        min_score: float = -1.0,
        where: Filter | None = None,
        exclude: Sequence[int] = (),
    ) -> list[list[Hit]]: ...

    def get(self, ids: Sequence[str]) -> list[StoredRow]: ...

    def scroll(
        self, where: Filter | None, limit: int, after: int = -1
    ) -> tuple[list[StoredRow], int | None]: ...

    def positions_of(self, ids: Sequence[str]) -> dict[str, int]: ...

    def rows_at(self, positions: list[int]) -> list[StoredRow]: ...

    def vectors_at(self, positions: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def rows_of_ids(version: ServedVersion, ids: Sequence[str]) -> list[StoredRow]:
    """Get: the live rows with these ids, in the order asked, each once (ids not held:
    left out); for every backend."""
    positions = version.positions_of(ids)
    return version.rows_at([positions[i] for i in dict.fromkeys(ids) if i in positions])


class VersionSource(Protocol):
    """Where a server finds the current version: `DirectorySource` or `MilvusSource`."""

    location: str

    def current_name(self) -> str | None: ...

    def open_current(self) -> ServedVersion: ...

    def open_version(self, name: str) -> ServedVersion:
        """A retained version by name (VersionGone once pruned), for scroll pages."""
        ...

    def hold_version(self, name: str) -> IO | None:
        """A reader's hold on a retained version, which pruning leaves alone until it is
        closed (VersionGone once pruned); None where this source cannot hold one."""
        ...

    def model_directory(self) -> Path: ...

    def retained_versions(self) -> list[str]:
        """The versions kept (rollback targets), oldest first."""
        ...


class VersionGone(Exception):
    """A version asked for by name (a scroll's page token) that the index no longer
    holds: pruned since (the index keeps its --keep newest versions)."""


class LabelFilter:
    """Turns a request's label filter into label codes, or a bounded UnknownLabelError
    (however many labels were sent or exist). Shared by every backend."""

    def __init__(self, names: Sequence[str], has_labels: bool):
        self.names = list(names)
        self.has_labels = has_labels
        self._code = {name: code for code, name in enumerate(self.names)}

    def codes(self, labels: Sequence[str]) -> set[int]:
        if not self.has_labels:
            raise UnknownLabelError("this index has no labels, so it cannot filter by label")
        wanted = set(labels)
        unknown = sorted(wanted - self._code.keys())
        if unknown:
            shown = ", ".join(repr(label[:60]) for label in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            held = ", ".join(repr(label[:60]) for label in self.names[:20])
            held_more = (
                f" and {len(self.names) - 20} more (GetInfo lists them)"
                if len(self.names) > 20
                else ""
            )
            raise UnknownLabelError(
                f"unknown label(s) {shown}{more}; the index holds {held}{held_more}"
            )
        return {self._code[label] for label in wanted}


def check_model_matches(manifest: dict, name: str, where: str, model: EmbeddingModel) -> None:
    """Refuse (ArtifactMismatchError) a model other than the one a version was built with."""
    built_with = manifest["model"]["fingerprint"]
    if model.fingerprint != built_with:
        raise ArtifactMismatchError(
            f"index version {name} at {where} was built with model {built_with} "
            f"({manifest['model'].get('directory')}), but the model given is "
            f"{model.fingerprint} ({model.directory}). Rebuild the index with this model, "
            "or use the model it was built with."
        )


@dataclass(frozen=True)
class _Visit:
    """What a search with one label filter visits: the segments searched on their own,
    each with the rows it may return (None: all), and whether the small segments'
    matrix is searched, with its rows (SmallSegments)."""

    alone: list[tuple[Segment, np.ndarray | None, Subset | RowMask | None]]
    small: bool
    small_mask: np.ndarray | None

    @property
    def nbytes(self) -> int:
        """The memory its plans hold (gathered subsets, packed bitmaps: what the visit
        cache is bounded by)."""
        return sum(plan.nbytes for _, _, plan in self.alone if plan is not None)


#: bytes of gathered subsets (filtered searches of graph / IVF segments scored
#: exactly) that a version's visit cache keeps; the oldest visits go first past it
SUBSET_CACHE_BYTES = 256 * 2**20
#: visits (label filter and filter pairs) a version keeps worked out
VISIT_CACHE = 64
#: segments' filter masks a version keeps (1 byte a row: 64 MB at 1M rows), reused by
#: later searches and scroll pages with the same filter
PASSING_CACHE = 64


class IndexVersion:
    """One immutable index version, open for searching (thread-safe): its segments
    (indexer.segments), searched one by one and merged into an exact top-k."""

    def __init__(
        self,
        directory: Path,
        verify: bool = True,
        load_indexes: bool = True,
        cache: SegmentCache | None = None,
    ):
        self.directory = Path(directory)
        self._cache = cache if cache is not None else SegmentCache()
        self.name = self.directory.name
        # first of all, and until close() or garbage collection: writers will not
        # prune this version while this reader may still read from it
        try:
            self._hold = layout.hold_version(self.directory)
        except FileNotFoundError:
            raise UserError(
                f"{self.directory} was removed (pruned) while opening it; open the index again"
            ) from None
        self.segments: list[Segment] = []
        try:
            self._open(verify, load_indexes)
        except BaseException:
            self.close()  # a version that fails its checks does not keep its hold
            raise

    def _open(self, verify: bool, load_indexes: bool) -> None:
        self.manifest = layout.read_manifest(self.directory, verify=verify)
        if (
            self.manifest.get("format") != FORMAT
            or self.manifest.get("format_version") not in READABLE_FORMAT_VERSIONS
        ):
            raise UserError(
                f"{self.directory} is not a siamese-search index version this release reads "
                f"(format {self.manifest.get('format')!r}, version "
                f"{self.manifest.get('format_version')!r})"
            )
        if verify:
            self._verify_files()
        self.kind = self.manifest["index"]["type"]
        self.dim = int(self.manifest["dim"])
        self.count = int(self.manifest["count"])
        offset = 0
        try:
            for entry in entries_of(self.manifest, self.name):
                self.segments.append(
                    Segment(
                        self.directory, entry, self.dim, offset, self.manifest["files"], self._cache
                    )
                )
                offset += entry.rows
        except sqlite3.DatabaseError as error:
            raise ArtifactMismatchError(
                f"{self.directory}: a record store cannot be read ({error}); the index "
                "version is damaged: rebuild it"
            ) from None
        if sum(segment.live for segment in self.segments) != self.count:
            raise ArtifactMismatchError(
                f"{self.directory}: its segments hold "
                f"{sum(segment.live for segment in self.segments)} rows, the manifest says "
                f"{self.count}; the index version is damaged: rebuild it"
            )
        if load_indexes:  # everything a search needs is open before a server swaps it in
            for segment in self.segments:
                segment.index()
        self._records = VersionRecords(self.segments)
        self._small_lock = threading.Lock()
        self._small_held: SmallSegments | None = None
        if load_indexes:
            self._small_segments()
        label_info = self.manifest.get("labels")
        self.label_names: list[str] = list(label_info["names"]) if label_info else []
        self._filter = LabelFilter(self.label_names, has_labels=label_info is not None)
        self._masks: OrderedDict[tuple, _Visit] = OrderedDict()
        self._masks_lock = threading.Lock()
        self._subset_bytes = 0
        self._passing_masks: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    # ---- identity -----------------------------------------------------------
    @property
    def has_labels(self) -> bool:
        return self.manifest.get("labels") is not None

    @property
    def model_fingerprint(self) -> str:
        return self.manifest["model"]["fingerprint"]

    def check_model(self, model: EmbeddingModel) -> None:
        """Refuse to serve queries embedded by a model other than the index's."""
        check_model_matches(self.manifest, self.name, str(self.directory), model)

    def _verify_files(self) -> None:
        for name, info in self.manifest["files"].items():
            path = self.directory / name
            if not path.is_file() or path.stat().st_size != info["bytes"]:
                raise ArtifactMismatchError(
                    f"{path} is missing or has the wrong size; "
                    "the index version is damaged: rebuild it"
                )
            if layout.verified_unchanged(self.directory, name, info["sha256"]):
                continue  # hashed when written, unchanged since (layout.record_verified)
            if sha256_files([path]) != info["sha256"]:
                raise ArtifactMismatchError(
                    f"{path} does not match its checksum; the index version is damaged: rebuild it"
                )

    # ---- data ---------------------------------------------------------------
    def vectors(self) -> np.ndarray:
        """Every live row's unit vector (count, dim), in position order: a memory map
        when the version is one segment without deletions, else a copy in memory."""
        if len(self.segments) == 1 and self.segments[0].deleted is None:
            return self.segments[0].vectors()
        parts = [
            segment.vectors() if segment.live_mask is None else segment.vectors()[segment.live_mask]
            for segment in self.segments
        ]
        if not parts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate([np.asarray(part) for part in parts])

    def vectors_at(self, positions: np.ndarray) -> np.ndarray:
        """The unit vectors of the rows at `positions` (len(positions), dim)."""
        positions = np.asarray(positions, dtype=np.int64)
        out = np.empty((len(positions), self.dim), dtype=np.float32)
        starts = np.array([segment.offset for segment in self.segments], dtype=np.int64)
        at = np.searchsorted(starts, positions, side="right") - 1
        for i, segment in enumerate(self.segments):
            chosen = at == i
            if chosen.any():
                out[chosen] = segment.vectors()[positions[chosen] - segment.offset]
        return out

    def records(self) -> VersionRecords:
        return self._records

    def positions_labelled(self, names: set[str]) -> np.ndarray:
        """Positions of the live rows whose label is one of `names`."""
        wanted = frozenset(names)
        found = [
            np.flatnonzero(self._labelled(segment, wanted)) + segment.offset
            for segment in self.segments
            if segment.codes is not None
        ]
        return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)

    # ---- search -------------------------------------------------------------
    def _small_segments(self) -> SmallSegments:
        """The small segments searched as one matrix (read when first needed: a
        writer reading its base never searches it)."""
        with self._small_lock:
            if self._small_held is None:
                self._small_held = SmallSegments(small_segments(self.segments))
                self._records.hold(self._small_held)
            return self._small_held

    @staticmethod
    def _labelled(segment: Segment, labels: frozenset[str]) -> np.ndarray:
        """Which live rows of `segment` have one of `labels`."""
        mask = segment.label_mask(set(labels))
        return mask if segment.live_mask is None else mask & segment.live_mask

    def _segment_mask(
        self, segment: Segment, labels: frozenset[str], where: Filter | None
    ) -> np.ndarray | None:
        """Which rows of `segment` a search may return: live, with one of `labels`,
        passing `where` (None: every row, when nothing is asked and none is deleted)."""
        mask = self._labelled(segment, labels) if labels else segment.live_mask
        if where is None:
            return mask
        passing = self._passing(segment, where)
        return passing if mask is None else mask & passing

    def _passing(self, segment: Segment, where: Filter) -> np.ndarray:
        """The rows of `segment` that pass `where` (from its field indexes, or one SQL
        scan of its records; kept for the next search or scroll page with the same
        filter)."""
        key = (segment.name, where.key)
        with self._masks_lock:
            passing = self._passing_masks.get(key)
        if passing is None:
            segment.ask_field_indexes(where)  # undeclared fields: indexed for next time
            passing = segment.records.passing(where)
            with self._masks_lock:
                self._passing_masks[key] = passing
                while len(self._passing_masks) > PASSING_CACHE:
                    self._passing_masks.popitem(last=False)
        return passing

    def metadata_keys(self) -> dict[str, set[str]]:
        """The metadata fields the version's rows hold, and their value kinds."""
        keys: dict[str, set[str]] = {}
        for segment in self.segments:
            for key, kinds in segment.records.metadata_keys().items():
                keys.setdefault(key, set()).update(kinds)
        return keys

    def parse_filter(self, spec: dict | None) -> Filter | None:
        """A filter in Qdrant's shape checked against the fields this version holds
        (FilterError says what to fix); None for no filter."""
        if not spec:
            return None
        return parse_filter(spec, self.metadata_keys())

    def _allowed(self, labels: Sequence[str], where: Filter | None = None) -> _Visit:
        """What a search with this label filter (and filter) visits, worked out once
        per filter."""
        key = (frozenset(labels), where.key if where is not None else "")
        visit = self._masks.get(key)
        if visit is None:
            if key[0]:
                self._filter.codes(labels)  # refuses unknown labels, or none at all
            held = self._small_segments()
            alone = []
            small: list[np.ndarray | None] = []
            for segment in self.segments:
                mask = self._segment_mask(segment, key[0], where)
                if segment.name in held.names:
                    small.append(mask)
                elif segment.live and (mask is None or mask.any()):
                    alone.append((segment, mask, segment.plan(mask)))
            small_mask = None
            if any(mask is not None for mask in small):
                small_mask = np.concatenate(
                    [
                        np.ones(segment.rows, bool) if mask is None else mask
                        for segment, mask in zip(held.segments, small, strict=True)
                    ]
                )
            searched = bool(small) and (small_mask is None or bool(small_mask.any()))
            visit = _Visit(alone, searched, small_mask)
            with self._masks_lock:
                self._masks[key] = visit
                self._subset_bytes += visit.nbytes
                while len(self._masks) > 1 and (
                    len(self._masks) > VISIT_CACHE or self._subset_bytes > SUBSET_CACHE_BYTES
                ):
                    _, dropped = self._masks.popitem(last=False)
                    self._subset_bytes -= dropped.nbytes
        return visit

    def search(
        self,
        vectors: np.ndarray,
        k: int,
        labels: Sequence[str] = (),
        min_score: float = -1.0,
        where: Filter | None = None,
        exclude: Sequence[int] = (),
    ) -> list[list[Hit]]:
        """Top-k hits per query vector, best first, each with score >= min_score,
        among the rows with one of `labels` that pass `where` (the exact top-k among
        them: segments.Segment.search), but the positions in `exclude` (a search by
        an existing row leaves the row out)."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if vectors.shape[1] != self.dim:
            raise UserError(f"query vectors have dim {vectors.shape[1]}, the index {self.dim}")
        if exclude:
            k += len(exclude)
        visit = self._allowed(labels, where)
        found = [segment.search(vectors, k, mask, plan) for segment, mask, plan in visit.alone]
        if visit.small:
            found.append(self._small_segments().search(vectors, k, visit.small_mask))
        if not found:
            return [[] for _ in range(len(vectors))]
        scores, positions = merge_top_k(found, k)
        wanted = {int(p) for p in positions.ravel() if p >= 0}
        records = self.records().fetch(wanted)
        fields = self.records().metadata_of(wanted)
        left_out = {int(p) for p in exclude}
        results = []
        for row_scores, row_positions in zip(scores, positions, strict=True):
            hits = []
            for score, position in zip(row_scores, row_positions, strict=True):
                if position < 0 or score < min_score or int(position) in left_out:
                    continue
                row_id, label, text = records[int(position)]
                found_fields = decode(fields.get(int(position)))
                hits.append(
                    Hit(row_id, label or "", text, float(score), int(position), found_fields)
                )
            results.append(hits[: k - len(left_out)] if left_out else hits)
        return results

    def positions_of(self, ids: Sequence[str]) -> dict[str, int]:
        """id -> position, for the live rows with these ids."""
        return self.records().positions_of(list(ids))

    def get(self, ids: Sequence[str]) -> list[StoredRow]:
        return rows_of_ids(self, ids)

    def scroll(
        self, where: Filter | None, limit: int, after: int = -1
    ) -> tuple[list[StoredRow], int | None]:
        """Up to `limit` live rows passing `where`, in position order, from the position
        after `after`; and the last position given when more may follow (None: done)."""
        chosen: list[int] = []
        for segment in self.segments:
            if segment.offset + segment.rows - 1 <= after:
                continue
            mask = self._segment_mask(segment, frozenset(), where)
            local = np.arange(segment.rows) if mask is None else np.flatnonzero(mask)
            local = local[local + segment.offset > after]
            chosen.extend(int(p) for p in (local[: limit + 1 - len(chosen)] + segment.offset))
            if len(chosen) > limit:
                break
        more = len(chosen) > limit
        rows = self.rows_at(chosen[:limit])
        return rows, (rows[-1].position if more and rows else None)

    def live_positions(self) -> np.ndarray:
        """Every live row's position (for sampling: server.space_map)."""
        found = [
            (
                np.arange(segment.rows)
                if segment.live_mask is None
                else np.flatnonzero(segment.live_mask)
            )
            + segment.offset
            for segment in self.segments
        ]
        return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)

    def rows_at(self, positions: list[int]) -> list[StoredRow]:
        records = self.records().fetch(positions)
        fields = self.records().metadata_of(positions)
        return [
            StoredRow(records[p][0], records[p][1] or "", records[p][2], decode(fields.get(p)), p)
            for p in positions
            if p in records
        ]

    def close(self) -> None:
        """Release the segments' record stores and indexes and the hold on this version.

        Whoever opens a version closes it (or uses it as a context manager); the server
        closes a replaced version when its last in-flight call is done.
        """
        for segment in self.segments:
            segment.close()
        self._hold.close()

    def __enter__(self) -> IndexVersion:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class VersionRecords:
    """The records of a version's live rows, by position or id, across its segments."""

    def __init__(self, segments: Sequence[Segment]):
        self.segments = list(segments)
        self._starts = [segment.offset for segment in self.segments]
        self._held: dict[int, tuple[str, str | None, str]] = {}

    def hold(self, small: SmallSegments) -> None:
        """Answer the small segments' positions from the records they hold in memory."""
        self._held = small.records

    def fetch(self, positions: Iterable[int]) -> dict[int, tuple[str, str | None, str]]:
        """position -> (id, label, text) for the given positions."""
        out: dict[int, tuple[str, str | None, str]] = {}
        unheld = []
        for position in positions:
            held = self._held.get(int(position))
            if held is not None:
                out[int(position)] = held
            else:
                unheld.append(int(position))
        for at, local in self._by_segment(unheld).items():
            offset = self._starts[at]
            for position, record in self.segments[at].records.fetch(local).items():
                out[position + offset] = record
        return out

    def _by_segment(self, positions: Iterable[int]) -> dict[int, list[int]]:
        """Version positions grouped by segment: segment index -> local positions."""
        grouped: dict[int, list[int]] = {}
        for position in positions:
            at = bisect.bisect_right(self._starts, int(position)) - 1
            grouped.setdefault(at, []).append(int(position) - self._starts[at])
        return grouped

    def metadata_of(self, positions: Iterable[int]) -> dict[int, str]:
        """position -> stored metadata JSON, for the given positions that have any."""
        out: dict[int, str] = {}
        for at, local in self._by_segment(positions).items():
            offset = self._starts[at]
            for position, stored in self.segments[at].records.metadata_of(local).items():
                out[position + offset] = stored
        return out

    def positions_of(self, ids: Sequence[str]) -> dict[str, int]:
        """id -> position of the live rows with these ids."""
        out: dict[str, int] = {}
        for segment in self.segments:
            for row_id, local in segment.records.positions_of(ids).items():
                if segment.is_live(local):
                    out[row_id] = local + segment.offset
        return out

    def next_row_id(self) -> int:
        """1 + the largest all-digit id (deleted rows included): where row-number ids
        of added rows start."""
        return max((segment.records.next_row_id() for segment in self.segments), default=0)

    def iter_all(self, batch: int = 8192, with_metadata: bool = False) -> Iterator[list[tuple]]:
        """(position, id, label, text) of the live rows in position order, in batches;
        `with_metadata`: and each row's stored metadata JSON (None: none)."""
        for segment in self.segments:
            for rows in segment.records.iter_all(batch, with_metadata=with_metadata):
                live = [
                    (row[0] + segment.offset, *row[1:]) for row in rows if segment.is_live(row[0])
                ]
                if live:
                    yield live


def open_index(
    path: str | Path,
    model: EmbeddingModel | None = None,
    verify: bool = True,
    load_indexes: bool = True,
    cache: SegmentCache | None = None,
) -> IndexVersion:
    """Open the current version of an index directory (or a version directory).

    With `model`, refuse (ArtifactMismatchError) an index built with another model.
    Without `load_indexes`, a segment's FAISS index is read on its first search
    (a writer reading its base never searches it). With `cache`, the segments a
    version opened through it before also links are shared, not read again.
    """
    version = IndexVersion(
        resolve_version_dir(Path(path)), verify=verify, load_indexes=load_indexes, cache=cache
    )
    if model is not None:
        try:
            version.check_model(model)
        except BaseException:
            version.close()
            raise
    return version


def model_directory_of(index_dir: str | Path) -> Path:
    """The model directory the current version of `index_dir` was built with.

    What `siamese-serve` and `siamese-index add / delete` use when no --model is given.
    """
    version = resolve_version_dir(Path(index_dir))
    try:
        manifest = layout.read_manifest(version)
        return Path(manifest["model"]["directory"])
    except (KeyError, TypeError) as error:
        raise UserError(
            f"{version}: unreadable index manifest ({error}); give --model explicitly"
        ) from None


class DirectorySource:
    """Where a server finds the current version of an index directory: CURRENT.

    The Milvus backend's `MilvusSource` offers the same three calls for an alias.
    """

    def __init__(self, index_dir: str | Path):
        self.index_dir = Path(index_dir)
        self.location = str(self.index_dir)
        #: the segments of the versions this source opened and that are still open:
        #: a reload after a small write reads only the new segment
        self.segments = SegmentCache()

    def current_name(self) -> str | None:
        return layout.current_version(self.index_dir)

    def open_current(self) -> IndexVersion:
        return open_index(self.index_dir, cache=self.segments)

    def open_version(self, name: str) -> IndexVersion:
        directory = layout.version_dir(self.index_dir, name)
        if name not in layout.list_versions(self.index_dir) or not directory.is_dir():
            raise VersionGone(f"the index does not hold version {name}")
        return open_index(directory, load_indexes=False, cache=self.segments)

    def hold_version(self, name: str) -> IO:
        directory = layout.version_dir(self.index_dir, name)
        try:
            return layout.hold_version(directory)
        except FileNotFoundError:
            raise VersionGone(f"the index does not hold version {name}") from None

    def model_directory(self) -> Path:
        return model_directory_of(self.index_dir)

    def retained_versions(self) -> list[str]:
        return layout.list_versions(self.index_dir)
