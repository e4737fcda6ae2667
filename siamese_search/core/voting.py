"""Label prediction from nearest neighbours: one rule for training, evaluation and serving.

Each of the k nearest labelled neighbours votes for its label with its cosine
similarity (clipped at 0, so a dissimilar neighbour cannot vote against); the label
with the largest total wins and its share of the total is the confidence. Ties go
to the label of the nearer neighbour. Neighbours under `min_score` do not vote;
with no voter left, the prediction abstains (empty label). When every voter has a
similarity of 0 or less, each counts once (the nearest still breaks ties).

Not for: searching. The server and `siamese-evaluate` search an index version and
vote on its hits; `knn_vote` is the brute-force search + vote used on small in-memory
sets (early stopping during training, baselines in bench/).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from siamese_search.core.similarity_blocks import row_blocks, top_k


@dataclass(frozen=True)
class Vote:
    label: str  # "" when abstaining
    confidence: float  # winning share of the vote, in [0, 1]
    scores: dict[str, float]  # label -> share of the vote, descending


def vote(labels: Sequence[str], scores: Sequence[float], min_score: float = -1.0) -> Vote:
    """`labels`/`scores` of one query's neighbours, nearest first."""
    totals: dict[str, float] = {}
    voters: dict[str, int] = {}
    for label, score in zip(labels, scores, strict=True):
        if score < min_score or not label:
            continue
        # dict keeps first-seen order, i.e. nearest first: max() then breaks ties to it
        totals[label] = totals.get(label, 0.0) + max(float(score), 0.0)
        voters[label] = voters.get(label, 0) + 1
    if not totals:
        return Vote("", 0.0, {})
    grand = sum(totals.values())
    if grand <= 0.0:  # nobody is similar at all: one voter, one vote
        totals = {label: float(n) for label, n in voters.items()}
        grand = float(sum(voters.values()))
    shares = {label: total / grand for label, total in totals.items()}
    winner = max(shares, key=shares.__getitem__)
    ranked = dict(sorted(shares.items(), key=lambda item: -item[1]))  # stable: ties keep order
    return Vote(winner, shares[winner], ranked)


def nearest(reference: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (scores, positions) of each query row among the unit reference rows,
    best first; ties keep the reference order, as a flat index does. Memory is a
    block of similarities, not queries x reference (core.similarity_blocks)."""
    reference, queries = np.asarray(reference), np.asarray(queries)
    k = min(k, len(reference))
    dtype = np.result_type(queries.dtype, reference.dtype)
    scores = np.empty((len(queries), k), dtype=dtype)
    positions = np.empty((len(queries), k), dtype=np.int64)
    for block in row_blocks(len(queries), len(reference)):
        scores[block], positions[block] = top_k(queries[block] @ reference.T, k)
    return scores, positions


def knn_vote(
    reference: np.ndarray,
    reference_labels: Sequence[str] | np.ndarray,
    queries: np.ndarray,
    k: int,
) -> list[Vote]:
    """Exact k-nearest-neighbour vote of each query row among the reference rows.

    Rows are unit vectors, so the inner product is the cosine similarity the index
    search returns; ties in similarity keep the reference order (stable sort).
    """
    labels = np.asarray(reference_labels)
    scores, positions = nearest(reference, queries, k)
    return [
        vote(labels[row].tolist(), row_scores.tolist())
        for row, row_scores in zip(positions, scores, strict=True)
    ]
