"""Versions made of segments (issue 23): a write links its base's segments and adds one
of its own; search over the segments is the exact top-k of the live rows; deletions,
replacements and label drops hold across segments; segments stay bounded; `compact`
rewrites them as one; a format-1 version is read and written onto."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from siamese_search.core.model_artifact import load_model
from siamese_search.core.tables import Columns
from siamese_search.indexer import layout, segments, store, version_writer
from siamese_search.indexer.build import (
    BuildOptions,
    add_to_index,
    apply_changes,
    build_index,
    delete_from_index,
)
from siamese_search.indexer.changes import Change
from siamese_search.indexer.cli import main as index_main
from siamese_search.indexer.compaction import compact_index
from siamese_search.indexer.segments import MAX_SEGMENTS, segments_to_merge
from siamese_search.indexer.store import open_index
from siamese_search.indexer.versions import rollback
from tests.conftest import write_csv

QUIET = BuildOptions(show_progress=False)
COLUMNS = Columns(text="text", label="label", id="id")
LABELS = ("1", "2", "3")


@pytest.fixture(scope="module")
def model(trained_model):
    return load_model(trained_model)


def _rows(prefix: str, n: int) -> list[tuple[str, str, str]]:
    return [
        (f"{prefix}{i}", f"{prefix} fix the parser bug number {i} in module {i % 7}", LABELS[i % 3])
        for i in range(n)
    ]


def _table(path: Path, rows) -> Path:
    return write_csv(path, rows, header=("id", "text", "label"))


def _segment_names(index_dir: Path) -> list[str]:
    with open_index(index_dir) as version:
        return [segment.name for segment in version.segments]


def _brute_force(version, queries: np.ndarray, k: int, labels=()) -> list[list[tuple[str, float]]]:
    """The exact top-k by inner product over every live row, from the records alone."""
    rows = [row for batch in version.records().iter_all() for row in batch]
    vectors = version.vectors()
    assert len(rows) == len(vectors) == version.count
    scores = queries @ vectors.T
    answers = []
    for row_scores in scores:
        order = np.argsort(-row_scores, kind="stable")
        chosen = [i for i in order if not labels or rows[i][2] in labels][:k]
        answers.append([(rows[i][1], float(row_scores[i])) for i in chosen])
    return answers


def _search(version, queries: np.ndarray, k: int, labels=()) -> list[list[tuple[str, float]]]:
    return [[(h.id, h.score) for h in hits] for hits in version.search(queries, k, labels)]


def _same_answers(found, expected) -> None:
    for got, want in zip(found, expected, strict=True):
        assert [i for i, _ in got] == [i for i, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-5)


def test_an_add_links_its_base_and_hashes_only_what_it_writes(tmp_path, model, monkeypatch):
    index_dir = tmp_path / "idx"
    build_index(index_dir, model, _table(tmp_path / "a.csv", _rows("a", 30)), COLUMNS, QUIET)
    opened: list[str] = []
    written: list[str] = []
    real = store.sha256_files
    monkeypatch.setattr(store, "sha256_files", lambda p: opened.extend(map(str, p)) or real(p))
    monkeypatch.setattr(
        version_writer, "sha256_files", lambda p: written.extend(map(str, p)) or real(p)
    )
    add_to_index(index_dir, model, _table(tmp_path / "b.csv", _rows("b", 5)), COLUMNS, QUIET)

    assert opened == []  # the base's files were verified when written, unchanged since
    assert {Path(p).parent.name for p in written} == {"000002"}  # only the new segment
    first = layout.version_dir(index_dir, "000001") / "segments" / "000001"
    linked = layout.version_dir(index_dir, "000002") / "segments" / "000001"
    for name in segments.DATA_FILES:
        assert os.path.samefile(first / name, linked / name)  # a link, not a copy
    with open_index(index_dir) as version:
        assert [(s.name, s.rows, s.entry.kind) for s in version.segments] == [
            ("000001", 30, "flat"),
            ("000002", 5, "flat"),
        ]
        assert version.count == 35


def test_search_over_segments_is_the_exact_top_k_of_the_live_rows(tmp_path, model):
    """Rows spread over segments, some deleted, some replaced (their old row in an old
    segment): every search, with and without label filters and min_score, equals brute
    force over the live rows, and so does the compacted version's."""
    index_dir = tmp_path / "idx"
    build_index(index_dir, model, _table(tmp_path / "a.csv", _rows("a", 40)), COLUMNS, QUIET)
    add_to_index(index_dir, model, _table(tmp_path / "b.csv", _rows("b", 3)), COLUMNS, QUIET)
    delete_from_index(index_dir, model, ["a3", "b1", "a17"], QUIET)
    replaced = [("a5", "the cache is warmed before the first request", "2")]
    add_to_index(
        index_dir, model, _table(tmp_path / "c.csv", replaced), COLUMNS, QUIET, upsert=True
    )
    assert len(_segment_names(index_dir)) > 1
    queries = model.embed(["parser bug in module 3", "warm the cache", "number 17"])
    with open_index(index_dir) as version:
        assert version.count == 40 + 3 - 3
        ids = {row[1] for batch in version.records().iter_all() for row in batch}
        assert not ids & {"a3", "b1", "a17"} and "a5" in ids
        assert version.records().positions_of(["a5", "a3"]).keys() == {"a5"}
        _same_answers(_search(version, queries, 10), _brute_force(version, queries, 10))
        _same_answers(_search(version, queries, 5, ["2"]), _brute_force(version, queries, 5, ["2"]))
        top = version.search(queries[1:2], 1)[0][0]
        assert (top.id, top.text) == ("a5", replaced[0][1])  # the new row, not the old one
        floor = top.score - 0.05
        assert all(h.score >= floor for h in version.search(queries, 40, min_score=floor)[1])
        before = _search(version, queries, 10)

    report = compact_index(index_dir, model, QUIET)
    assert report.count == 40
    with open_index(index_dir) as version:
        assert len(version.segments) == 1 and version.segments[0].deleted is None
        _same_answers(_search(version, queries, 10), before)
    again = compact_index(index_dir, model, QUIET)
    assert again.version == report.version  # one segment already: nothing to write


