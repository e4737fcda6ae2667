"""A job's workspace (indexer.resume) on its own: what a stopped run's files become,
and what is dropped when a harvest was itself cut short. The jobs end to end are in
test_learning_loop.py (reembed) and test_indexer.py (build, add)."""

from __future__ import annotations

import json

import numpy as np

from siamese_search.core.atomic import write_json_atomic
from siamese_search.indexer import resume

DIM = 4


def _stopped_run(index_dir, texts, vectors, first: int, checkpointed: int):
    """A workspace as a run stopped after writing `texts` (after `first` rows that were
    not its own) left it, its last checkpoint at `checkpointed` of its rows."""
    directory = index_dir / resume.workspace_name("ingest", "model-a")
    directory.mkdir()
    np.asarray(vectors, np.float32).tofile(directory / resume.RUN_VECTORS)
    resume.text_keys(texts).tofile(directory / resume.KEYS_FILE)
    progress = {"dim": DIM, "first": first, "rows": checkpointed}
    write_json_atomic(directory / resume.PROGRESS_FILE, progress)
    return directory


def _open(index_dir, fingerprint="model-a"):
    return resume.open_workspace(index_dir, "ingest", fingerprint, DIM, "siamese-index build")


def test_only_the_checkpointed_rows_of_a_stopped_run_are_kept(tmp_path):
    """The run's segment began with 2 rows copied from the base (not its keys'), then
    wrote 5 of its own, 3 of them checkpointed."""
    vectors = np.arange(7 * DIM, dtype=np.float32).reshape(7, DIM)
    texts = ["a", "b", "c", "d", "e"]
    directory = _stopped_run(tmp_path, texts, vectors, first=2, checkpointed=3)
    workspace = _open(tmp_path)
    try:
        found, got = workspace.cache.lookup(resume.text_keys(["c", "x", "a", "d"]))
        assert found.tolist() == [True, False, True, False]  # d came after the checkpoint
        np.testing.assert_array_equal(got, vectors[[2 + 2, 2 + 0]])
        assert sorted(p.name for p in directory.iterdir()) == [resume.CACHE_DIR, resume.KEYS_FILE]
        # the vectors file is never cut (it may be a published version's too)
        assert (directory / resume.CACHE_DIR / "part-0001.f32").stat().st_size == 7 * DIM * 4
    finally:
        workspace.close()
    _open(tmp_path, "model-b").close()  # another model's job removes it
    assert [p.name for p in tmp_path.iterdir()] == [resume.workspace_name("ingest", "model-b")]


def test_a_part_a_cut_short_harvest_left_is_dropped(tmp_path):
    directory = _stopped_run(tmp_path, ["a", "b"], np.ones((2, DIM)), first=0, checkpointed=2)
    cache = directory / resume.CACHE_DIR
    cache.mkdir()
    np.ones((3, DIM), np.float32).tofile(cache / "part-0001.f32")  # its keys never came
    write_json_atomic(cache / "part-0001.json", {"first": 0})
    resume.text_keys(["z"]).tofile(cache / "part-0007.keys")  # its vectors never came
    write_json_atomic(cache / "part-0007.json", {"first": 0})
    (cache / ".tmp-part-0009.jsonx1y2").write_text("{")  # a write of its .json cut short
    workspace = _open(tmp_path)
    try:
        assert len(workspace.cache) == 2
        kept = [".tmp-part-0009.jsonx1y2", "part-0008.f32", "part-0008.json", "part-0008.keys"]
        assert sorted(p.name for p in cache.iterdir()) == kept
    finally:
        workspace.close()


def _digested_run(index_dir, texts, vectors):
    """A stopped run whose progress records its rows' digests, as a checkpoint does."""
    directory = _stopped_run(index_dir, texts, vectors, first=0, checkpointed=len(texts))
    progress = json.loads((directory / resume.PROGRESS_FILE).read_text())
    keys = directory / resume.KEYS_FILE
    progress.update(resume._digests_of(directory / resume.RUN_VECTORS, keys, 0, len(texts), DIM))
    write_json_atomic(directory / resume.PROGRESS_FILE, progress)
    return directory


def _overwrite_a_vector(path, row: int) -> None:
    """Change one row's bytes in place: same size, same name."""
    with open(path, "r+b") as handle:
        handle.seek(row * DIM * 4)
        handle.write(np.full(DIM, 7.0, np.float32).tobytes())


def test_a_stopped_runs_vectors_changed_on_disk_are_embedded_again(tmp_path, capsys):
    """Kept vectors were trusted by their files' sizes: a vector changed on disk after
    the run stopped went into the next index unseen. Their digests, recorded at each
    checkpoint, are checked before any is used."""
    texts, vectors = ["a", "b", "c"], np.arange(3 * DIM, dtype=np.float32).reshape(3, DIM)
    directory = _digested_run(tmp_path, texts, vectors)
    _overwrite_a_vector(directory / resume.RUN_VECTORS, 1)
    workspace = _open(tmp_path)
    try:
        assert len(workspace.cache) == 0
        assert (
            "changed on disk since it stopped: they are embedded again" in capsys.readouterr().err
        )
    finally:
        workspace.close()


def test_a_cache_part_changed_on_disk_is_dropped_and_an_intact_one_kept(tmp_path, capsys):
    texts, vectors = ["a", "b", "c"], np.arange(3 * DIM, dtype=np.float32).reshape(3, DIM)
    directory = _digested_run(tmp_path, texts, vectors)
    _open(tmp_path).close()  # harvested into part-0001, its digests with it
    workspace = _open(tmp_path)  # an intact part is verified and used
    try:
        found, got = workspace.cache.lookup(resume.text_keys(["c"]))
        assert found.tolist() == [True] and got.tolist() == [vectors[2].tolist()]
    finally:
        workspace.close()
    assert not capsys.readouterr().err
    _overwrite_a_vector(directory / resume.CACHE_DIR / "part-0001.f32", 2)
    workspace = _open(tmp_path)
    try:
        assert len(workspace.cache) == 0
        assert "changed on disk" in capsys.readouterr().err
        assert not list((directory / resume.CACHE_DIR).glob("part-0001*"))
    finally:
        workspace.close()
