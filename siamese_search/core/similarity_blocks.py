"""Exact nearest rows among many, in bounded memory.

The trainer compares every training text with every other (the held-out folds' votes,
each text's nearest other for the domain bar), and `siamese-evaluate` every query with
the reference set. Done as one queries x reference matrix and a full sort of it, that
took ~12 bytes a pair: 2.7 GB for CLINC150's 15,000 texts, ~30 GB for 50,000, so
`retrain` on an index of that many labelled rows was killed. Here the queries go in
blocks of at most BLOCK_FLOATS similarities, and each row keeps its k best by a
partition (linear) instead of a sort, with the ties a flat index keeps: the lower
reference position first.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

#: similarities computed at once (float32: 64 MB), whatever the sizes
BLOCK_FLOATS = 1 << 24


def row_blocks(rows: int, columns: int) -> Iterator[slice]:
    """Slices of `rows` query rows such that each block's similarities to `columns`
    reference rows stay within BLOCK_FLOATS (one row at least)."""
    step = max(1, BLOCK_FLOATS // max(columns, 1))
    for first in range(0, rows, step):
        yield slice(first, min(first + step, rows))


def top_k(similarity: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k largest values and their columns, best first; among equal values
    the lower column first, as a stable sort of the whole row would give (k at most
    the columns)."""
    rows, columns = similarity.shape
    if k >= columns:
        positions = np.argsort(-similarity, axis=1, kind="stable")
        return np.take_along_axis(similarity, positions, axis=1), positions
    kth = -np.partition(-similarity, k - 1, axis=1)[:, k - 1 : k]  # each row's k-th best
    above = similarity > kth
    # the k-th value's ties fill the rest, lowest columns first
    ties = similarity == kth
    room = k - above.sum(axis=1, keepdims=True)
    chosen = above | (ties & (np.cumsum(ties, axis=1) <= room))
    positions = np.nonzero(chosen)[1].reshape(rows, k)  # ascending columns in each row
    scores = np.take_along_axis(similarity, positions, axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(positions, order, axis=1)
