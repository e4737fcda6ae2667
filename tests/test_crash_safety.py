"""A build killed (SIGKILL) at any point leaves the current version intact and readable.

The writer runs in its own process (tests/crash_writer.py) and reports each checkpoint
it passes; the test kills it only once it has reported the point under test, so every
kill provably lands inside the build, not during interpreter start-up.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys

import pytest

from siamese_search.core.model_artifact import load_model
from siamese_search.core.tables import Columns
from siamese_search.indexer import layout
from siamese_search.indexer.build import BuildOptions, build_index
from siamese_search.indexer.store import open_index
from tests.conftest import ROOT, write_csv

pytestmark = pytest.mark.slow

BIG_ROWS = 1000
STAGES = [
    "base-opened",
    "during-ingest",
    "before-finish",
    "before-manifest",
    "after-rename",
    "after-current",
]
INGEST_CHECKPOINTS = BIG_ROWS // 100  # crash_writer ingests in chunks of 100 rows


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    corpus = write_csv(
        root / "corpus.csv", [(f"text number {i} about fixing bugs", "1") for i in range(50)]
    )
    big = write_csv(
        root / "big.csv",
        [(f"another text {i} on performance work", "5") for i in range(BIG_ROWS)],
    )
    return corpus, big


def _index_with_one_version(index_dir, trained_model, corpus):
    build_index(
        index_dir, load_model(trained_model), corpus, Columns(), BuildOptions(show_progress=False)
    )
    _assert_current_is(index_dir, "000001", 50)


def _kill_writer_at(
    trained_model,
    data,
    index_dir,
    stop_at: str,
    engine="local",
    milvus: tuple[str, str] = (),
    checkpoint_seconds: float = 30.0,
) -> list[str]:
    """Run the writer until it reports `stopped ...`, SIGKILL it; return what it reported.

    `milvus`: (URI, alias) to write each version to Milvus too; `checkpoint_seconds`:
    how often it makes what it embedded durable for a next run (indexer.resume)."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "crash_writer.py")]
        + [str(trained_model), str(data), str(index_dir), stop_at, engine, *milvus],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "CHECKPOINT_SECONDS": str(checkpoint_seconds)},
    )
    reported = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            reported.append(line.strip())
            if line.startswith("stopped"):
                break
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert reported and reported[-1].startswith("stopped"), (
        f"the writer ended without reaching {stop_at!r}: {reported}\n{process.stderr.read()}"
    )
    assert process.returncode == -signal.SIGKILL
    return reported


def _assert_current_is(index_dir, name, count):
    assert layout.current_version(index_dir) == name
    version = open_index(index_dir)  # verifies every file against its checksum
    assert version.count == count
    assert len(version.search(version.vectors()[:1], k=3)[0]) == 3
    version.close()


@pytest.mark.parametrize("stage", STAGES)
def test_killed_build_keeps_current_version(tmp_path, trained_model, corpora, stage):
    corpus, big = corpora
    index_dir = tmp_path / "idx"
    _index_with_one_version(index_dir, trained_model, corpus)
    reported = _kill_writer_at(trained_model, big, index_dir, stage)
    assert reported[-1] == f"stopped {stage}"
    if stage == "after-current":  # the switch happened: the new version is complete
        _assert_current_is(index_dir, "000002", BIG_ROWS)
    else:
        _assert_current_is(index_dir, "000001", 50)
    # the next writer sweeps the debris and publishes normally
    again = BuildOptions(show_progress=False, replace=True)
    build_index(index_dir, load_model(trained_model), corpus, Columns(), again)
    assert not [p for p in index_dir.iterdir() if p.name.startswith(".tmp-")]
    version = open_index(index_dir)
    assert version.count == 50
    version.close()


def test_killed_at_random_checkpoints(tmp_path, trained_model, corpora):
    """Kill at seeded random points among every checkpoint a build passes."""
    corpus, big = corpora
    index_dir = tmp_path / "idx"
    _index_with_one_version(index_dir, trained_model, corpus)
    total = INGEST_CHECKPOINTS + len(STAGES) - 1  # every chunk, then the four later stages
    expected_count = 50
    points = sorted(random.Random(0).sample(range(1, total), 3)) + [total]  # last: published
    for point in points:
        before = layout.current_version(index_dir)
        reported = _kill_writer_at(trained_model, big, index_dir, str(point))
        assert len(reported) == point + 1  # `reached` lines, then `stopped`
        current = layout.current_version(index_dir)
        if reported[-1] == "stopped after-current":
            assert current != before
            expected_count = BIG_ROWS
        else:
            assert current == before
        version = open_index(index_dir)
        assert version.count == expected_count
        version.close()
    assert expected_count == BIG_ROWS  # the last kill came after the switch


@pytest.mark.parametrize(
    "stop_at, reused",
    [("6", 500), ("before-finish", BIG_ROWS), ("after-current", BIG_ROWS)],
    ids=["mid-ingest", "embedded", "published"],
)
def test_a_killed_build_resumes_with_what_it_embedded(
    tmp_path, trained_model, corpora, stop_at, reused
):
    """Killed after 5 chunks of 100 (checkpointing after each), once everything was
    embedded, or once published but before its workspace went: the same build run
    again embeds only what was not kept, and publishes a fresh build's vectors; the
    version a killed run published is not touched by the next run's taking its file."""
    import numpy as np

    from siamese_search.core.tables import read_table
    from siamese_search.indexer import resume

    corpus, big = corpora
    index_dir = tmp_path / "idx"
    _index_with_one_version(index_dir, trained_model, corpus)
    _kill_writer_at(trained_model, big, index_dir, stop_at, checkpoint_seconds=0.0)
    published = layout.current_version(index_dir)
    model = load_model(trained_model)
    again = BuildOptions(show_progress=False, replace=True)
    report = build_index(index_dir, model, big, Columns(), again)
    assert report.reused == reused and report.count == BIG_ROWS
    with open_index(index_dir) as version:
        texts = read_table(big, Columns()).texts
        np.testing.assert_allclose(version.vectors(), model.embed(texts), atol=1e-5)
    with open_index(layout.version_dir(index_dir, published)) as before:  # checksums
        assert before.count == (BIG_ROWS if stop_at == "after-current" else 50)
    assert not list(index_dir.glob(resume.WORKSPACE_PREFIXES["ingest"] + "*"))