def test_a_dropped_label_leaves_every_segment(tmp_path, model):
    index_dir = tmp_path / "idx"
    build_index(index_dir, model, _table(tmp_path / "a.csv", _rows("a", 12)), COLUMNS, QUIET)
    add_to_index(index_dir, model, _table(tmp_path / "b.csv", _rows("b", 6)), COLUMNS, QUIET)
    apply_changes(index_dir, model, [Change("delete-label", label="2")], QUIET)
    with open_index(index_dir) as version:
        assert version.label_names == ["1", "3"]
        assert version.manifest["labels"]["counts"] == {"1": 6, "3": 6}
        assert version.count == 12
        hits = version.search(model.embed(["parser bug"]), 20)[0]
        assert len(hits) == 12 and {h.label for h in hits} == {"1", "3"}
        with pytest.raises(store.UnknownLabelError):
            version.search(model.embed(["parser bug"]), 5, ["2"])


def test_segments_merge_by_size_and_stay_bounded(tmp_path, model):
    # the policy alone: a write absorbs the newest segments no bigger than itself
    assert segments_to_merge([100_000], 10) == 0
    assert segments_to_merge([100_000, 10], 10) == 1
    assert segments_to_merge([100_000, 40, 20, 10], 10) == 3
    assert segments_to_merge([100_000, 40], 0) == 0  # a delete merges nothing
    many = [1000 * (MAX_SEGMENTS - i) for i in range(MAX_SEGMENTS)]
    assert segments_to_merge(many, 1) == 1  # one more segment would be too many

    # and in writes: many small adds to a big first segment
    index_dir = tmp_path / "idx"
    build_index(index_dir, model, _table(tmp_path / "a.csv", _rows("a", 60)), COLUMNS, QUIET)
    for i in range(12):
        table = _table(tmp_path / f"n{i}.csv", _rows(f"n{i}-", 2))
        add_to_index(
            index_dir, model, table, COLUMNS, BuildOptions(show_progress=False, keep_versions=2)
        )
        names = _segment_names(index_dir)
        assert names[0] == "000001"  # the big segment is never rewritten by small adds
        assert len(names) <= MAX_SEGMENTS
    with open_index(index_dir) as version:
        sizes = [segment.rows for segment in version.segments]
        assert sizes == sorted(sizes, reverse=True)  # size tiers, largest first
        assert version.count == 60 + 24
    assert layout.list_versions(index_dir) == ["000012", "000013"]  # pruned: links kept


