"""The vector-index seam: what any backend (FAISS today, a distributed engine later) offers.

Vectors are addressed by *position*, the 0-based row in the version's record store;
ids, labels and texts live in that store, not in the backend. Every backend searches
by inner product on L2-normalised vectors, i.e. cosine similarity.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np


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

    @abstractmethod
    def add(self, vectors: np.ndarray) -> None:
        """Append unit vectors; they take the next positions in order."""

    @abstractmethod
    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, positions) per query, best first; position -1 pads missing hits.

        `allowed`: optional boolean mask over positions; only those may be returned.
        """

    @abstractmethod
    def save(self, path: Path) -> None: ...
