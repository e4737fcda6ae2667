"""The embedded encoder on OpenVINO (core/encoders/usem3_runtime.py): numpy's vectors
to the fidelity bars, for the shipped and for fine-tuned weights; a runtime that
disagrees refused with its figures; safe from several threads; and every path that
encodes (encoding processes, the index CLI, the server) runs it when asked."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from siamese_search.core.encoders import make_encoder, runtime_choice
from siamese_search.core.encoders.base import RUNTIME_VARIABLE
from siamese_search.core.encoders.usem3_runtime import (
    RUNTIMES,
    check_fidelity,
    fidelity_sample,
    top_k_overlap,
)
from siamese_search.core.errors import UserError
from siamese_search.core.model_artifact import load_model

TEXTS = [f"fix the parser crash number {i} in module {i % 7}" for i in range(60)]


@pytest.fixture(scope="module")
def numpy_encoder():
    from siamese_search.core.encoders.usem3_encoder import Usem3Encoder

    return Usem3Encoder("code", threads=1, runtime="numpy")


@pytest.fixture(scope="module")
def openvino_encoder():
    from siamese_search.core.encoders.usem3_encoder import Usem3Encoder

    return Usem3Encoder("code", threads=1, runtime="openvino")


def test_openvino_gives_numpys_vectors(numpy_encoder, openvino_encoder):
    assert openvino_encoder.runtime == "openvino"
    expected, got = numpy_encoder.encode(TEXTS), openvino_encoder.encode(TEXTS)
    cosine = np.sum(expected * got, axis=1)
    assert cosine.min() > 0.999
    assert not np.array_equal(expected, got)  # the runtime did run: int8 differs a little
    assert openvino_encoder.fingerprint() == numpy_encoder.fingerprint()


def test_exact_fp32_runtime_and_a_long_text(numpy_encoder):
    """fp32 agrees to float rounding, here on a text longer than one forward pass."""
    from siamese_search.core.encoders.usem3_encoder import Usem3Encoder

    exact = Usem3Encoder("code", threads=1, runtime="openvino-f32")
    texts = [" ".join(TEXTS), *TEXTS[:5]]
    np.testing.assert_allclose(exact.encode(texts), numpy_encoder.encode(texts), atol=2e-5)


def test_a_runtime_that_disagrees_is_refused_with_its_figures(openvino_encoder):
    reference = openvino_encoder._model._backend._numpy

    class Shuffled:  # right shape, wrong vectors: what a broken graph would give
        def encode(self, texts):
            vectors = reference.encode(texts)
            return np.roll(vectors, 1, axis=0)

    with pytest.raises(UserError, match=r"fails the fidelity check.*top-10 overlap"):
        check_fidelity(reference, Shuffled(), "openvino")
    figures = check_fidelity(reference, openvino_encoder._model._backend, "openvino")
    assert figures["mean_cosine"] > 0.999 and figures["top10_overlap"] >= 0.97
    assert len(fidelity_sample()) == 300 and fidelity_sample() == fidelity_sample()


@pytest.mark.parametrize("runtime", ["openvino", "openvino-f32"])
def test_token_rows_do_not_depend_on_what_came_before(runtime, monkeypatch):
    """A text's vector is the same whatever the token-row table already held: a fresh
    encoder, one that encoded other texts first, and one whose table is so small it
    starts over many times agree bit for bit; a text with more distinct ids than the
    table holds is encoded by numpy (bounded memory, not a table sized to it)."""
    from siamese_search.core.encoders import usem3_token_rows
    from siamese_search.core.encoders.usem3_encoder import Usem3Encoder

    long_text = " ".join(fidelity_sample()[:40])  # more distinct ids than 64
    texts = [*TEXTS, long_text, *fidelity_sample()[::7]]
    expected = Usem3Encoder("code", threads=1, runtime=runtime).encode(texts)
    seasoned = Usem3Encoder("code", threads=1, runtime=runtime)
    seasoned.encode(fidelity_sample()[::-1])
    np.testing.assert_array_equal(seasoned.encode(texts), expected)
    # room for any group (TOKEN_BUDGET ids), not for all the texts' ids: it starts over
    monkeypatch.setattr(usem3_token_rows, "CAPACITY", 1100)
    small = Usem3Encoder("code", threads=1, runtime=runtime)
    backend = small._model._backend
    table = backend._token_rows._rows.table
    small.encode(fidelity_sample()[::-1])  # ~2,400 distinct ids
    resets = backend._token_rows.resets
    np.testing.assert_array_equal(small.encode(texts), expected)
    assert resets > 0  # it did start over, in place
    assert backend._token_rows._rows.table is table
    # smaller than a group: groups are split; a text still too varied goes to numpy
    monkeypatch.setattr(usem3_token_rows, "CAPACITY", 64)
    tiny = Usem3Encoder("code", threads=1, runtime=runtime)
    got = tiny.encode(texts)
    assert tiny._model._backend._token_rows._rows.capacity == 64
    numpy_vector = Usem3Encoder("code", threads=1, runtime="numpy").encode([long_text])[0]
    np.testing.assert_array_equal(got[len(TEXTS)], numpy_vector)
    np.testing.assert_allclose(got, expected, atol=2e-3)


def test_token_rows_are_filled_safely_from_several_threads(monkeypatch):
    """Threads that fill a small table and start it over at once still get their
    answers (a reset waits for the groups reading the table)."""
    from siamese_search.core.encoders import usem3_token_rows
    from siamese_search.core.encoders.usem3_encoder import Usem3Encoder

    texts = fidelity_sample()
    expected = Usem3Encoder("code", threads=1, runtime="openvino").encode(texts)
    monkeypatch.setattr(usem3_token_rows, "CAPACITY", 200)
    encoder = Usem3Encoder("code", threads=1, runtime="openvino")
    failures: list[str] = []

    def work(i: int) -> None:
        for _ in range(3):
            # one text at a time: each call is its own group, as in the first encode
            got = np.stack([encoder.encode([t])[0] for t in texts[i::4]])
            if not np.allclose(got, expected[i::4], atol=1e-5):
                failures.append(f"thread {i}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert encoder._model._backend._token_rows.resets > 0


def test_the_runtime_does_not_pin_threads_to_cores(openvino_encoder):
    """Encoding processes and Ray actors each run one thread: pinned, OpenVINO put them
    all on the same core."""
    backend = openvino_encoder._model._backend
    assert backend._compiled.get_property("ENABLE_CPU_PINNING") is False


def test_top_k_overlap():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 8)).astype(np.float32)
    assert top_k_overlap(a, a) == 1.0
    assert top_k_overlap(a, rng.normal(size=(50, 8)).astype(np.float32)) < 0.5


def test_several_threads_get_their_own_answers(openvino_encoder):
    expected = {i: openvino_encoder.encode(TEXTS[i::4]) for i in range(4)}
    got: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        for _ in range(5):
            got[i] = openvino_encoder.encode(TEXTS[i::4])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(4):
        np.testing.assert_array_equal(got[i], expected[i])


@pytest.mark.slow  # fine-tunes a model (the fast loop keeps the shipped weights on the runtime)
def test_fine_tuned_weights_run_on_the_runtime(tuned_model, monkeypatch):
    """A fine-tuned model's encoders (its tuned one and the shipped meaning one) both
    run on the runtime, with the numpy reference's vectors."""
    monkeypatch.setenv(RUNTIME_VARIABLE, "numpy")
    numpy_model = load_model(tuned_model, threads=1)
    monkeypatch.setenv(RUNTIME_VARIABLE, "openvino")
    runtime_model = load_model(tuned_model, threads=1)
    assert runtime_model.encoder.runtime == "openvino"
    assert runtime_model.meaning_encoder.runtime == "openvino"
    assert numpy_model.encoder.runtime == "numpy"
    cosine = np.sum(numpy_model.embed(TEXTS) * runtime_model.embed(TEXTS), axis=1)
    assert cosine.min() > 0.999


