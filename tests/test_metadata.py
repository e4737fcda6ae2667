"""Metadata on examples and filters over it (issue 36), on FAISS: stored with the rows,
carried through writes, compaction and re-embedding; filtered search exact on the
subset that passes (flat, and graph indexes below the exact-subset threshold); Get,
Scroll and search by an existing row; bad filters and metadata refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from siamese_search.core.model_artifact import load_model
from siamese_search.core.tables import Columns
from siamese_search.indexer.build import BuildOptions, apply_changes, build_index
from siamese_search.indexer.changes import Change
from siamese_search.indexer.compaction import compact_index
from siamese_search.indexer.metadata import FilterError, MetadataError, check_metadata
from siamese_search.indexer.segments import Subset
from siamese_search.indexer.store import open_index
from tests.filter_reference import passes as _passes

REPOS = ["core", "web", "docs"]
COLUMNS = Columns(text="text", label="label", id="id", metadata=("repo", "year", "tags", "ok"))
QUIET = BuildOptions(show_progress=False)
VERBS = ["Fix", "Add", "Remove", "Speed up", "Document", "Refactor"]
THINGS = ["the parser", "login", "the cache", "search", "the settings page", "tests"]


def _rows(n: int = 240) -> list[dict]:
    rows = []
    for i in range(n):
        row = {
            "id": f"r{i}",
            "text": f"{VERBS[i % 6]} {THINGS[(i // 6) % 6]} in module {i}",
            "label": str(i % 3 + 1),
            "repo": REPOS[i % 3],
            "year": 2018 + i % 7,
            "ok": i % 2 == 0,
        }
        if i % 4:
            row["tags"] = [f"t{i % 5}", f"t{i % 7}"]
        if i % 11 == 0:
            del row["repo"]  # a row without the field
        rows.append(row)
    return rows


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory, trained_model):
    """One index of the rows for the module (each test gets a copy: some write)."""
    rows = _rows()
    root = tmp_path_factory.mktemp("metadata")
    data = _jsonl(root / "rows.jsonl", rows)
    model = load_model(trained_model)
    build_index(root / "index", model, data, COLUMNS, QUIET)
    return root / "index", model, {row["id"]: row for row in rows}


@pytest.fixture(scope="module")
def graph_indexed(tmp_path_factory, trained_model):
    """An HNSW index of 600 rows for the module, read only: filters on it plan a subset
    to score exactly or a walk, by how many rows pass."""
    root = tmp_path_factory.mktemp("metadata-hnsw")
    model = load_model(trained_model)
    options = BuildOptions(show_progress=False, index_type="hnsw")
    build_index(root / "hnsw", model, _jsonl(root / "rows.jsonl", _rows(600)), COLUMNS, options)
    return root / "hnsw", model


@pytest.fixture
def indexed(built, tmp_path):
    import shutil

    index_dir, model, rows = built
    shutil.copytree(index_dir, tmp_path / "index")
    return tmp_path / "index", model, rows


FILTERS = [
    {"must": [{"key": "repo", "match": {"value": "web"}}]},
    {"must": [{"key": "year", "range": {"gte": 2020, "lt": 2023}}]},
    {"must": [{"key": "tags", "match": {"any": ["t1", "t6"]}}]},
    {"must_not": [{"key": "repo", "match": {"value": "core"}}]},
    {"should": [{"key": "ok", "match": {"value": True}}, {"key": "year", "range": {"lt": 2019}}]},
    {
        "must": [
            {"key": "label", "match": {"value": "2"}},
            {
                "should": [
                    {"key": "repo", "match": {"value": "docs"}},
                    {"key": "tags", "match": {"value": "t0"}},
                ]
            },
        ],
        "must_not": [{"key": "ok", "match": {"value": False}}],
    },
    {"must": [{"key": "id", "match": {"any": ["r3", "r7", "r200"]}}]},
    {"must": [{"key": "year", "range": {"gt": 2030}}]},  # passes nothing
]


@pytest.mark.parametrize("spec", FILTERS, ids=[f"filter{i}" for i in range(len(FILTERS))])
def test_a_filtered_search_is_brute_force_on_the_subset(indexed, spec):
    index_dir, model, rows = indexed
    queries = model.embed(["Fix the parser crash", "document the settings"])
    with open_index(index_dir) as version:
        where = version.parse_filter(spec)
        got = version.search(queries, k=10, where=where)
        ids = [r[1] for rows_ in version.records().iter_all() for r in rows_]
        vectors = version.vectors()
    passing = np.array([_passes(rows[i], spec) for i in ids])
    for query, hits in zip(queries, got, strict=True):
        scores = vectors @ query
        scores[~passing] = -np.inf
        order = np.argsort(-scores, kind="stable")[: min(10, int(passing.sum()))]
        assert [h.id for h in hits] == [ids[i] for i in order]
        for hit in hits:
            assert hit.metadata == {
                k: v for k, v in rows[hit.id].items() if k not in ("id", "text", "label")
            }


@pytest.mark.parametrize("float32_rows", [2_000, 0], ids=["float32", "half-precision-copy"])
def test_a_graph_index_searches_a_small_subset_exactly(graph_indexed, monkeypatch, float32_rows):
    """A subset too small to walk is scored exactly: in float32 when it is small,
    else candidates from its half-precision copy re-scored in float32."""
    from siamese_search.indexer import segments

    monkeypatch.setattr(segments, "FLOAT32_SUBSET_ROWS", float32_rows)
    index_dir, model = graph_indexed
    spec = {
        "must": [
            {"key": "year", "match": {"value": 2020}},
            {"key": "repo", "match": {"value": "web"}},
        ]
    }
    queries = model.embed(["Speed up the cache", "document the parser"])
    with open_index(index_dir) as version:
        assert version.kind == "hnsw"
        where = version.parse_filter(spec)
        top5 = version.search(queries, k=5, where=where)
        every = version.search(queries, k=100, where=where)  # more than pass
        plan = version._allowed((), where).alone[0][2]
        assert isinstance(plan, Subset)  # 1/21 of the rows
        assert (plan.copy is None) == (float32_rows > 0)
        scores = version.vectors() @ queries.T
        stored = [row for rows_ in version.records().iter_all(with_metadata=True) for row in rows_]
    for column, (hits, all_hits) in enumerate(zip(top5, every, strict=True)):
        passing = [
            (float(scores[position, column]), row_id)
            for position, row_id, _, _, fields in stored
            if json.loads(fields or "{}").get("year") == 2020
            and json.loads(fields or "{}").get("repo") == "web"
        ]
        expected = [row_id for _, row_id in sorted(passing, key=lambda p: -p[0])]
        assert [h.id for h in hits] == expected[:5] and len(hits) == 5
        assert [h.id for h in all_hits] == expected
        assert [h.score for h in all_hits] == pytest.approx(sorted(s for s, _ in passing)[::-1])


def test_a_graph_index_walks_a_large_subset_with_one_packed_mask(graph_indexed):
    """A subset the widened walk covers (a third of the rows) is walked with a
    selector, not scored exactly: only rows that pass come back, and the filter's
    bitmap is packed once, with its cached visit, not on every search (0.1 ms a query
    at 1M rows: issue 36)."""
    from siamese_search.indexer.backends.base import RowMask

    index_dir, model = graph_indexed
    spec = {"must": [{"key": "repo", "match": {"value": "web"}}]}
    query = model.embed(["Speed up the cache"])
    with open_index(index_dir) as version:
        where = version.parse_filter(spec)
        first = version.search(query, k=5, where=where)[0]
        (_, mask, plan), *_ = version._allowed((), where).alone
        again = version.search(query, k=5, where=where)[0]
        assert version._allowed((), where).alone[0][2] is plan
        scores = version.vectors() @ query[0]
    assert isinstance(plan, RowMask) and 10 < mask.sum() < len(mask)
    assert np.array_equal(np.unpackbits(plan.bitmap, count=len(mask), bitorder="little"), mask)
    assert [h.id for h in first] == [h.id for h in again]
    assert all(mask[h.position] for h in first) and len(first) == 5
    best = np.flatnonzero(mask)[np.argsort(-scores[mask])[:5]]
    assert [h.position for h in first] == best.tolist()


def test_worked_out_filters_are_kept_within_their_bounds(graph_indexed, monkeypatch):
    """A version keeps each filter's plan (gathered subsets, packed bitmaps) for later
    searches, but within SUBSET_CACHE_BYTES and VISIT_CACHE, the oldest going first:
    a stream of distinct filters, each valid, must not grow a server without bound;
    and a filter whose plan was dropped answers as before."""
    from siamese_search.indexer import store

    index_dir, model = graph_indexed
    query = model.embed(["Speed up the cache"])

    def by_ids(first: int) -> dict:
        return {"must": [{"key": "id", "match": {"any": [f"r{first + i}" for i in range(12)]}}]}

    with open_index(index_dir) as version:
        where = version.parse_filter(by_ids(0))
        version.search(query, k=5, where=where)
        one_plan = version._allowed((), where).nbytes
        assert isinstance(version._allowed((), where).alone[0][2], Subset) and one_plan > 0
        monkeypatch.setattr(store, "SUBSET_CACHE_BYTES", 3 * one_plan)
        monkeypatch.setattr(store, "VISIT_CACHE", 5)
        first_hits = version.search(query, k=5, where=where)[0]
        for start in range(12, 600 - 12, 12):
            version.search(query, k=5, where=version.parse_filter(by_ids(start)))
            assert version._subset_bytes <= 3 * one_plan and len(version._masks) <= 5
            assert version._subset_bytes == sum(v.nbytes for v in version._masks.values())
        assert where.key not in {key[1] for key in version._masks}  # dropped long ago
        again = version.search(query, k=5, where=version.parse_filter(by_ids(0)))[0]
    assert [(h.id, h.score) for h in again] == [(h.id, h.score) for h in first_hits]
    assert {h.id for h in again} <= {f"r{i}" for i in range(12)} and len(again) == 5


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"must": [{"key": "author", "match": {"value": "x"}}]}, "no field 'author'"),
        ({"must": [{"key": "repo", "range": {"gt": 1}}]}, "not numbers; use match"),
        ({"must": [{"key": "year", "range": {"gt": "2020"}}]}, "must be a number"),
        ({"must": [{"key": "repo", "match": {"value": {"a": 1}}}]}, "not a value to match"),
        ({"must": [{"key": "repo"}]}, "exactly one of match or range"),
        ({"maybe": []}, "takes must, should, must_not"),
        ({"must": [{"must": [{"must": []}]}]}, "nests filters 3 deep"),
        ({"must": [{"key": "repo", "match": {"value": "x"}}] * 9}, "has 9 conditions"),
        ({"must": [{"key": "label", "range": {"gt": 1}}]}, "a range takes a numeric field"),
    ],
)
def test_bad_filters_say_what_to_fix(indexed, spec, message):
    index_dir, _, _ = indexed
    with open_index(index_dir) as version, pytest.raises(FilterError, match=message):
        version.parse_filter(spec)


@pytest.mark.parametrize(
    "metadata, message",
    [
        ({"a": {"nested": 1}}, "is an object"),
        ({"a": [1, [2]]}, "is a list"),
        ({"": 1}, "non-empty string"),
        ({"k" * 257: 1}, "257 characters; the limit is 256"),
        ({"label": "x"}, "the example's own field"),
        ({"text": "x"}, "the example's own field"),
        ({f"k{i}": i for i in range(65)}, "65 fields"),
        ({"a": "x" * 2000}, "2000 characters"),
        ({"a": list(range(65))}, "list of 65 items"),
        ({"a": float("nan")}, "finite"),
        ("just text", "JSON object"),
    ],
)
def test_metadata_beyond_its_bounds_is_refused(metadata, message):
    with pytest.raises(MetadataError, match=message):
        check_metadata(metadata)


def test_metadata_survives_writes_compaction_and_reembedding(indexed, tuned_model):
    from siamese_search.indexer.reembed import reembed_index

    index_dir, model, rows = indexed
    upsert = Change(
        "upsert",
        ("r1", "new"),
        ("Fix the login on the web", "Add Welsh to the docs"),
        ("1", "2"),
        metadata=({"repo": "web", "year": 2026}, {"repo": "docs", "tags": ["welsh"]}),
    )
    keep = BuildOptions(show_progress=False, keep_versions=10)
    apply_changes(index_dir, model, [upsert, Change("delete", ("r2",))], keep)
    spec = {"must": [{"key": "year", "match": {"value": 2026}}]}

    def state(version_dir, model_):
        with open_index(version_dir, model=model_) as version:
            got = {row.id: row.metadata for row in version.get(["r1", "new", "r2", "r5"])}
            passing = {
                h.id
                for h in version.search(
                    model_.embed(["login"]), k=50, where=version.parse_filter(spec)
                )[0]
            }
            return got, passing

    expected = {
        "r1": {"repo": "web", "year": 2026},
        "new": {"repo": "docs", "tags": ["welsh"]},
        "r5": {k: v for k, v in rows["r5"].items() if k not in ("id", "text", "label")},
    }
    assert state(index_dir, model) == (expected, {"r1"})
    compact_index(index_dir, model, keep)
    assert state(index_dir, model) == (expected, {"r1"})
    tuned = load_model(tuned_model)
    reembed_index(index_dir, tuned, keep)
    assert state(index_dir, tuned) == (expected, {"r1"})
    # the version before the writes still holds what it held (what a rollback serves)
    from siamese_search.indexer import layout

    with open_index(layout.version_dir(index_dir, "000001")) as first:
        before = first.get(["r1"])[0].metadata
    assert before == {k: v for k, v in rows["r1"].items() if k not in ("id", "text", "label")}


def test_scroll_gives_every_live_row_once_and_get_answers_in_order(indexed):
    index_dir, model, rows = indexed
    apply_changes(index_dir, model, [Change("delete", ("r0", "r10"))], QUIET)
    spec = {"must": [{"key": "repo", "match": {"value": "web"}}]}
    with open_index(index_dir) as version:
        for where, expected in (
            (None, {i for i in rows if i not in ("r0", "r10")}),
            (
                version.parse_filter(spec),
                {i for i, r in rows.items() if r.get("repo") == "web"} - {"r10"},
            ),
        ):
            seen: list[str] = []
            after = -1
            while True:
                page, after_next = version.scroll(where, limit=17, after=after)
                seen += [row.id for row in page]
                assert len(page) <= 17
                if after_next is None:
                    break
                after = after_next
            assert len(seen) == len(set(seen)) and set(seen) == expected
        got = version.get(["r5", "missing", "r0", "r3"])
        assert [row.id for row in got] == ["r5", "r3"]
        assert got[0].text == rows["r5"]["text"] and got[0].label == rows["r5"]["label"]


def test_search_by_an_existing_row_leaves_it_out(indexed):
    index_dir, model, rows = indexed
    with open_index(index_dir) as version:
        position = version.records().positions_of(["r8"])["r8"]
        vector = version.vectors_at(np.array([position]))
        hits = version.search(vector, k=5, exclude=[position])[0]
        plain = version.search(vector, k=6)[0]
    assert "r8" not in [h.id for h in hits] and len(hits) == 5
    assert [h.id for h in hits] == [h.id for h in plain if h.id != "r8"][:5]


def test_the_index_cli_takes_metadata_columns(tmp_path, trained_model, capsys):
    """CSV cells are strings; an empty cell is no field."""
    from siamese_search.indexer.cli import main
    from tests.conftest import write_csv

    data = write_csv(
        tmp_path / "rows.csv",
        [("Fix the parser", "1", "core", "alice"), ("Add a cache", "2", "web", "")],
        header=("text", "label", "repo", "author"),
    )
    out = tmp_path / "index"
    argv = ["build", "--model", str(trained_model), "--data", str(data), "--out", str(out)]
    assert main([*argv, "--metadata-columns", "repo,author", "--quiet"]) == 0
    with open_index(out) as version:
        assert [row.metadata for row in version.get(["0", "1"])] == [
            {"repo": "core", "author": "alice"},
            {"repo": "web"},
        ]
    assert main([*argv, "--replace", "--metadata-columns", "repo,no such", "--quiet"]) == 2
    assert "no column 'no such'" in capsys.readouterr().err
    # a record's own field is refused up front (it was refused row by row: an empty index)
    assert main([*argv, "--replace", "--metadata-columns", "repo,label", "--quiet"]) == 2
    assert "'label' is a record's own field" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_export_then_build_keeps_metadata(indexed, tmp_path, suffix):
    """Fields become columns (typed in JSON Lines and Parquet) and build back."""
    from siamese_search.indexer.export import export_version

    index_dir, model, rows = indexed
    out = tmp_path / f"rows{suffix}"
    report = export_version(index_dir, out, show_progress=False)
    assert report.fields == ("ok", "repo", "tags", "year")
    rebuilt = tmp_path / "rebuilt"
    columns = Columns(text="text", label="label", id="id", metadata=report.fields)
    build_index(rebuilt, model, out, columns, QUIET)
    with open_index(index_dir) as before, open_index(rebuilt) as after:
        ids = sorted(rows)
        assert [r.metadata for r in after.get(ids)] == [r.metadata for r in before.get(ids)]
    assert report.as_text == ()


def test_a_parquet_export_types_fields_from_every_page_and_names_mixed_ones(
    indexed, tmp_path, capsys
):
    """Parquet fixes a column's type for the whole file. Fields written later over the
    API may be absent from the first page, hold a whole number there and a fraction
    later, or mix numbers and text: the export must still succeed (it failed with
    ArrowInvalid when the first page set the schema), keep the types it can, and
    name the field it writes as JSON text."""
    import pyarrow.parquet as pq

    from siamese_search.indexer.export import export_version

    index_dir, model, _ = indexed
    late = [
        ("late-1", {"score": 1, "mixed": 1, "marks": [1]}),
        ("late-2", {"score": 2.5, "mixed": "x", "marks": [2.5, 3]}),
    ]
    change = Change(
        "upsert",
        tuple(row_id for row_id, _ in late),
        ("A late row", "Another late row"),
        ("1", "2"),
        metadata=tuple(fields for _, fields in late),
    )
    apply_changes(index_dir, model, [change], QUIET)
    out = tmp_path / "rows.parquet"
    report = export_version(index_dir, out, show_progress=False, page_rows=3)
    assert report.as_text == ("mixed",)
    table = pq.read_table(out)
    assert str(table.schema.field("score").type) == "double"
    assert str(table.schema.field("marks").type) == "list<element: double>"
    assert str(table.schema.field("year").type) == "int64"  # whole numbers stay whole
    written = {row["id"]: row for row in table.to_pylist()}
    assert written["late-1"]["score"] == 1 and written["late-2"]["score"] == 2.5
    assert (written["late-1"]["mixed"], written["late-2"]["mixed"]) == ("1", '"x"')
    assert written["late-2"]["marks"] == [2.5, 3.0]
    # the CLI says what each format did with them, and what to export instead
    from siamese_search.indexer.cli import main

    for suffix, said in [(".parquet", "mixed mix kinds"), (".csv", "a CSV cell is text")]:
        argv = ["export", "--index", str(index_dir), "--out", str(tmp_path / f"cli{suffix}")]
        assert main([*argv, "--quiet"]) == 0
        assert said.split(" ", 1)[1] in capsys.readouterr().err


def test_an_index_holding_a_field_named_text_still_exports_and_builds_back(
    indexed, tmp_path, monkeypatch, capsys
):
    """Writes took a metadata field named `text` (now refused, as `label` and `id` are),
    and then every export, so `siamese-train --from-index` and `retrain`, refused the
    whole index ("clash with the record's columns"). An index written before exports
    such a field as `metadata.text`, says so, and builds back with it."""
    from siamese_search.indexer import metadata
    from siamese_search.indexer.cli import main
    from siamese_search.indexer.export import export_version

    index_dir, model, rows = indexed
    with monkeypatch.context() as before_the_fix:  # the names writes refused before
        before_the_fix.setattr(metadata, "RECORD_FIELDS", ("id", "label"))
        fields = {"text": "a field, not the text", "metadata.text": 1}
        change = Change("upsert", ("odd",), ("Fix the odd one",), ("1",), metadata=(fields,))
        apply_changes(index_dir, model, [change], QUIET)
    out = tmp_path / "rows.jsonl"
    report = export_version(index_dir, out, show_progress=False)
    assert report.renamed == {"text": "metadata.metadata.text"}
    assert "metadata.metadata.text" in report.fields and "metadata.text" in report.fields
    written = {row["id"]: row for row in map(json.loads, out.read_text().splitlines())}
    assert written["odd"]["text"] == "Fix the odd one" and len(written) == len(rows) + 1
    assert written["odd"]["metadata.metadata.text"] == "a field, not the text"
    rebuilt = tmp_path / "rebuilt"
    columns = Columns(text="text", label="label", id="id", metadata=report.fields)
    build_index(rebuilt, model, out, columns, QUIET)
    with open_index(rebuilt) as after:
        (odd,) = after.get(["odd"])
    assert (odd.text, odd.metadata["metadata.metadata.text"]) == ("Fix the odd one", fields["text"])
    argv = ["export", "--index", str(index_dir), "--out", str(tmp_path / "cli.parquet")]
    assert main([*argv, "--quiet"]) == 0
    assert "field 'text' written as column 'metadata.metadata.text'" in capsys.readouterr().err


def test_a_csv_export_says_which_fields_it_wrote_as_text(indexed, tmp_path):
    """A CSV cell is text: the fields holding numbers, booleans or lists are named, so
    the user knows they read back as strings (and can export JSON Lines instead)."""
    from siamese_search.indexer.export import export_version

    index_dir, _, _ = indexed
    report = export_version(index_dir, tmp_path / "rows.csv", show_progress=False)
    assert report.as_text == ("ok", "tags", "year")  # "repo" holds strings only


def test_any_field_name_filters_safely(indexed):
    """Field names are matched as bound values, never written into SQL or a JSON path:
    quotes, dots and brackets are just characters."""
    index_dir, model, _ = indexed
    odd = {'it\'s "odd"': "yes", "a.b[0]": 7, "') OR 1=1 --": "x"}
    apply_changes(
        index_dir,
        model,
        [Change("upsert", ("odd",), ("An odd row",), ("1",), metadata=(odd,))],
        QUIET,
    )
    with open_index(index_dir) as version:
        for key, value in odd.items():
            where = version.parse_filter({"must": [{"key": key, "match": {"value": value}}]})
            assert [h.id for h in version.search(model.embed(["odd"]), k=5, where=where)[0]] == [
                "odd"
            ]
        where = version.parse_filter({"must": [{"key": "a.b[0]", "range": {"gte": 7}}]})
        assert [h.id for h in version.search(model.embed(["odd"]), k=5, where=where)[0]] == ["odd"]


@pytest.fixture(scope="module")
def built_with_index(tmp_path_factory, built):
    """The same rows, their fields declared filterable (`--index-metadata`)."""
    _, model, rows = built
    root = tmp_path_factory.mktemp("metadata-indexed")
    data = _jsonl(root / "rows.jsonl", list(rows.values()))
    options = BuildOptions(show_progress=False, index_metadata=("repo", "year", "tags", "ok"))
    build_index(root / "index", model, data, COLUMNS, options)
    return root / "index"


@pytest.mark.parametrize("spec", FILTERS, ids=[f"filter{i}" for i in range(len(FILTERS))])
def test_declared_fields_are_read_from_their_index_with_the_same_answers(
    built, built_with_index, spec
):
    index_dir, model, rows = built
    queries = model.embed(["Fix the parser crash", "document the settings"])
    with open_index(index_dir) as plain, open_index(built_with_index) as indexed:
        (segment,) = indexed.segments
        assert segment.records.indexed_keys == {"repo", "year", "tags", "ok"}
        where = indexed.parse_filter(spec)
        sql, _ = where.sql_for(segment.records.indexed_keys)
        if any(c.get("key") not in ("label", "id", None) for c in spec.get("must", [])):
            assert "field_values" in sql and sql != where.sql
        got = [[h.id for h in hits] for hits in indexed.search(queries, k=10, where=where)]
        want = [
            [h.id for h in hits]
            for hits in plain.search(queries, k=10, where=plain.parse_filter(spec))
        ]
    assert got == want


def test_a_declaration_is_kept_by_later_writes_and_compaction(built, built_with_index, tmp_path):
    import shutil

    _, model, _ = built
    index_dir = tmp_path / "index"
    shutil.copytree(built_with_index, index_dir)
    upsert = Change("upsert", ("w1",), ("Fix the web login",), ("1",), metadata=({"repo": "web"},))
    keep = BuildOptions(show_progress=False, keep_versions=10)
    apply_changes(index_dir, model, [upsert], keep)  # no --index-metadata given
    spec = {"must": [{"key": "repo", "match": {"value": "web"}}]}
    with open_index(index_dir) as version:
        assert version.manifest["metadata_index"] == ["ok", "repo", "tags", "year"]
        assert all(
            s.records.indexed_keys == {"repo", "year", "tags", "ok"} for s in version.segments
        )
        (hit,) = version.search(model.embed(["web login"]), k=1, where=version.parse_filter(spec))[
            0
        ]
        assert hit.id == "w1"
    compact_index(index_dir, model, BuildOptions(show_progress=False, index_metadata=("extra",)))
    with open_index(index_dir) as version:
        (segment,) = version.segments
        assert segment.records.indexed_keys == {"repo", "year", "tags", "ok", "extra"}
        assert len(
            version.search(model.embed(["x"]), k=500, where=version.parse_filter(spec))[0]
        ) == 1 + sum(1 for i in range(240) if i % 3 == 1 and i % 11)


def test_an_undeclared_field_is_indexed_on_first_use_with_the_same_answers(indexed, monkeypatch):
    """Issue 36: the first filter on a field nobody declared scans the rows' JSON and
    has the field's index built in the background, in a file beside the segment's; the
    next filters on it (other values, and after a reopen) read that index, with the
    answers the scan gives. A damaged index file is not read but built again."""
    from siamese_search.indexer import field_index

    monkeypatch.setattr(field_index, "MIN_ROWS", 0)
    monkeypatch.setattr(field_index, "BUILDER", field_index.FirstUseIndexer())
    index_dir, model, rows = indexed
    queries = model.embed(["Fix the parser crash", "document the settings"])
    with open_index(index_dir) as version:
        (segment,) = version.segments
        first = {"must": [{"key": "repo", "match": {"value": "web"}}]}
        version.search(queries, k=5, where=version.parse_filter(first))
        assert field_index.BUILDER.wait()
        assert "repo" in segment.records.field_indexed and not segment.records.indexed_keys
        built = field_index.path_for(segment.directory, "repo")
        assert field_index.BUILDER.built == [built]
    damaged = field_index.path_for(segment.directory, "year")
    damaged.write_bytes(b"not a database")
    for spec in FILTERS:
        with open_index(index_dir) as version:  # opened afresh: reads what is built
            (segment,) = version.segments
            assert "repo" in segment.records.field_indexed
            where = version.parse_filter(spec)
            reads_index = where.reads_only(segment.records.field_indexed)
            hits = version.search(queries, k=240, where=where)
            field_index.BUILDER.wait()
        want = {i for i, row in rows.items() if _passes(row, spec)}
        for found in hits:
            assert {h.id for h in found} == want, spec
        if reads_index:  # read from the files built on first use, not scanned
            assert where.fields() <= segment.records.field_indexed - {"id", "label"}
    assert field_index.key_of(damaged) == "year"  # rebuilt whole
    assert sorted(p.name for p in built.parent.iterdir()) == sorted(
        field_index.path_for(segment.directory, key).name for key in ("repo", "year", "tags", "ok")
    )
    # a write links the built indexes into its version with the segment's files
    upsert = Change("upsert", ("w1",), ("Fix the web login",), ("1",), metadata=({"repo": "web"},))
    apply_changes(index_dir, model, [upsert], BuildOptions(show_progress=False))
    with open_index(index_dir) as version:
        kept = next(s for s in version.segments if s.rows == 240)
        assert {"repo", "year", "tags", "ok"} <= kept.records.field_indexed
        assert field_index.path_for(kept.directory, "repo").samefile(built)


#: a builder process: builds `key`'s field index of a segment, optionally stalling
#: mid-build (after its first values are written, before the rename) until killed
_BUILDER_PROCESS = """
import sys, time
from pathlib import Path
from siamese_search.indexer import field_index