def test_a_small_segment_of_an_hnsw_index_is_exact_and_search_params_carry(tmp_path, model):
    index_dir = tmp_path / "idx"
    hnsw = BuildOptions(show_progress=False, index_type="hnsw", index_params={"M": 8})
    build_index(index_dir, model, _table(tmp_path / "a.csv", _rows("a", 30)), COLUMNS, hnsw)
    wider = BuildOptions(show_progress=False, index_params={"ef_search": 123})
    add_to_index(index_dir, model, _table(tmp_path / "b.csv", _rows("b", 2)), COLUMNS, wider)
    with open_index(index_dir) as version:
        kinds = [(s.entry.kind, s.entry.params.get("ef_search")) for s in version.segments]
        assert kinds == [("hnsw", 123), ("flat", None)]
        assert version.kind == "hnsw" and version.manifest["index"]["params"]["M"] == 8


def _as_format_1(index_dir: Path) -> None:
    """Rewrite a one-segment version the way versions were written before segments."""
    directory = layout.version_dir(index_dir, "000001")
    manifest = json.loads((directory / layout.MANIFEST).read_text())
    segment = directory / "segments" / "000001"
    for name in os.listdir(segment):
        shutil.move(segment / name, directory / name)
    shutil.rmtree(directory / "segments")
    manifest["format_version"] = 1
    del manifest["segments"]
    manifest["files"] = {Path(k).name: v for k, v in manifest["files"].items()}
    layout.record_verified(directory, manifest["files"])
    layout.write_manifest(directory, manifest)


@pytest.mark.slow  # rewrites a version in the old format, then writes and compacts it
def test_a_version_written_before_segments_is_read_and_written_onto(tmp_path, model, capsys):
    index_dir = tmp_path / "idx"
    build_index(index_dir, model, _table(tmp_path / "a.csv", _rows("a", 20)), COLUMNS, QUIET)
    queries = model.embed(["parser bug in module 2"])
    with open_index(index_dir) as version:
        before = _search(version, queries, 5)
    _as_format_1(index_dir)
    with open_index(index_dir) as version:
        assert version.manifest["format_version"] == 1 and len(version.segments) == 1
        _same_answers(_search(version, queries, 5), before)
    assert index_main(["delete", "--index", str(index_dir), "--ids", "a0", "--quiet"]) == 0
    with open_index(index_dir) as version:
        assert version.manifest["format_version"] == store.FORMAT_VERSION
        assert [(s.name, s.entry.deleted) for s in version.segments] == [("000001", 1)]
        _same_answers(_search(version, queries, 5), _brute_force(version, queries, 5))
    assert index_main(["compact", "--index", str(index_dir), "--quiet"]) == 0
    assert "version 000003: 19 vectors (flat)" in capsys.readouterr().out


def test_a_reload_after_a_write_reads_only_the_new_segment(tmp_path, model):
    """A server's source opens each new version through one SegmentCache: the segments
    it already holds are shared (not read again), and stay open until the last version
    using them is closed, even once their first version's directory is pruned."""
    index_dir = tmp_path / "idx"
    build_index(index_dir, model, _table(tmp_path / "a.csv", _rows("a", 30)), COLUMNS, QUIET)
    source = store.DirectorySource(index_dir)
    first = source.open_current()
    one = BuildOptions(show_progress=False, keep_versions=1)
    add_to_index(index_dir, model, _table(tmp_path / "b.csv", _rows("b", 4)), COLUMNS, one)
    second = source.open_current()
    assert second.segments[0]._files is first.segments[0]._files  # shared, not re-read
    assert second.segments[1]._files is not None and len(source.segments) == 2
    first.close()
    assert layout.prune(index_dir, 1) == ["000001"]  # no reader holds it now
    queries = model.embed(["parser bug in module 4"])
    _same_answers(_search(second, queries, 8), _brute_force(second, queries, 8))

    wider = BuildOptions(show_progress=False, keep_versions=1, index_params={"ef_search": 7})
    delete_from_index(index_dir, model, ["b0"], wider)  # other search params: not shared
    third = source.open_current()
    assert third.segments[0]._files is second.segments[0]._files  # flat: no ef_search
    second.close()
    third.close()
    assert len(source.segments) == 0  # closed with the last version using them


