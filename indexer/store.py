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
        self._label_code = {name: code for code, name in enumerate(self.label_names)}
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
        if model.fingerprint != self.model_fingerprint:
            raise ArtifactMismatchError(
                f"index version {self.name} at {self.directory} was built with model "
                f"{self.model_fingerprint} ({self.manifest['model'].get('directory')}), but the "
                f"model given is {model.fingerprint} ({model.directory}). Rebuild the index "
                "with this model, or use the model it was built with."
            )

    def _verify_files(self) -> None:
        for name, info in self.manifest["files"].items():
            path = self.directory / name
            if not path.is_file() or path.stat().st_size != info["bytes"]:
                raise ArtifactMismatchError(
                    f"{path} is missing or has the wrong size; "
                    "the index version is damaged: rebuild it"
                )
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
            if self._label_codes is None:
                raise UnknownLabelError("this index has no labels, so it cannot filter by label")
            unknown = sorted(key - self._label_code.keys())
            if unknown:  # a bounded message, however many labels were sent or exist
                shown = ", ".join(repr(label[:60]) for label in unknown[:5])
                more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
                held = ", ".join(repr(label[:60]) for label in self.label_names[:20])
                held_more = (
                    f" and {len(self.label_names) - 20} more (GetInfo lists them)"
                    if len(self.label_names) > 20
                    else ""
                )
                raise UnknownLabelError(
                    f"unknown label(s) {shown}{more}; the index holds {held}{held_more}"
                )
            mask = np.isin(self._label_codes, [self._label_code[x] for x in key])
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