@pytest.mark.slow  # worker processes on the runtime
def test_encoding_processes_inherit_the_runtime(trained_model, monkeypatch):
    """Workers are separate Python processes: they must run what the server runs."""
    from siamese_search.server.encode_processes import EncoderProcesses

    monkeypatch.setenv(RUNTIME_VARIABLE, "openvino")
    model = load_model(trained_model, threads=1)
    pool = EncoderProcesses(1, threads=1)
    try:
        np.testing.assert_array_equal(pool.embed(model, TEXTS), model.embed(TEXTS))
    finally:
        pool.close()
    monkeypatch.setenv(RUNTIME_VARIABLE, "numpy")
    assert not np.array_equal(load_model(trained_model, threads=1).embed(TEXTS), model.embed(TEXTS))


def test_auto_is_the_default_and_is_measured_once_per_machine(tmp_path, monkeypatch):
    """auto takes the fastest runtime that passes the check here and remembers it: a
    second load reads the choice (here edited, to show it is read, not re-measured)."""
    monkeypatch.delenv(RUNTIME_VARIABLE, raising=False)
    monkeypatch.setenv(runtime_choice.CACHE_VARIABLE, str(tmp_path))
    encoder = make_encoder("usem3", "code")
    assert encoder.runtime in RUNTIMES
    entries = json.loads((tmp_path / runtime_choice.CACHE_FILE).read_text())
    (entry,) = entries.values()
    assert entry["runtime"] == encoder.runtime
    assert set(entry["sentences_per_second"]) == set(RUNTIMES)  # every runtime passed here
    assert entry["fidelity"]["openvino"]["top10_overlap"] >= 0.97
    assert entry["machine"]["flags_sha256"]
    other = "openvino-f32" if encoder.runtime != "openvino-f32" else "numpy"
    entry["runtime"] = other
    (tmp_path / runtime_choice.CACHE_FILE).write_text(json.dumps(entries))
    assert make_encoder("usem3", "code").runtime == other


