"""The neighbour vote: one rule for training, evaluation and serving."""

from __future__ import annotations

import numpy as np
import pytest

from siamese_search.core.voting import knn_vote, vote


def test_similarity_weighted_majority_with_shares():
    decision = vote(["A", "B", "B"], [0.9, 0.4, 0.3])
    assert decision.label == "A"
    assert decision.confidence == pytest.approx(0.9 / 1.6)
    assert list(decision.scores) == ["A", "B"]
    assert sum(decision.scores.values()) == pytest.approx(1.0)


def test_a_tie_goes_to_the_nearer_neighbour():
    assert vote(["A", "B", "B"], [0.5, 0.25, 0.25]).label == "A"
    assert vote(["B", "A", "A"], [0.5, 0.25, 0.25]).label == "B"
    decision = vote(["A", "B"], [0.4, 0.4])
    assert decision.label == "A" and decision.confidence == pytest.approx(0.5)


def test_dissimilar_neighbours_cannot_vote_against_and_count_once_when_alone():
    assert vote(["A", "B", "B"], [0.2, -0.5, -0.5]).label == "A"
    # every voter at or below 0: one voter, one vote; the nearest breaks the tie
    decision = vote(["A", "B", "B"], [-0.1, -0.2, -0.3])
    assert decision.label == "B" and decision.confidence == pytest.approx(2 / 3)
    assert vote(["A", "B"], [0.0, 0.0]).label == "A"


def test_min_score_and_missing_labels_abstain():
    assert vote(["A", "B"], [0.3, 0.2], min_score=0.5).label == ""
    assert vote(["A", "B"], [0.6, 0.2], min_score=0.5).label == "A"
    assert vote(["", ""], [0.9, 0.8]) == vote([], [])
    assert vote([], []).confidence == 0.0


def test_knn_vote_is_exact_search_plus_vote():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(40, 8)).astype(np.float32)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    labels = [str(i % 4) for i in range(40)]
    queries = reference[:5] + 0.01  # each nearest to its own reference row
    votes = knn_vote(reference, labels, queries, k=1)
    assert [v.label for v in votes] == labels[:5]
    wide = knn_vote(reference, labels, queries, k=100)  # k beyond the set: all of it votes
    assert len(wide) == 5 and all(len(v.scores) == 4 for v in wide)


@pytest.mark.parametrize("block_floats", [7, 1 << 24])
def test_nearest_in_blocks_is_a_stable_sort_of_every_similarity(monkeypatch, block_floats):
    """Blocks of queries (core.similarity_blocks) and a partition per row give what a
    stable sort of the whole queries x reference matrix gives: the same k, in the same
    order, ties to the lower reference row (values drawn from {0..3}: many ties)."""
    from siamese_search.core import similarity_blocks
    from siamese_search.core.served_space import nearest_other
    from siamese_search.core.voting import nearest

    monkeypatch.setattr(similarity_blocks, "BLOCK_FLOATS", block_floats)
    rng = np.random.default_rng(0)
    for _ in range(100):
        queries = rng.integers(0, 4, size=(rng.integers(1, 30), 3)).astype(np.float32)
        reference = rng.integers(0, 4, size=(rng.integers(1, 40), 3)).astype(np.float32)
        k = int(rng.integers(1, 45))
        similarity = queries @ reference.T
        expected = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
        scores, positions = nearest(reference, queries, k)
        np.testing.assert_array_equal(positions, expected)
        np.testing.assert_array_equal(scores, np.take_along_axis(similarity, expected, axis=1))
        whole = reference @ reference.T
        np.fill_diagonal(whole, -np.inf)
        if len(reference) > 1:
            best = np.sort(whole, axis=1)[:, -min(3, len(reference) - 1) :].mean(axis=1)
            np.testing.assert_allclose(nearest_other(reference, 3), best)


def test_nearest_holds_a_block_of_similarities_not_every_pair():
    """20,000 x 20,000 pairs took ~4.8 GB (a float and a sort index each); a training
    table of 50,000 labelled rows (retrain on an index) was killed."""
    import tracemalloc

    from siamese_search.core.voting import nearest

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(20_000, 16)).astype(np.float32)
    tracemalloc.start()
    try:
        nearest(vectors, vectors, 5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 400 * 2**20, f"{peak / 2**20:.0f} MB"
