"""The vector-index seam: what an in-process vector index offers the writer and reader.

Vectors are addressed by *position*, the 0-based row in the version's record store;
ids, labels and texts live in that store, not in the backend. Every backend searches
by inner product on L2-normalised vectors, i.e. cosine similarity. The life cycle:
`create` (by the factory in `backends/__init__.py`), `train` on a sample when
`needs_training` (IVF), `add`, `save`; readers `load`, `search`, `close`.

A backend that holds records itself and lives outside the process (Milvus: see
`milvus_backend.py`) is served through `indexer.store.ServedVersion` instead, the
seam the server reads versions through; `tests/test_backend_conformance.py` runs the
same behaviour tests against both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class RowMask:
    """The rows a filtered search may return, with what every search of them reads
    worked out once: the boolean mask, its little-endian bitmap (FAISS's
    IDSelectorBitmap) and the share of rows that pass (how far a graph walk widens).
    Made once per filter and kept with the filter's cached visit (`indexer.store`),
    not packed and counted again on every query (a pass over 1M rows each time)."""

    allowed: np.ndarray
    bitmap: np.ndarray
    share: float

    @classmethod
    def of(cls, allowed: np.ndarray) -> RowMask:
        allowed = np.asarray(allowed, dtype=bool)
        bitmap = np.packbits(allowed.view(np.uint8), bitorder="little")
        share = float(np.count_nonzero(allowed)) / max(len(allowed), 1)
        return cls(allowed, bitmap, share)

    @property
    def nbytes(self) -> int:
        return int(self.bitmap.nbytes)


class VectorIndex(ABC):
    #: backend-specific kind, recorded in the index manifest ("flat", "hnsw", ...)
    kind: str

    @property
    @abstractmethod
    def count(self) -> int: ...

    @property
    @abstractmethod
    def params(self) -> dict:
        """Construction and search parameters, recorded in the manifest."""

    @property
    def needs_training(self) -> bool:
        """Whether `train` must see a sample before `add` (IVF kinds)."""
        return False

    @property
    def min_training_vectors(self) -> int:
        return 0

    def train(self, sample: np.ndarray) -> None:  # noqa: B027 - a no-op unless overridden
        """Learn from a sample of the vectors (coarse centroids, codebooks)."""

    @abstractmethod
    def add(self, vectors: np.ndarray) -> None:
        """Append unit vectors; they take the next positions in order."""

    @abstractmethod
    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | RowMask | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, positions) per query, best first; position -1 pads missing hits.

        `allowed`: optional boolean mask over positions (or its RowMask, made once per
        filter); only those may be returned.
        """

    def walk_covers(self, share: float) -> bool:
        """Whether a search letting `share` of the rows through still finds its top k
        by widening its walk (a graph's beam, IVF's lists) within its cap; below that
        share the caller scores a small subset exactly (`indexer.segments`). An exact
        index covers every share."""
        return True

    @abstractmethod
    def save(self, path: Path) -> None: ...

    @classmethod
    @abstractmethod
    def load(cls, path: Path, kind: str, params: dict) -> VectorIndex:
        """The index saved at `path`, with the parameters its manifest records."""

    def close(self) -> None:  # noqa: B027 - a no-op unless overridden
        """Release what the index holds (memory maps, connections)."""
