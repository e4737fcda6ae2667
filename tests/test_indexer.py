"""Indexer: versions, exactness against brute force, incremental updates, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from siamese_search.core.errors import ArtifactMismatchError, DataError, UserError
from siamese_search.core.model_artifact import load_model
from siamese_search.core.tables import Columns
from siamese_search.indexer import layout
from siamese_search.indexer.backends import create_index
from siamese_search.indexer.build import BuildOptions, add_to_index, build_index, delete_from_index
from siamese_search.indexer.cli import main as index_main
from siamese_search.indexer.store import UnknownLabelError, open_index
from tests.conftest import write_csv

COLUMNS = Columns(text="text", label="class", id="id")
QUIET = BuildOptions(show_progress=False)


@pytest.fixture(scope="module")
def model(trained_model):
    return load_model(trained_model)


@pytest.fixture
def corpus(tmp_path):
    rows = [
        ("a1", "Fix crash when saving an empty document", "1"),
        ("a2", "Fixed null pointer in the login page", "1"),
        ("b1", "Remove duplicated code in the parser", "2"),
        ("b2", "Remove duplicate tests", "2"),
        ("c1", "Refactor the package structure", "3"),
        ("d1", "Add dark mode feature", "4"),
        ("e1", "Improve performance of the query cache", "5"),
        ("e2", "Faster startup by caching the config", "5"),
    ]
    return write_csv(tmp_path / "corpus.csv", rows, header=("id", "text", "class"))


def test_build_makes_a_current_version_that_matches_brute_force(tmp_path, model, corpus):
    report = build_index(tmp_path / "idx", model, corpus, COLUMNS, QUIET)
    assert report.version == "000001" and report.count == 8 and report.index_type == "flat"
    version = open_index(tmp_path / "idx", model=model)
    assert version.label_names == ["1", "2", "3", "4", "5"]
    manifest = version.manifest
    assert manifest["metric"] == "inner_product" and manifest["normalized"] is True
    assert manifest["model"]["fingerprint"] == model.fingerprint
    assert set(manifest["files"]) == {
        f"segments/000001/{name}"
        for name in ("index.faiss", "vectors.f32", "records.sqlite", "labels.i32")
    }

    queries = model.embed(["crash on save", "speed up the cache"])
    stored = version.vectors()
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-5)
    brute = queries @ stored.T
    hits = version.search(queries, k=8)
    for row, query_hits in enumerate(hits):
        expected = np.argsort(-brute[row], kind="stable")
        assert [h.position for h in query_hits] == list(expected)
        np.testing.assert_allclose([h.score for h in query_hits], brute[row][expected], atol=1e-5)
    assert hits[0][0].id in {"a1", "a2"} and hits[0][0].label == "1"
    assert hits[0][0].text.startswith("Fix")


def test_label_filter_and_min_score(tmp_path, model, corpus):
    build_index(tmp_path / "idx", model, corpus, COLUMNS, QUIET)
    version = open_index(tmp_path / "idx")
    query = model.embed(["crash on save"])
    only_5 = version.search(query, k=5, labels=["5"])[0]
    assert [h.label for h in only_5] == ["5", "5"]
    everything = version.search(query, k=8)[0]
    threshold = (everything[0].score + everything[-1].score) / 2
    high = version.search(query, k=8, min_score=threshold)[0]
    assert [h.id for h in high] == [h.id for h in everything if h.score >= threshold]
    assert 0 < len(high) < len(everything)
    with pytest.raises(UnknownLabelError, match="unknown label.*'9'"):
        version.search(query, k=3, labels=["9"])


def test_add_delete_upsert_make_new_versions_without_reencoding(tmp_path, model, corpus):
    index_dir = tmp_path / "idx"
    build_index(index_dir, model, corpus, COLUMNS, QUIET)
    first = open_index(index_dir)
    old_vectors = np.array(first.vectors())

    more = write_csv(
        tmp_path / "more.csv", [("f1", "Support CSV export", "4")], header=("id", "text", "class")
    )
    report = add_to_index(index_dir, model, more, COLUMNS, QUIET)
    assert (report.version, report.count, report.added) == ("000002", 9, 1)
    second = open_index(index_dir)
    np.testing.assert_array_equal(np.array(second.vectors())[:8], old_vectors)

    with pytest.raises(DataError, match=r"1 id\(s\) are already in the index.*--upsert"):
        add_to_index(index_dir, model, more, COLUMNS, QUIET)
    changed = write_csv(
        tmp_path / "changed.csv",
        [("f1", "Support PDF export", "4")],
        header=("id", "text", "class"),
    )
    report = add_to_index(index_dir, model, changed, COLUMNS, QUIET, upsert=True)
    assert (report.count, report.removed) == (9, 1)
    third = open_index(index_dir)
    assert [h.text for h in third.search(model.embed(["PDF export"]), k=1)[0]] == [
        "Support PDF export"
    ]

    report = delete_from_index(index_dir, model, ["a1", "b1"], QUIET)
    assert report.count == 7
    fourth = open_index(index_dir)
    assert {h.id for h in fourth.search(model.embed(["crash"]), k=7)[0]}.isdisjoint({"a1", "b1"})
    with pytest.raises(UserError, match=r"1 id\(s\) are not in index version .*'zz'"):
        delete_from_index(index_dir, model, ["zz"], QUIET)
    # retention keeps the current version and two before it, but never deletes a
    # version a reader still holds: the three opened above are all still open
    assert layout.list_versions(index_dir) == ["000001", "000002", "000003", "000004"]
    assert first.search(model.embed(["crash"]), k=1)[0]  # an open reader keeps working
    for reader in (first, second, third, fourth):
        reader.close()
    delete_from_index(index_dir, model, ["a2"], QUIET)
    assert layout.list_versions(index_dir) == ["000003", "000004", "000005"]


def test_bad_rows_are_skipped_and_reported_or_fatal_with_strict(tmp_path, model, capsys):
    data = tmp_path / "bad.csv"
    data.write_bytes(
        b"id,text,class\n1,good text,1\n2,,1\n1,duplicate id,2\n3,caf\xe9,1\n"
        b"4,too,many,fields\n5,another good one,2\n"
    )
    report = build_index(tmp_path / "idx", model, data, COLUMNS, QUIET)
    assert report.count == 2
    reasons = {p.line: p.reason for p in report.problems}
    assert reasons[3].startswith("empty text") and "duplicate id '1'" in reasons[4]
    assert "not UTF-8" in reasons[5] and "fields" in reasons[6]
    manifest = open_index(tmp_path / "idx").manifest
    assert manifest["problems"]["count"] == 4

    with pytest.raises(DataError, match="--strict is set: nothing was written"):
        build_index(
            tmp_path / "idx",
            model,
            data,
            COLUMNS,
            BuildOptions(strict=True, show_progress=False, replace=True),
        )
    assert layout.list_versions(tmp_path / "idx") == ["000001"]
    assert not [p for p in (tmp_path / "idx").iterdir() if p.name.startswith(".tmp-")]


def test_index_without_labels_serves_search_only(tmp_path, model, corpus):
    build_index(tmp_path / "idx", model, corpus, Columns(text="text", label=None, id="id"), QUIET)
    version = open_index(tmp_path / "idx")
    assert not version.has_labels and version.manifest["labels"] is None
    assert version.search(model.embed(["crash"]), k=2)[0][0].label == ""
    with pytest.raises(UnknownLabelError, match="no labels"):
        version.search(model.embed(["crash"]), k=2, labels=["1"])


def test_index_from_another_model_is_refused(tmp_path, model, corpus, trained_model):
    build_index(tmp_path / "idx", model, corpus, COLUMNS, QUIET)
    version = open_index(tmp_path / "idx")
    version.manifest["model"]["fingerprint"] = "another-model"
    with pytest.raises(ArtifactMismatchError, match="built with model another-model.*Rebuild"):
        version.check_model(model)


def test_damaged_version_is_refused(tmp_path, model, corpus):
    build_index(tmp_path / "idx", model, corpus, COLUMNS, QUIET)
    version_dir = layout.version_dir(tmp_path / "idx", "000001")
    vectors = version_dir / "segments" / "000001" / layout.VECTORS_FILE
    raw = bytearray(vectors.read_bytes())
    raw[0] ^= 0xFF
    vectors.write_bytes(bytes(raw))
    with pytest.raises(ArtifactMismatchError, match="does not match its checksum"):
        open_index(tmp_path / "idx")


def test_files_verified_when_written_are_not_hashed_again_until_they_change(
    tmp_path, model, corpus, monkeypatch
):
    """The writer records what it hashed (layout.record_verified): opening the version
    (a server's reload, the next write's base) hashes no data file; a file changed
    since, or a version without the record, is hashed, and damage is still refused."""
    from siamese_search.indexer import store

    build_index(tmp_path / "idx", model, corpus, COLUMNS, QUIET)
    hashed: list[str] = []
    real_sha256_files = store.sha256_files

    def counting(paths):
        hashed.extend(Path(p).name for p in paths)
        return real_sha256_files(paths)

    monkeypatch.setattr(store, "sha256_files", counting)
    open_index(tmp_path / "idx").close()
    assert hashed == []
    directory = layout.version_dir(tmp_path / "idx", "000001")
    vectors = directory / "segments" / "000001" / layout.VECTORS_FILE
    raw = bytearray(vectors.read_bytes())
    raw[0] ^= 0xFF
    vectors.write_bytes(bytes(raw))  # an edit: new mtime
    with pytest.raises(ArtifactMismatchError, match="does not match its checksum"):
        open_index(tmp_path / "idx")
    assert hashed == [layout.VECTORS_FILE]
    raw[0] ^= 0xFF
    vectors.write_bytes(bytes(raw))  # restored
    (directory / layout.VERIFIED).unlink()  # a version written before the record
    hashed.clear()
    with open_index(tmp_path / "idx") as version:
        assert sorted(hashed) == sorted(Path(f).name for f in version.manifest["files"])


@pytest.fixture(scope="module")
def clustered_100k():
    """100k clustered synthetic unit vectors, 200 queries near them, and the exact
    top-10 of each query (shared by the index kinds: ~2 s to make)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(200, 128)).astype(np.float32)
    data = centres[rng.integers(0, 200, 100_000)] + 0.6 * rng.normal(size=(100_000, 128))
    data = (data / np.linalg.norm(data, axis=1, keepdims=True)).astype(np.float32)
    queries = data[rng.choice(100_000, 200, replace=False)] + 0.1 * rng.normal(size=(200, 128))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    exact = create_index("flat", 128, len(data))
    exact.add(data)
    _, truth = exact.search(queries, 10)
    return data, queries, truth


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["hnsw", "ivf", "ivf-sq8"])
def test_approximate_indexes_recall_at_10_on_100k_vectors(kind, clustered_100k):
    """recall@10 >= 0.95 against exact search, on 100k clustered synthetic unit vectors."""
    data, queries, truth = clustered_100k
    approximate = create_index(kind, 128, len(data))
    approximate.add(data)
    _, found = approximate.search(queries, 10)
    recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found, strict=True)])
    assert recall >= 0.95, f"{kind} recall@10 {recall:.3f}"


