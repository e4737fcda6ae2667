"""A 2-D picture of an index for the console (issue 38): PCA of a bounded, uniform
sample of the current version's vectors, computed once per version and kept.

Why PCA and not t-SNE / UMAP: it is linear, so the answer carries the projection itself
(the sample's mean and two axes) and a client places any vector, a query's Embed,
on the same map with two dot products, without another call; it is deterministic
(a fixed-seed sample, an SVD) and takes ~50 ms for 2,000 x 640 here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from siamese_search.indexer.store import IndexVersion, ServedVersion, StoredRow

#: points a map shows at most (the answer stays ~0.5 MB: texts are cut)
SAMPLE_ROWS = 2_000
TEXT_CHARS = 200
#: maps kept (per collection and version)
KEPT = 16


class SpaceMap:
    """One version's map: points (row, x, y) and the projection."""

    def __init__(self, rows: list[StoredRow], xy: np.ndarray, mean, axes, count: int):
        self.rows, self.xy, self.mean, self.axes, self.count = rows, xy, mean, axes, count


def sample_rows(index: ServedVersion, limit: int = SAMPLE_ROWS) -> list[StoredRow]:
    """At most `limit` live rows: all of a small index; else a uniform sample (fixed
    seed) of a version's positions, or its first rows where live positions cannot be
    listed (a Milvus-served version)."""
    if index.count <= limit or not isinstance(index, IndexVersion):
        rows, _ = index.scroll(None, limit, -1)
        return rows
    live = index.live_positions()
    chosen = np.sort(np.random.default_rng(0).choice(live, size=limit, replace=False))
    return index.rows_at([int(p) for p in chosen])


def compute(index: ServedVersion) -> SpaceMap:
    rows = sample_rows(index)
    if not rows:
        dim = index.dim
        return SpaceMap([], np.zeros((0, 2)), np.zeros(dim), np.zeros((2, dim)), index.count)
    vectors = index.vectors_at(np.array([row.position for row in rows], dtype=np.int64))
    mean = vectors.mean(axis=0)
    centred = vectors - mean
    if len(rows) < 2:
        axes = np.eye(2, index.dim, dtype=np.float32)
    else:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        axes = np.zeros((2, index.dim), dtype=np.float32)
        axes[: min(2, len(vt))] = vt[:2]
    return SpaceMap(rows, centred @ axes.T, mean, axes, index.count)


class SpaceMaps:
    """Maps by (collection, version), computed once each (a lock per computation)."""

    def __init__(self):
        self._maps: OrderedDict[tuple, SpaceMap] = OrderedDict()
        self._lock = threading.Lock()

    def of(self, collection: str, index: ServedVersion) -> SpaceMap:
        key = (collection, index.name, id(index))
        with self._lock:
            found = self._maps.get(key)
            if found is None:
                found = self._maps[key] = compute(index)
                while len(self._maps) > KEPT:
                    self._maps.popitem(last=False)
            self._maps.move_to_end(key)
            return found