records, key, stall = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "stall"
if stall:
    original = field_index.field_values

    def values_then_stall(rows, wanted):
        yield from original(rows, wanted)
        print("building", flush=True)
        time.sleep(3600)

    field_index.field_values = values_then_stall
print("start", flush=True)
field_index.build(records, key, field_index.path_for(records.parent, key))
print("built", flush=True)
"""


def _builder(segment_dir, key: str, stall: bool):
    import subprocess
    import sys

    from siamese_search.indexer import layout

    records = segment_dir / layout.RECORDS_FILE
    return subprocess.Popen(
        [sys.executable, "-c", _BUILDER_PROCESS, str(records), key] + ["stall" if stall else "go"],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_a_field_index_builder_killed_mid_build_or_racing_another_leaves_whole_answers(
    indexed, monkeypatch
):
    """Attacks on the field indexes built on first use: a builder killed mid-build
    leaves only a temporary file, never read (filters answer as a scan does, the next
    build succeeds, and a stale leftover is removed); two processes building the same
    index at once each rename a whole file into place, and a reader that attached the
    first keeps answering while the second replaces it."""
    import os
    import signal
    import time

    from siamese_search.indexer import field_index, layout

    monkeypatch.setattr(field_index, "MIN_ROWS", 0)
    monkeypatch.setattr(field_index, "BUILDER", field_index.FirstUseIndexer())
    index_dir, model, rows = indexed
    with open_index(index_dir) as version:
        (segment,) = version.segments
        segment_dir = segment.directory
    spec = {"must": [{"key": "repo", "match": {"value": "web"}}]}
    want = {i for i, row in rows.items() if _passes(row, spec)}
    queries = model.embed(["Fix the parser crash"])

    def answers() -> set[str]:
        with open_index(index_dir) as version:
            found = version.search(queries, k=240, where=version.parse_filter(spec))
            assert field_index.BUILDER.wait()
        return {h.id for h in found[0]}

    killed = _builder(segment_dir, "repo", stall=True)
    assert killed.stdout.readline() == "start\n" and killed.stdout.readline() == "building\n"
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    (left,) = (segment_dir / field_index.DIRECTORY).glob(".building-*")
    assert field_index.existing(segment_dir) == {}  # the partial file is not an index
    assert answers() == want  # scanned, and the index built in the background
    assert field_index.key_of(field_index.path_for(segment_dir, "repo")) == "repo"
    assert answers() == want  # read from the built index
    assert left.exists()  # a recent leftover may be a live builder's: kept
    an_hour_ago = time.time() - field_index.STALE_SECONDS - 60
    os.utime(left, (an_hour_ago, an_hour_ago))
    field_index.build(
        segment_dir / layout.RECORDS_FILE, "year", field_index.path_for(segment_dir, "year")
    )
    assert not left.exists()

    # two builders of one index at once, under a reader holding the current file
    with open_index(index_dir) as version:
        (segment,) = version.segments
        assert "repo" in segment.records.field_indexed
        where = version.parse_filter(spec)
        racers = [_builder(segment_dir, "repo", stall=False) for _ in range(2)]
        for racer in racers:
            assert racer.wait(timeout=60) == 0 and racer.stdout.read().endswith("built\n")
        found = version.search(queries, k=240, where=where)
        assert {h.id for h in found[0]} == want
    assert field_index.key_of(field_index.path_for(segment_dir, "repo")) == "repo"
    assert not list((segment_dir / field_index.DIRECTORY).glob(".building-*"))
    assert answers() == want