def test_an_add_reads_its_table_twice(tmp_path, model, corpus, monkeypatch):
    """Once for the ids (clashes with the index: refused, or replaced with --upsert)
    and their count, once to ingest; it used to count the records in a third pass."""
    from siamese_search.indexer import build, ingest, transaction

    passes: list[str] = []

    def counted(module, name):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            passes.append(name)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    build_index(tmp_path / "idx", model, corpus, COLUMNS, QUIET)
    for module, name in (
        (build, "iter_table"),
        (ingest, "iter_table"),
        (transaction, "count_records"),
    ):
        counted(module, name)
    report = add_to_index(tmp_path / "idx", model, corpus, COLUMNS, QUIET, upsert=True)
    assert report.added == 8 and report.removed == 8
    assert passes == ["iter_table", "iter_table"]


def test_every_version_of_a_directory_records_one_index_id(tmp_path, trained_model, corpus):
    """What lets a Milvus alias refuse another directory's writes (MilvusWriter.claim):
    adds, deletes and --replace builds keep the id, even over a damaged CURRENT."""
    model, quiet, columns = load_model(trained_model), QUIET, COLUMNS
    first, other = tmp_path / "first", tmp_path / "other"
    build_index(first, model, corpus, columns, quiet)
    build_index(other, model, corpus, columns, quiet)
    add_to_index(first, model, corpus, columns, quiet, upsert=True)
    (first / layout.CURRENT).write_bytes(b"garbage")
    build_index(first, model, corpus, columns, BuildOptions(show_progress=False, replace=True))

    def ids(index_dir):
        return {
            layout.read_manifest(layout.version_dir(index_dir, name))["index_id"]
            for name in layout.list_versions(index_dir)
        }

    assert len(ids(first)) == len(ids(other)) == 1 and ids(first) != ids(other)
    assert len(layout.list_versions(first)) == 3


