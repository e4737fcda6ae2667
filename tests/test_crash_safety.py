"""A build killed (SIGKILL) at any point leaves the current version intact and readable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from indexer import layout
from indexer.build import BuildOptions, build_index
from indexer.store import open_index
from tests.conftest import ROOT, write_csv
from trainer.data import Columns
from trainer.model_artifact import load_model


@pytest.fixture(scope="module")
def index_with_one_version(tmp_path_factory, trained_model):
    root = tmp_path_factory.mktemp("crash")
    corpus = write_csv(
        root / "corpus.csv", [(f"text number {i} about fixing bugs", "1") for i in range(50)]
    )
    big = write_csv(
        root / "big.csv", [(f"another text {i} on performance work", "5") for i in range(3000)]
    )
    return root, corpus, big


def _build_command(model, data, out):
    return [
        sys.executable,
        "-m",
        "indexer.cli",
        "build",
        "--model",
        str(model),
        "--data",
        str(data),
        "--out",
        str(out),
        "--quiet",
    ]


def _assert_current_is(index_dir, name, count):
    assert layout.current_version(index_dir) == name
    version = open_index(index_dir)  # verifies every file against its checksum
    assert version.count == count
    assert len(version.search(version.vectors()[:1], k=3)[0]) == 3
    version.close()


@pytest.mark.parametrize(
    "stage", ["during-ingest", "before-finish", "before-manifest", "after-rename", "after-current"]
)
def test_killed_build_keeps_current_version(tmp_path, trained_model, index_with_one_version, stage):
    _, corpus, big = index_with_one_version
    index_dir = tmp_path / "idx"
    build_index(
        index_dir, load_model(trained_model), corpus, Columns(), BuildOptions(show_progress=False)
    )
    _assert_current_is(index_dir, "000001", 50)
    env = {**os.environ, "SIAMESE_INDEX_CRASH_AT": stage}
    result = subprocess.run(
        _build_command(trained_model, big, index_dir),
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == -signal.SIGKILL
    if stage == "after-current":  # the switch happened: the new version is complete
        _assert_current_is(index_dir, "000002", 3000)
    else:
        _assert_current_is(index_dir, "000001", 50)
    # the next writer sweeps the debris and publishes normally
    build_index(
        index_dir, load_model(trained_model), corpus, Columns(), BuildOptions(show_progress=False)
    )
    assert not [p for p in index_dir.iterdir() if p.name.startswith(".tmp-")]
    assert open_index(index_dir).count == 50


def test_killed_at_random_moments(tmp_path, trained_model, index_with_one_version):
    _, corpus, big = index_with_one_version
    index_dir = tmp_path / "idx"
    build_index(
        index_dir, load_model(trained_model), corpus, Columns(), BuildOptions(show_progress=False)
    )
    for delay in (0.3, 0.8, 1.5):
        process = subprocess.Popen(
            _build_command(trained_model, big, index_dir),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        current = layout.current_version(index_dir)
        version = open_index(index_dir)
        assert version.count == (50 if current == "000001" else 3000)
        version.close()
