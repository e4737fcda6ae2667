"""Label prediction from nearest neighbours: one rule for evaluation and serving.

Each of the k nearest labelled neighbours votes for its label with its cosine
similarity (clipped at 0, so a dissimilar neighbour cannot vote against); the label
with the largest total wins and its share of the total is the confidence. Ties go
to the label of the nearer neighbour. Neighbours under `min_score` do not vote;
with no voter left, the prediction abstains (empty label).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Vote:
    label: str  # "" when abstaining
    confidence: float  # winning share of the vote, in [0, 1]
    scores: dict[str, float]  # label -> share of the vote, descending


def vote(labels: Sequence[str], scores: Sequence[float], min_score: float = -1.0) -> Vote:
    """`labels`/`scores` of one query's neighbours, nearest first."""
    totals: dict[str, float] = {}
    for label, score in zip(labels, scores, strict=True):
        if score < min_score or not label:
            continue
        # dict keeps first-seen order, i.e. nearest first: max() then breaks ties to it
        totals[label] = totals.get(label, 0.0) + max(float(score), 0.0) + 1e-9
    if not totals:
        return Vote("", 0.0, {})
    grand = sum(totals.values())
    shares = {label: total / grand for label, total in totals.items()}
    winner = max(shares, key=shares.__getitem__)
    ranked = dict(sorted(shares.items(), key=lambda item: -item[1]))
    return Vote(winner, shares[winner], ranked)
