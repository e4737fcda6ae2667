"""Encoding processes (server.encode_processes): real worker processes running the
real model; the same vectors as in-process encoding, a killed worker replaced, a model
whose files changed refused, and no worker outliving its server."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from siamese_search.core.model_artifact import load_model
from siamese_search.server.encode_processes import EncoderProcesses

TEXTS = [f"fix the parser crash number {i}" for i in range(40)]


@pytest.fixture(scope="module")
def model(trained_model):
    return load_model(trained_model, threads=1)


@pytest.fixture
def encoders():
    pool = EncoderProcesses(2, threads=1)
    yield pool
    pool.close()


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_give_the_vectors_of_the_server_process(model, encoders):
    """Bit-identical to model.embed of the same batch, each of several concurrent callers
    getting its own. Identity holds batch for batch: the vectors of a text in a batch of
    40 and in one of 10 may differ in the last bits (BLAS and the compiled encoder block
    their work by batch shape; seen on an AMD EPYC with numpy, max 1.6e-7), so the
    contract is the same batch, the same bits."""
    expected = np.concatenate([model.embed(TEXTS[i * 10 : (i + 1) * 10]) for i in range(4)])
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def call(i: int) -> None:
        try:
            results[i] = encoders.embed(model, TEXTS[i * 10 : (i + 1) * 10])
        except BaseException as error:  # reaches the test below
            errors.append(error)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for i in range(4):
        np.testing.assert_array_equal(results[i], expected[i * 10 : (i + 1) * 10])


@pytest.mark.parametrize("all_at_once", [False, True], ids=["one-by-one", "all-at-once"])
def test_warm_loads_the_model_in_every_worker(trained_model, tmp_path, all_at_once):
    """After warm() no worker reads the model's files again: with them moved away,
    every worker still embeds (one that was not warmed would fail to load them)."""
    import shutil

    copy = shutil.copytree(trained_model, tmp_path / "model")
    model = load_model(copy, threads=1)
    pool = EncoderProcesses(2, threads=1)
    try:
        pool.warm(model, all_at_once)
        copy.rename(tmp_path / "moved")
        for worker in pool.workers:
            vectors = worker.embed(str(copy), model.fingerprint, TEXTS[:2])
            np.testing.assert_array_equal(vectors, model.embed(TEXTS[:2]))
    finally:
        pool.close()


@pytest.mark.slow  # kills and restarts an encoding process
def test_a_killed_worker_is_replaced_and_the_batch_retried(model, encoders):
    encoders.warm(model)
    before = encoders.pids
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    np.testing.assert_array_equal(encoders.embed(model, TEXTS[:3]), model.embed(TEXTS[:3]))
    np.testing.assert_array_equal(encoders.embed(model, TEXTS[3:6]), model.embed(TEXTS[3:6]))
    after = encoders.pids
    assert set(after).isdisjoint(before) and all(_alive(pid) for pid in after)


def test_a_model_whose_files_changed_is_refused(model, encoders):
    """The worker loads the directory itself: if it no longer holds the model the
    server loaded, the batch fails with the reason instead of using other vectors."""
    changed = dataclasses.replace(model, manifest={**model.manifest, "model_fingerprint": "x"})
    with pytest.raises(RuntimeError, match="changed after the server loaded them"):
        encoders.embed(changed, TEXTS[:2])
    np.testing.assert_array_equal(encoders.embed(model, TEXTS[:2]), model.embed(TEXTS[:2]))


def test_close_ends_the_workers(model, encoders):
    encoders.warm(model)
    pids = encoders.pids
    encoders.close()
    assert not any(_alive(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="stopping"):
        encoders.embed(model, TEXTS[:1])


def test_workers_do_not_outlive_a_killed_server(model):
    """SIGKILL gives the server no chance to stop them: they notice its socket close."""
    script = (
        "import sys, time\n"
        "from siamese_search.core.model_artifact import load_model\n"
        "from siamese_search.server.encode_processes import EncoderProcesses\n"
        "pool = EncoderProcesses(2, threads=1)\n"
        f"pool.warm(load_model({str(model.directory)!r}, threads=1))\n"
        "print(*pool.pids, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids)