def _segmented(tmp_path, model) -> Path:
    """An index of three segments, some rows deleted."""
    index_dir = tmp_path / "idx"
    build_index(index_dir, model, _table(tmp_path / "a.csv", _rows("a", 40)), COLUMNS, QUIET)
    add_to_index(index_dir, model, _table(tmp_path / "b.csv", _rows("b", 6)), COLUMNS, QUIET)
    add_to_index(index_dir, model, _table(tmp_path / "c.csv", _rows("c", 2)), COLUMNS, QUIET)
    delete_from_index(index_dir, model, ["a1", "b2"], QUIET)
    assert len(_segment_names(index_dir)) == 3
    return index_dir


def test_writes_made_while_compacting_are_kept(tmp_path, model):
    """The merge runs outside the writer lock: a write published meanwhile (rows
    added, rows deleted from segments being merged) is in the compacted version."""
    index_dir = _segmented(tmp_path, model)
    meanwhile = []

    def write_meanwhile(stage: str) -> None:
        if stage == "compact-merged" and not meanwhile:
            meanwhile.append(stage)
            table = _table(tmp_path / "d.csv", _rows("d", 3))
            add_to_index(
                index_dir, model, table, COLUMNS, BuildOptions(show_progress=False, wait_seconds=0)
            )
            delete_from_index(index_dir, model, ["a7", "c0"], QUIET)

    layout.CHECKPOINT_OBSERVERS.append(write_meanwhile)
    try:
        report = compact_index(index_dir, model, QUIET)
    finally:
        layout.CHECKPOINT_OBSERVERS.remove(write_meanwhile)
    assert meanwhile and report.count == 40 + 6 + 2 + 3 - 4
    queries = model.embed(["parser bug in module 5", "number 7"])
    with open_index(index_dir) as version:
        assert [(s.name, s.entry.deleted) for s in version.segments] == [
            ("c000004", 2),  # the snapshot (version 4) merged; a7 and c0 deleted since
            ("000005", 0),  # d0-d2, written while compacting
        ]
        ids = {row[1] for batch in version.records().iter_all() for row in batch}
        assert {"d0", "d1", "d2"} <= ids and not ids & {"a1", "b2", "a7", "c0"}
        _same_answers(_search(version, queries, 10), _brute_force(version, queries, 10))
    assert not [p for p in index_dir.iterdir() if p.name.startswith(layout.COMPACT_PREFIX)]


def test_a_compaction_overtaken_by_a_rollback_publishes_nothing(tmp_path, model):
    index_dir = _segmented(tmp_path, model)

    def roll_back_meanwhile(stage: str) -> None:
        if stage == "compact-merged":
            rollback(index_dir, to="000002")

    layout.CHECKPOINT_OBSERVERS.append(roll_back_meanwhile)
    try:
        with pytest.raises(store.UserError, match="changed while compacting.*compact again"):
            compact_index(index_dir, model, QUIET)
    finally:
        layout.CHECKPOINT_OBSERVERS.remove(roll_back_meanwhile)
    assert layout.current_version(index_dir) == "000002"  # the rollback's, untouched
    assert not [p for p in index_dir.iterdir() if p.name.startswith(layout.COMPACT_PREFIX)]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["compact-merging", "compact-merged", "before-manifest"])
def test_a_killed_compaction_leaves_a_valid_current_version(tmp_path, model, trained_model, stage):
    """Killed outside the writer lock (merging, merged) or inside it (publishing; the
    later checkpoints of a publish are every write's: test_crash_safety.py)."""
    from tests.test_crash_safety import _kill_writer_at

    index_dir = _segmented(tmp_path, model)
    queries = model.embed(["parser bug in module 5"])
    with open_index(index_dir) as version:
        before = _search(version, queries, 10)
    reported = _kill_writer_at(trained_model, "compact", index_dir, stage)
    assert reported[-1] == f"stopped {stage}"
    assert layout.current_version(index_dir) == "000004"
    with open_index(index_dir) as version:  # verifies every file
        assert len(version.segments) == 3 and version.count == 46
        _same_answers(_search(version, queries, 10), before)
    if stage.startswith("compact-"):  # the killed merge's work is left ...
        assert [p for p in index_dir.iterdir() if p.name.startswith(layout.COMPACT_PREFIX)]
    compact_index(index_dir, model, QUIET)  # ... for the next compaction to remove
    assert not [p for p in index_dir.iterdir() if p.name.startswith(layout.COMPACT_PREFIX)]
    with open_index(index_dir) as version:
        assert len(version.segments) == 1
        _same_answers(_search(version, queries, 10), before)