@pytest.mark.slow  # measures every runtime again (~3.5 s)
def test_a_damaged_choice_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.delenv(RUNTIME_VARIABLE, raising=False)
    monkeypatch.setenv(runtime_choice.CACHE_VARIABLE, str(tmp_path))
    (tmp_path / runtime_choice.CACHE_FILE).write_text("{not json")
    assert make_encoder("usem3", "code").runtime in RUNTIMES
    assert len(json.loads((tmp_path / runtime_choice.CACHE_FILE).read_text())) == 1


def test_a_pinned_runtime_remembers_its_fidelity_check(tmp_path, monkeypatch):
    monkeypatch.setenv(runtime_choice.CACHE_VARIABLE, str(tmp_path / "cache"))
    monkeypatch.setenv(RUNTIME_VARIABLE, "openvino-f32")
    assert make_encoder("usem3", "code").runtime == "openvino-f32"
    (entry,) = json.loads((tmp_path / "cache" / runtime_choice.CACHE_FILE).read_text()).values()
    assert entry["fidelity"]["min_cosine"] > 0.9999
    monkeypatch.setenv(runtime_choice.CACHE_VARIABLE, "/proc/no-cache-here")  # unwritable
    assert make_encoder("usem3", "code").runtime == "openvino-f32"


def test_concurrent_first_loads_each_keep_their_entry(tmp_path, monkeypatch):
    """Encoding processes load at once: each one's remembered entry must survive the
    others' (a read-modify-write without the lock lost most of them)."""
    monkeypatch.setenv(runtime_choice.CACHE_VARIABLE, str(tmp_path))

    def remember_many(slot: int) -> None:
        for i in range(25):
            runtime_choice.remember(f"{slot}-{i}", {"runtime": "numpy", "padding": "x" * 2000})

    threads = [threading.Thread(target=remember_many, args=(slot,)) for slot in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entries = json.loads((tmp_path / runtime_choice.CACHE_FILE).read_text())
    assert len(entries) == 8 * 25
    assert runtime_choice.recall("7-24") == {"runtime": "numpy", "padding": "x" * 2000}


def test_auto_needs_a_clear_win_over_numpy():
    assert runtime_choice.pick({"numpy": 100.0, "openvino": 300.0, "f32": 120.0}) == "openvino"
    assert runtime_choice.pick({"numpy": 100.0, "openvino": 110.0}) == "numpy"
    assert runtime_choice.pick({"numpy": 100.0, "openvino": 60.0}) == "numpy"


def test_an_unknown_runtime_is_refused(monkeypatch):
    monkeypatch.setenv(RUNTIME_VARIABLE, "tpu")
    with pytest.raises(UserError, match="unknown encoder runtime 'tpu'.*auto, numpy, openvino"):
        make_encoder("usem3", "code")


def test_the_index_cli_takes_the_runtime_flag(tmp_path, trained_model, sample_train, monkeypatch):
    from siamese_search.indexer.cli import main as index_main
    from siamese_search.indexer.store import open_index

    monkeypatch.setenv(RUNTIME_VARIABLE, "numpy")  # restored after: the flag sets it
    out = tmp_path / "index"
    argv = ["build", "--model", str(trained_model), "--data", str(sample_train)]
    argv += ["--label-column", "class", "--out", str(out), "--encoder-runtime", "openvino"]
    assert index_main(argv) == 0
    with open_index(out) as version:
        assert version.manifest["encoder_runtime"] == "openvino"


def test_evaluate_scores_on_the_runtime_it_is_given(
    tmp_path, trained_model, sample_train, monkeypatch
):
    """siamese-evaluate --encoder-runtime: the report names the runtime that scored it,
    and the labels are numpy's."""
    from siamese_search.trainer.evaluate import main as evaluate_main

    monkeypatch.setenv(RUNTIME_VARIABLE, "numpy")  # restored after: the flag sets it
    reports = {}
    for runtime in ("numpy", "openvino"):
        out = tmp_path / f"{runtime}.json"
        argv = ["--model", str(trained_model), "--reference", str(sample_train)]
        argv += ["--test", str(sample_train), "--label-column", "class", "--quiet"]
        argv += ["--no-plots", "--report-json", str(out), "--encoder-runtime", runtime]
        assert evaluate_main(argv) == 0
        reports[runtime] = json.loads(out.read_text())
    assert reports["openvino"]["encoder_runtime"] == "openvino"
    assert reports["numpy"]["encoder_runtime"] == "numpy"
    assert reports["openvino"]["accuracy"] == pytest.approx(reports["numpy"]["accuracy"], abs=0.02)


@pytest.mark.slow  # two servers, one per runtime
def test_a_server_on_the_default_runtime(tmp_path, trained_model, sample_train, monkeypatch):
    """The whole serving path (model load, encoding processes, batching) on the runtime:
    the neighbours of a query are the numpy server's, to the fidelity the check keeps."""
    from siamese_search.client import SearchClient
    from siamese_search.core.tables import Columns
    from siamese_search.indexer.build import BuildOptions, build_index
    from siamese_search.server.app import SearchServer
    from siamese_search.server.config import ServerConfig

    monkeypatch.setenv(RUNTIME_VARIABLE, "numpy")
    index = tmp_path / "index"
    columns = Columns(text="text", label="class")
    build_index(
        index, load_model(trained_model), sample_train, columns, BuildOptions(show_progress=False)
    )
    answers = {}
    for runtime in ("numpy", "openvino"):
        monkeypatch.setenv(RUNTIME_VARIABLE, runtime)
        server = SearchServer(ServerConfig(index_dir=index, port=0)).start()
        try:
            assert server.holder.model.encoder_runtime == runtime
            with SearchClient(f"127.0.0.1:{server.port}") as client:
                found = client.search("Fix crash when saving a file", k=10).neighbors
                answers[runtime] = [n.id for n in found]
        finally:
            server.stop(0)
    assert len(set(answers["numpy"]) & set(answers["openvino"])) >= 9
