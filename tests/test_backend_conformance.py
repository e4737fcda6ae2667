"""One behaviour, every backend: the same index searched through FAISS and Milvus.

Each backend's served version must give the exact neighbours brute force gives (flat
index), apply label filters and min_score the same way, refuse unknown labels and a
mismatched model, and report the same identity (count, dim, labels). The Milvus runs
use a real Milvus server (tests/milvus_service.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from siamese_search.core.errors import ArtifactMismatchError
from siamese_search.core.model_artifact import load_model
from siamese_search.core.tables import Columns
from siamese_search.indexer.backends.milvus_backend import MilvusSource, MilvusTarget
from siamese_search.indexer.build import BuildOptions, build_index
from siamese_search.indexer.store import DirectorySource, UnknownLabelError

COLUMNS = Columns(text="text", label="class")
QUERIES = [
    "Fix crash when saving a file",
    "Improve performance of the parser",
    "Remove duplicated code in tests",
    "Add a new option to the command line",
    "zebra safari tour",
]
BACKENDS = ["faiss", pytest.param("milvus", marks=[pytest.mark.milvus, pytest.mark.slow])]


@pytest.fixture(scope="module")
def model(trained_model):
    return load_model(trained_model)


@pytest.fixture(scope="module", params=BACKENDS)
def served(request, tmp_path_factory, model, sample_train):
    """(backend, open version, index directory) for an index of the sample texts."""
    index_dir = tmp_path_factory.mktemp(f"conformance-{request.param}") / "index"
    options = BuildOptions(show_progress=False, index_type="flat")
    if request.param == "milvus":
        target = MilvusTarget(request.getfixturevalue("milvus_uri"), "conformance")
        options = BuildOptions(show_progress=False, index_type="flat", milvus=target)
        source = MilvusSource(target)
    else:
        source = DirectorySource(index_dir)
    build_index(index_dir, model, sample_train, COLUMNS, options)
    version = source.open_current()
    yield request.param, version, index_dir
    version.close()


@pytest.fixture(scope="module")
def truth(served):
    """Every stored vector with its id and label, from the writer's own files."""
    from siamese_search.indexer.store import open_index

    _, _, index_dir = served
    with open_index(index_dir) as files:
        vectors = np.array(files.vectors())
        rows = {p: (i, label) for p, i, label, _ in _all_rows(files)}
    ids = [rows[p][0] for p in range(len(rows))]
    labels = [rows[p][1] for p in range(len(rows))]
    return vectors, ids, labels


def _all_rows(version):
    for rows in version.records().iter_all():
        yield from rows


def _expected(truth, query, k, labels=(), min_score=-1.0):
    vectors, ids, row_labels = truth
    scores = vectors @ query
    order = np.argsort(-scores, kind="stable")
    hits = [
        (ids[p], float(scores[p]))
        for p in order
        if (not labels or row_labels[p] in labels) and scores[p] >= min_score
    ]
    return hits[:k]


def _same(hits, expected):
    """Same ids in the same order, scores to float32 precision (ties may swap)."""
    assert [round(h.score, 4) for h in hits] == pytest.approx(
        [round(s, 4) for _, s in expected], abs=2e-4
    )
    for hit, (want_id, want_score) in zip(hits, expected, strict=True):
        if abs(hit.score - want_score) > 1e-4:  # not a tie: the very same row
            assert hit.id == want_id


def test_identity(served, truth):
    _, version, _ = served
    assert version.count == len(truth[1]) == 100
    assert version.dim == truth[0].shape[1]
    assert version.has_labels and sorted(version.label_names) == ["1", "2", "3", "4", "5"]
    assert version.name == "000001"


def test_top_k_is_exact(served, truth, model):
    _, version, _ = served
    queries = model.embed(QUERIES)
    found = version.search(queries, k=7)
    assert len(found) == len(QUERIES)
    for query, hits in zip(queries, found, strict=True):
        _same(hits, _expected(truth, query, 7))
        assert all(h.text and h.label for h in hits)


def test_label_filter_and_min_score(served, truth, model):
    _, version, _ = served
    queries = model.embed(QUERIES)
    for query, hits in zip(queries, version.search(queries, k=5, labels=["2", "5"]), strict=True):
        assert {h.label for h in hits} <= {"2", "5"}
        _same(hits, _expected(truth, query, 5, labels={"2", "5"}))
    threshold = float(np.median(truth[0] @ queries[0]))
    (hits,) = version.search(queries[:1], k=100, min_score=threshold)
    expected = _expected(truth, queries[0], 100, min_score=threshold)
    assert 0 < len(expected) < 100
    _same(hits, expected)
    (none,) = version.search(queries[:1], k=5, min_score=1.01)
    assert none == []


def test_unknown_label_and_other_model_are_refused(served, model, tmp_path, sample_train):
    _, version, _ = served
    with pytest.raises(UnknownLabelError, match="unknown label"):
        version.search(model.embed(["x"]), k=3, labels=["nope"])
    version.check_model(model)  # the model it was built with

    class Other:
        fingerprint = "0" * 16
        directory = tmp_path

    with pytest.raises(ArtifactMismatchError, match="built with model"):
        version.check_model(Other())
