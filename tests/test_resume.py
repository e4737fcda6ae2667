"""The re-embedding job's workspace (indexer.resume) on its own: what a stopped run's
files become, and what is dropped when a harvest was itself cut short. The job's
behaviour end to end is in test_learning_loop.py."""

from __future__ import annotations

import numpy as np

from siamese_search.core.atomic import write_json_atomic
from siamese_search.indexer import resume

DIM = 4


def _stopped_run(index_dir, texts, vectors, checkpointed: int):
    """A workspace as a run stopped after writing `texts` left it, its last checkpoint
    at `checkpointed` rows."""
    directory = index_dir / resume.workspace_name("model-a")
    segment = directory / "segments" / "c000001"
    segment.mkdir(parents=True)
    np.asarray(vectors, np.float32).tofile(segment / "vectors.f32")
    resume.text_keys(texts).tofile(directory / resume.KEYS_FILE)
    progress = {"dim": DIM, "rows": checkpointed, "vectors": "segments/c000001/vectors.f32"}
    write_json_atomic(directory / resume.PROGRESS_FILE, progress)
    return directory


def test_only_the_checkpointed_rows_of_a_stopped_run_are_kept(tmp_path):
    vectors = np.arange(5 * DIM, dtype=np.float32).reshape(5, DIM)
    texts = ["a", "b", "c", "d", "e"]
    directory = _stopped_run(tmp_path, texts, vectors, checkpointed=3)
    workspace = resume.open_workspace(tmp_path, "model-a", DIM)
    try:
        found, got = workspace.cache.lookup(resume.text_keys(["c", "x", "a", "d"]))
        assert found.tolist() == [True, False, True, False]  # d came after the checkpoint
        np.testing.assert_array_equal(got, vectors[[2, 0]])
        assert sorted(p.name for p in directory.iterdir()) == [resume.CACHE_DIR, resume.KEYS_FILE]
    finally:
        workspace.close()
    # another model's job removes it
    resume.open_workspace(tmp_path, "model-b", DIM).close()
    assert [p.name for p in tmp_path.iterdir()] == [resume.workspace_name("model-b")]


def test_a_part_a_cut_short_harvest_left_is_dropped(tmp_path):
    directory = _stopped_run(tmp_path, ["a", "b"], np.ones((2, DIM)), checkpointed=2)
    cache = directory / resume.CACHE_DIR
    cache.mkdir()
    np.ones((3, DIM), np.float32).tofile(cache / "part-0001.f32")  # its keys never came
    resume.text_keys(["z"]).tofile(cache / "part-0007.keys")  # its vectors never came
    workspace = resume.open_workspace(tmp_path, "model-a", DIM)
    try:
        assert len(workspace.cache) == 2
        assert sorted(p.name for p in cache.iterdir()) == ["part-0008.f32", "part-0008.keys"]
    finally:
        workspace.close()