def test_cli_build_info_and_errors(tmp_path, trained_model, corpus, capsys):
    out = tmp_path / "idx"
    assert (
        index_main(
            [
                "build",
                "--model",
                str(trained_model),
                "--data",
                str(corpus),
                "--out",
                str(out),
                "--label-column",
                "class",
                "--id-column",
                "id",
                "--quiet",
            ]
        )
        == 0
    )
    assert "version 000001: 8 vectors (flat)" in capsys.readouterr().out
    assert index_main(["info", "--index", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 8
    assert (
        index_main(
            [
                "add",
                "--index",
                str(out),
                "--data",
                str(corpus),
                "--label-column",
                "class",
                "--id-column",
                "id",
                "--quiet",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "already in the index" in err and "Traceback" not in err
    assert (
        index_main(
            [
                "build",
                "--model",
                str(trained_model),
                "--data",
                str(corpus),
                "--out",
                str(tmp_path / "other"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "no column 'label'" in capsys.readouterr().err
    assert index_main(["info", "--index", str(tmp_path / "nothing")]) == 2
    assert "no such index directory" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("")  # said only "File exists"
    build = ["build", "--model", str(trained_model), "--data", str(corpus), "--quiet"]
    assert index_main([*build, "--label-column", "class", "--out", str(tmp_path / "a-file")]) == 2
    assert "choose another path" in capsys.readouterr().err


class _Interrupted(Exception):
    """Stands for a Ctrl-C in a write run in this process."""


def _interrupted_after_chunks(chunks: int, write) -> None:
    """Run `write`, interrupted once it has ingested `chunks` chunks."""
    seen = []

    def interrupt(stage: str) -> None:
        if stage == "during-ingest":
            seen.append(stage)
            if len(seen) == chunks:
                raise _Interrupted

    layout.CHECKPOINT_OBSERVERS.append(interrupt)
    try:
        with pytest.raises(_Interrupted):
            write()
    finally:
        layout.CHECKPOINT_OBSERVERS.remove(interrupt)


def test_an_interrupted_add_resumes_after_the_rows_it_merged(
    tmp_path, trained_model, monkeypatch, capsys
):
    """An add whose new segment first takes the base's small segment (60 rows copied
    in, not embedded), interrupted after 3 chunks of 50 of its own 300 rows: the same
    add run again embeds only the 150 others, and every vector is the model's for its
    row's text (the kept rows were read after the copied ones, not from the start)."""
    from siamese_search.indexer import resume

    monkeypatch.setattr(resume, "CHECKPOINT_SECONDS", 0.0)
    model = load_model(trained_model)
    header = ("id", "text", "class")
    base = write_csv(
        tmp_path / "b.csv", [(f"b{i}", f"fix crash {i}", "1") for i in range(60)], header
    )
    more = write_csv(
        tmp_path / "more.csv", [(f"m{i}", f"speed up query {i}", "2") for i in range(300)], header
    )
    index_dir = tmp_path / "index"
    build_index(index_dir, model, base, COLUMNS, QUIET)
    chunks = BuildOptions(show_progress=False, chunk_rows=50)
    _interrupted_after_chunks(3, lambda: add_to_index(index_dir, model, more, COLUMNS, chunks))
    assert "the 150 vectors embedded so far are kept in" in capsys.readouterr().err
    report = add_to_index(index_dir, model, more, COLUMNS, chunks)
    assert report.reused == 150 and report.added == 300
    with open_index(index_dir) as version:
        assert len(version.segments) == 1  # the base's segment was merged in
        texts = [text for rows in version.records().iter_all() for _, _, _, text in rows]
        np.testing.assert_allclose(version.vectors(), model.embed(texts), atol=1e-5)
    assert not list(index_dir.glob(resume.WORKSPACE_PREFIXES["ingest"] + "*"))


def test_a_write_that_fails_before_embedding_leaves_no_workspace(tmp_path, trained_model):
    from siamese_search.indexer import resume

    model = load_model(trained_model)
    header = ("id", "text", "class")
    base = write_csv(tmp_path / "b.csv", [("b0", "fix crash", "1")], header)
    index_dir = tmp_path / "index"
    build_index(index_dir, model, base, COLUMNS, QUIET)
    unlabelled = write_csv(tmp_path / "u.csv", [("u0", "speed up")], ("id", "text"))
    replace = BuildOptions(show_progress=False, replace=True)
    with pytest.raises(DataError, match="no column 'class'"):  # found while ingesting
        build_index(index_dir, model, unlabelled, COLUMNS, replace)
    assert not list(index_dir.glob(resume.WORKSPACE_PREFIXES["ingest"] + "*"))


def test_an_interrupted_first_build_keeps_its_directory_for_the_next_run(
    tmp_path, trained_model, monkeypatch
):
    """A failed job removes the directory it made, unless it kept what it embedded
    there: a Ctrl-C on a first build used to lose all of it."""
    from siamese_search.indexer import resume

    monkeypatch.setattr(resume, "CHECKPOINT_SECONDS", 0.0)
    model = load_model(trained_model)
    rows = [(f"m{i}", f"speed up query {i}", "2") for i in range(200)]
    data = write_csv(tmp_path / "rows.csv", rows, ("id", "text", "class"))
    index_dir = tmp_path / "new-index"
    chunks = BuildOptions(show_progress=False, chunk_rows=50)
    _interrupted_after_chunks(2, lambda: build_index(index_dir, model, data, COLUMNS, chunks))
    assert index_dir.is_dir() and not layout.list_versions(index_dir)
    report = build_index(index_dir, model, data, COLUMNS, chunks)
    assert report.reused == 100 and report.count == 200
