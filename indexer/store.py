"""The one reader of index versions: what the server and `siamese-evaluate` search through.

`open_index(path)` accepts an index directory (follows CURRENT) or one version's
directory, verifies the files against the manifest's checksums, and returns an
`IndexVersion` that searches a batch of query vectors with top-k, an optional label
filter and a minimum score, returning ids, labels, texts and scores.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from siamese_search.core.encoders.base import sha256_files
from siamese_search.core.errors import ArtifactMismatchError, UserError
from siamese_search.core.model_artifact import EmbeddingModel
from siamese_search.indexer import layout
from siamese_search.indexer.backends import load_index
from siamese_search.indexer.records import RecordReader

FORMAT = "siamese-search-index"
FORMAT_VERSION = 1
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

    def search(
        self, vectors: np.ndarray, k: int, labels: Sequence[str] = (), min_score: float = -1.0
    ) -> list[list[Hit]]: ...

    def close(self) -> None: ...


class VersionSource(Protocol):
    """Where a server finds the current version: `DirectorySource` or `MilvusSource`."""

    location: str

    def current_name(self) -> str | None: ...

    def open_current(self) -> ServedVersion: ...

    def model_directory(self) -> Path: ...


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


class IndexVersion:
    """One immutable index version, open for searching (thread-safe)."""

    def __init__(self, directory: Path, verify: bool = True):
        self.directory = Path(directory)
        self.name = self.directory.name
        # first of all, and until close() or garbage collection: writers will not
        # prune this version while this reader may still read from it
        try:
            self._hold = layout.hold_version(self.directory)
        except FileNotFoundError:
            raise UserError(
                f"{self.directory} was removed (pruned) while opening it; open the index again"
            ) from None
        self._records: RecordReader | None = None
        try:
            self._open(verify)
        except BaseException:
            self.close()  # a version that fails its checks does not keep its hold
            raise

    def _open(self, verify: bool) -> None:
        self.manifest = layout.read_manifest(self.directory, verify=verify)
        if (self.manifest.get("format"), self.manifest.get("format_version")) != (
            FORMAT,
            FORMAT_VERSION,
        ):
            raise UserError(
                f"{self.directory} is not a siamese-search index version "
                f"(format {self.manifest.get('format')!r})"
            )
        if verify:
            self._verify_files()
        index_info = self.manifest["index"]
        self.kind = index_info["type"]
        self.dim = int(self.manifest["dim"])
        self.count = int(self.manifest["count"])
        self._index = load_index(
            self.directory / layout.INDEX_FILE, self.kind, index_info["params"]
        )
        try:
            self._records = RecordReader(self.directory / layout.RECORDS_FILE)
        except sqlite3.DatabaseError as error:
            raise ArtifactMismatchError(
                f"{self.directory / layout.RECORDS_FILE} cannot be read ({error}); the index "
                "version is damaged: rebuild it"
            ) from None
        if self._records.count != self.count:
            raise ArtifactMismatchError(
                f"{self.directory / layout.RECORDS_FILE} holds {self._records.count} records, "
                f"the manifest says {self.count}; the index version is damaged: rebuild it"
            )
        label_info = self.manifest.get("labels")
        self.label_names: list[str] = list(label_info["names"]) if label_info else []
        self._filter = LabelFilter(self.label_names, has_labels=label_info is not None)
        self._label_codes = (
            np.fromfile(self.directory / layout.LABELS_FILE, dtype=np.int32) if label_info else None
        )
        self._masks: OrderedDict[frozenset, np.ndarray] = OrderedDict()

    # ---- identity -----------------------------------------------------------
    @property
    def has_labels(self) -> bool:
        return self._label_codes is not None

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
        """All stored unit vectors, memory-mapped (count, dim)."""
        if self.count == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.memmap(
            self.directory / layout.VECTORS_FILE,
            dtype=np.float32,
            mode="r",
            shape=(self.count, self.dim),
        )

    def label_codes(self) -> np.ndarray | None:
        return self._label_codes

    def records(self) -> RecordReader:
        assert self._records is not None, "the version failed to open"
        return self._records

    # ---- search -------------------------------------------------------------
    def _allowed(self, labels: Sequence[str]) -> np.ndarray:
        key = frozenset(labels)
        mask = self._masks.get(key)
        if mask is None:
            codes = self._filter.codes(labels)  # refuses unknown labels, or none at all
            assert self._label_codes is not None
            mask = np.isin(self._label_codes, sorted(codes))
            self._masks[key] = mask
            if len(self._masks) > 64:
                self._masks.popitem(last=False)
        return mask

    def search(
        self, vectors: np.ndarray, k: int, labels: Sequence[str] = (), min_score: float = -1.0
    ) -> list[list[Hit]]:
        """Top-k hits per query vector, best first, each with score >= min_score."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if vectors.shape[1] != self.dim:
            raise UserError(f"query vectors have dim {vectors.shape[1]}, the index {self.dim}")
        allowed = self._allowed(labels) if labels else None
        if self.count == 0:
            return [[] for _ in range(len(vectors))]
        scores, positions = self._index.search(vectors, k, allowed)
        wanted = {int(p) for p in positions.ravel() if p >= 0}
        records = self.records().fetch(wanted)
        results = []
        for row_scores, row_positions in zip(scores, positions, strict=True):
            hits = []
            for score, position in zip(row_scores, row_positions, strict=True):
                if position < 0 or score < min_score:
                    continue
                row_id, label, text = records[int(position)]
                hits.append(Hit(row_id, label or "", text, float(score), int(position)))
            results.append(hits)
        return results

    def close(self) -> None:
        """Release the record store's connections and the hold on this version.

        Whoever opens a version closes it (or uses it as a context manager); the server
        closes a replaced version when its last in-flight call is done.
        """
        if self._records is not None:
            self._records.close()
        index = getattr(self, "_index", None)
        if index is not None:
            index.close()
        self._hold.close()

    def __enter__(self) -> IndexVersion:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def open_index(
    path: str | Path, model: EmbeddingModel | None = None, verify: bool = True
) -> IndexVersion:
    """Open the current version of an index directory (or a version directory).

    With `model`, refuse (ArtifactMismatchError) an index built with another model.
    """
    version = IndexVersion(resolve_version_dir(Path(path)), verify=verify)
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

    def current_name(self) -> str | None:
        return layout.current_version(self.index_dir)

    def open_current(self) -> IndexVersion:
        return open_index(self.index_dir)

    def model_directory(self) -> Path:
        return model_directory_of(self.index_dir)
