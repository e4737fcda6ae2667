"""One behaviour, every backend: the same index searched through FAISS and Milvus.

Each backend's served version must give the exact neighbours brute force gives (flat
index), apply label filters and min_score the same way, refuse unknown labels and a
mismatched model, and report the same identity (count, dim, labels). With metadata
(issue 36): every filter form, Get, Scroll and search by id answer as the rows say,
through upserts that change fields, deletes, compaction and rollback, and filter
mistakes are refused alike. The Milvus runs
use a real Milvus server (tests/milvus_service.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from siamese_search.core.errors import ArtifactMismatchError
from siamese_search.core.model_artifact import load_model
from siamese_search.core.tables import Columns
from siamese_search.indexer.backends.milvus_backend import MilvusSource, MilvusTarget
from siamese_search.indexer.build import BuildOptions, apply_changes, build_index
from siamese_search.indexer.changes import Change
from siamese_search.indexer.compaction import compact_index
from siamese_search.indexer.metadata import MAX_ANY, FilterError
from siamese_search.indexer.store import DirectorySource, UnknownLabelError
from tests.filter_reference import passes as _passes

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


# ---- metadata: every filter form, Get, Scroll, search by id, through writes --------------

REPOS = ["core", "web", "docs"]
VERBS = ["Fix", "Add", "Remove", "Document"]
THINGS = ["the parser", "login", "search", "tests", "the cache"]
ODD = 'it\'s "odd"'  # a field name with quotes: no filter may splice it in unquoted
META_COLUMNS = Columns(
    text="text", label="label", id="id", metadata=("repo", "year", "tags", "ok", ODD)
)
FILTERS = [
    {"must": [{"key": "repo", "match": {"value": "web"}}]},
    {"must": [{"key": "tags", "match": {"any": ["t1", "t6", 3]}}]},
    {"must": [{"key": "year", "range": {"gte": 2020, "lt": 2023}}]},
    {"must": [{"key": "year", "match": {"any": [2019, 2024.0]}}]},
    {"must_not": [{"key": "repo", "match": {"value": "core"}}]},
    {"should": [{"key": "ok", "match": {"value": True}}, {"key": "year", "range": {"lt": 2019}}]},
    {
        "must": [
            {"key": "label", "match": {"any": ["2", "3"]}},
            {
                "should": [
                    {"key": "repo", "match": {"value": "docs"}},
                    {"key": "tags", "match": {"value": "t0"}},
                ]
            },
        ],
        "must_not": [{"key": "ok", "match": {"value": False}}, {}],
    },
    {"must": [{"key": "id", "match": {"any": ["r3", "r7", "r200", 'q"uote']}}, {}]},
    {"must": [{"key": ODD, "match": {"value": "é"}}]},
    {"must": [{"key": "year", "range": {"gt": 2030}}]},  # passes nothing
    # the most values a match takes, of every kind (one SQL test per value was too deep)
    {"must": [{"key": "tags", "match": {"any": ["t1", 2019, *range(5000, 5000 + MAX_ANY - 3)]}}]},
    {"must": [{"key": "year", "match": {"any": [2021, True, *map(str, range(MAX_ANY - 2))]}}]},
]
#: the writes a conformance run goes through: new fields, changed fields, deletes
WRITES = [
    Change(
        "upsert",
        ("r1", "r2", 'q"uote', "new"),
        ("Fix the login page", "Add a cache to search", "Quote the odd row", "Speed up docs"),
        ("1", "2", "3", "2"),
        metadata=(
            {"repo": "web", "year": 2026, "tags": ["t1"]},
            {},
            {ODD: "é", "year": 2024.0},
            {"repo": "docs", "ok": False, "tags": [3, "t6"]},
        ),
    ),
    Change("delete", ("r4", "r9", "r30")),
]


def _meta_rows(n: int = 120) -> list[dict]:
    rows = []
    for i in range(n):
        row = {
            "id": f"r{i}",
            "text": f"{VERBS[i % 4]} {THINGS[(i // 4) % 5]} in module {i}",
            "label": str(i % 3 + 1),
            "repo": REPOS[i % 3],
            "year": 2018 + i % 7,
            "ok": i % 2 == 0,
        }
        if i % 4:
            row["tags"] = [f"t{i % 5}", f"t{i % 7}"]
        if i % 11 == 0:
            del row["repo"]  # a row without the field
        if i % 10 == 3:
            row[ODD] = "é"
        rows.append(row)
    return rows


@pytest.fixture(scope="module", params=BACKENDS)
def with_metadata(request, tmp_path_factory, model):
    """(source, index directory, build options, rows by id) of an index of texts with
    metadata fields, on each backend; the tests write to it in order."""
    import json

    root = tmp_path_factory.mktemp(f"metadata-{request.param}")
    rows = _meta_rows()
    data = root / "rows.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    options = BuildOptions(show_progress=False, index_type="flat", keep_versions=10)
    if request.param == "milvus":
        target = MilvusTarget(request.getfixturevalue("milvus_uri"), "conformance_metadata")
        options = BuildOptions(
            show_progress=False, index_type="flat", keep_versions=10, milvus=target
        )
        source = MilvusSource(target)
    else:
        source = DirectorySource(root / "index")
    build_index(root / "index", model, data, META_COLUMNS, options)
    return source, root / "index", options, {row["id"]: row for row in rows}


def _expected_rows(rows: dict, changes: list[Change]) -> dict:
    """The rows after the writes, written plainly."""
    rows = dict(rows)
    for change in changes:
        if change.kind == "delete":
            for row_id in change.ids:
                rows.pop(row_id, None)
            continue
        for row_id, text, label, fields in zip(
            change.ids, change.texts, change.labels, change.metadata, strict=True
        ):
            rows[row_id] = {"id": row_id, "text": text, "label": label, **fields}
    return rows


def _fields_of(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("id", "text", "label")}


def _agrees(version, model, rows: dict) -> None:
    """Every filter form, Get, Scroll and search by id answer as the rows say."""
    queries = model.embed(["Fix the parser crash", "document the cache"])
    ids = sorted(rows)
    positions = version.positions_of(ids)
    assert set(positions) == set(ids)
    vectors = version.vectors_at(np.array([positions[i] for i in ids]))
    for spec in FILTERS:
        where = version.parse_filter(spec)
        passing = np.array([_passes(rows[i], spec) for i in ids])
        for query, hits in zip(queries, version.search(queries, k=8, where=where), strict=True):
            scores = vectors @ query
            scores[~passing] = -np.inf
            order = np.argsort(-scores, kind="stable")[: min(8, int(passing.sum()))]
            _same(hits, [(ids[p], float(scores[p])) for p in order])
            for hit in hits:
                assert hit.metadata == _fields_of(rows[hit.id]), spec
        # Scroll: every passing live row once, across pages
        seen: list[str] = []
        after = -1
        while True:
            page, after_next = version.scroll(where, limit=13, after=after)
            assert len(page) <= 13
            seen += [row.id for row in page]
            if after_next is None:
                break
            after = after_next
        assert sorted(seen) == [i for i, ok in zip(ids, passing, strict=True) if ok], spec
    got = version.get(["r5", "missing", "new", "r4", "r1"])
    wanted = [i for i in ["r5", "missing", "new", "r4", "r1"] if i in rows]
    assert [row.id for row in got] == wanted
    for row in got:
        assert (row.text, row.label, row.metadata) == (
            rows[row.id]["text"],
            rows[row.id]["label"],
            _fields_of(rows[row.id]),
        )
    # search by an existing row: its own vector, the row itself left out
    (position,) = version.positions_of(["r8"]).values()
    vector = version.vectors_at(np.array([position]))
    hits = version.search(vector, k=5, exclude=[position])[0]
    plain = version.search(vector, k=6)[0]
    assert [h.id for h in hits] == [h.id for h in plain if h.id != "r8"][:5]


def test_filters_get_scroll_and_search_by_id_agree_through_writes(with_metadata, model):
    """One run per backend: built, written (upserts changing fields, deletes),
    compacted, rolled back; at each step both backends answer as the rows say."""
    from siamese_search.indexer.versions import rollback

    source, index_dir, options, rows = with_metadata
    with source.open_current() as version:
        _agrees(version, model, rows)
    apply_changes(index_dir, model, WRITES, options)
    written = _expected_rows(rows, WRITES)
    with source.open_current() as version:
        assert version.count == len(written)
        _agrees(version, model, written)
    compact_index(index_dir, model, options)
    with source.open_current() as version:
        _agrees(version, model, written)
    with source.open_version("000002") as version:  # what an older page token reads
        _agrees(version, model, written)
    rollback(index_dir, to="000001", milvus=options.milvus)
    with source.open_current() as version:
        assert version.name == "000001"
        _agrees(version, model, rows)


def test_filter_mistakes_are_refused_alike(with_metadata):
    source, _, _, _ = with_metadata
    with source.open_current() as version:
        for spec, message in (
            ({"must": [{"key": "nope", "match": {"value": 1}}]}, "holds no field 'nope'"),
            ({"must": [{"key": "repo", "range": {"gt": 1}}]}, "not numbers"),
            ({"must": [{"key": "tags", "range": {"gt": 1}}]}, "holds lists"),
            ({"must": [{"must": [{"must": []}]}]}, "nests filters"),
            ({"should": [{"key": "repo", "match": {"value": "web"}}] * 9}, "holds at most 8"),
        ):
            with pytest.raises(FilterError, match=message):
                version.parse_filter(spec)
