"""Shared fixtures: the bundled sample data and one small, seeded, really trained model."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("SIAMESE_THREADS", "2")
# The suite runs the numpy reference encoder (every process it starts inherits this):
# the default runtime adds ~2 s to each model load, and ~60 server and worker starts
# made the suite 6 minutes longer. tests/test_encoder_runtime.py runs the default
# runtime on every path (encoders, fine-tuned weights, encoding processes, the index
# CLI, a server, Ray actors).
os.environ.setdefault("SIAMESE_ENCODER_RUNTIME", "numpy")
# what `auto` measured, and pinned runtimes' fidelity checks, are remembered per machine
# (core/encoders/runtime_choice.py): the suite starts with none, in a folder of its own
os.environ.setdefault("SIAMESE_CACHE_DIR", tempfile.mkdtemp(prefix="siamese-test-cache-"))
ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "commit-messages"


@pytest.fixture(autouse=True)
def _native_threads_restored():
    """Each test starts with this process's native thread pools at SIAMESE_THREADS.

    A SearchServer limits them for good in the thread that starts it (BLAS for the
    whole process, FAISS's OpenMP for that thread), as siamese-serve wants: after the
    first server a test started here, every later test's FAISS work in the main
    thread ran on one thread (the 100k-vector IVF builds took 18-21 s, not 7-8 s).
    """
    yield
    from siamese_search.core.native_threads import limit_native_threads

    limit_native_threads(int(os.environ["SIAMESE_THREADS"]))


@pytest.fixture(scope="session")
def sample_train() -> Path:
    return SAMPLE / "train.csv"


@pytest.fixture(scope="session")
def sample_test() -> Path:
    return SAMPLE / "test.csv"


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory, sample_train) -> Path:
    """A real model trained on the 100 sample texts (frozen encoder: the 5-class recipe,
    batch-hard triplets over the seed head; few steps, 2 members, seed 0)."""
    out = tmp_path_factory.mktemp("models") / "small"
    flags = ("--no-fine-tune", "--steps", "60", "--ensemble", "2", "--seed", "0")
    return train_model(sample_train, out, *flags)


@pytest.fixture(scope="session")
def tuned_model(tmp_path_factory, sample_train) -> Path:
    """A model trained with --fine-tune (3 steps): a tuned encoder beside the shipped one."""
    out = tmp_path_factory.mktemp("tuned") / "model"
    return train_model(sample_train, out, "--fine-tune", "--steps", "3", "--ensemble", "1")


@pytest.fixture(scope="session")
def labels_only_model(tmp_path_factory, sample_train) -> Path:
    """A model of another vector dimension (128, the head's labels space alone, against
    the served space's 640): what a retrain with another recipe can make."""
    out = tmp_path_factory.mktemp("labels-only") / "model"
    flags = ("--no-fine-tune", "--steps", "20", "--ensemble", "1", "--served-space", "labels")
    return train_model(sample_train, out, *flags)


@pytest.fixture(params=["tuned_model", "labels_only_model"], ids=["same-dim", "other-dim"])
def new_model_dir(request):
    """The model a job re-embeds with: a fine-tuned one of the same 640 dimensions, or
    one of 128 (another served space: what a retrain with another recipe makes)."""
    return request.getfixturevalue(request.param)


def train_model(data: Path, out: Path, *flags: str) -> Path:
    """`siamese-train` on a table labelled in its `class` column, quietly; `out`."""
    from siamese_search.trainer.cli import main

    argv = ["--data", str(data), "--label-column", "class", "--out", str(out), *flags]
    assert main([*argv, "--quiet"]) == 0
    return out


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory):
    """A real Milvus 2.3.5 on 127.0.0.1 for the whole run, started as a user starts it
    (`python tests/milvus_service.py`) and stopped as a service manager stops it, with
    SIGTERM: the run fails if Milvus itself outlives that (it used to: issue 22).

    When it cannot start, the Milvus tests are skipped and the run says so loudly;
    with SIAMESE_REQUIRE_MILVUS=1 (CI) they fail instead.
    """
    from tests import milvus_service

    try:
        service = milvus_service.run_command(tmp_path_factory.mktemp("milvus"))
    except Exception as error:
        message = f"MILVUS COULD NOT START, Milvus tests not run: {error}"
        if os.environ.get("SIAMESE_REQUIRE_MILVUS") == "1":
            pytest.fail(message)
        print(f"\n{'!' * 78}\n{message}\n{'!' * 78}", file=sys.__stderr__, flush=True)
        pytest.skip(message)
    yield service.uri
    assert service.stop(), f"Milvus (pid {service.pid}) outlived SIGTERM to milvus_service.py"


@pytest.fixture(scope="session")
def running_cluster():
    """One local Ray cluster for the tests that embed in this process (~6-10 s a start:
    test_ray_engine.py's and the Ray build to Milvus): a RayEmbedder joins a cluster
    this process already runs and leaves it running, as it does a cluster given by
    --ray-address. A start of its own is tested last in test_ray_engine.py (which
    shuts this one down first) and in a subprocess (a killed Ray job). Started as the
    engine starts one, with its retries for a raylet that does not come up (seen in CI)."""
    import ray

    from siamese_search.indexer.ray_engine import _start_local_cluster

    _start_local_cluster()
    yield
    ray.shutdown()


#: how the servers of most tests encode: in the server process. A server's default
#: (an encoding process a core, each loading the model) makes a start ~2 s instead of
#: ~0.7 s, and the suite starts ~60 servers. That default path is tested where it is
#: the subject: test_encode_processes, test_server's contract server, the CLI's
#: server (test_server_process), test_encoder_runtime, the README's example.
def encode_in_server():
    from siamese_search.server.batching import BatchSettings

    return BatchSettings(processes=0)


def write_csv(path: Path, rows: list[tuple[str, str]], header=("text", "label")) -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


TOY_ROWS = [
    ("fix crash when the parser reads an empty file", "bug"),
    ("fix null pointer in login handler", "bug"),
    ("fixed wrong total in invoice report", "bug"),
    ("add dark mode to the settings page", "feature"),
    ("new export to PDF feature", "feature"),
    ("support uploading several files at once", "feature"),
]


def peak_rss_reset() -> bool:
    """Reset this process's peak RSS (VmHWM); False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")
