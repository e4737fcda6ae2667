"""The real gRPC server on 127.0.0.1: every RPC, bad input, health, reflection, auth, TLS,
metrics, and hot reload under concurrent load."""

from __future__ import annotations

import datetime
import math
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
from google.protobuf.struct_pb2 import Value
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from siamese_search.client import RetryPolicy, SearchClient
from siamese_search.client.cli import main as query_main
from siamese_search.core.errors import UserError
from siamese_search.core.model_artifact import load_model
from siamese_search.core.tables import Columns
from siamese_search.indexer.backends.milvus_backend import MilvusTarget
from siamese_search.indexer.build import BuildOptions, add_to_index, build_index
from siamese_search.server.app import SearchServer
from siamese_search.server.batching import BatchSettings
from siamese_search.server.config import Limits, ServerConfig
from siamese_search.server.generated import search_pb2 as pb
from siamese_search.server.generated import search_pb2_grpc as pb_grpc
from tests.conftest import encode_in_server, train_model, write_csv

LIMITS = Limits(max_k=20, max_text_chars=200, max_batch=8)
COLUMNS = Columns(text="text", label="class")
QUIET = BuildOptions(show_progress=False)


@pytest.fixture(scope="module")
def model(trained_model):
    return load_model(trained_model)


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, model, sample_train):
    directory = tmp_path_factory.mktemp("serve") / "index"
    build_index(directory, model, sample_train, COLUMNS, QUIET)
    return directory


def _start(index_dir, **overrides) -> SearchServer:
    settings = dict(
        index_dir=index_dir,
        port=0,
        limits=LIMITS,
        reload_interval=0.2,
        workers=8,
        grace_seconds=5,
        batching=encode_in_server(),
    )
    settings.update(overrides)
    return SearchServer(ServerConfig(**settings)).start()


#: the contract tests run once per backend: FAISS files, and a real Milvus server
BACKENDS = ["faiss", pytest.param("milvus", marks=[pytest.mark.milvus, pytest.mark.slow])]


def _milvus_options(request, name: str) -> BuildOptions:
    target = MilvusTarget(request.getfixturevalue("milvus_uri"), name)
    return BuildOptions(show_progress=False, milvus=target)


@pytest.fixture(scope="module", params=BACKENDS)
def server(request, index_dir, tmp_path_factory, model, sample_train):
    """A server of the sample index: from the index directory, or from a Milvus alias
    (built from the same rows with the same model, so every answer is the same)."""
    if request.param == "milvus":
        options = _milvus_options(request, "contract")
        milvus_dir = tmp_path_factory.mktemp("serve-milvus") / "index"
        build_index(milvus_dir, model, sample_train, COLUMNS, options)
        running = _start(None, milvus=options.milvus, batching=BatchSettings())
    else:  # the default batching: encoding processes, one a core
        running = _start(index_dir, batching=BatchSettings())
    yield running
    running.stop(0)


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield pb_grpc.SearchServiceStub(channel)
    channel.close()


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


def test_search_returns_neighbours_by_descending_score(stub, model, index_dir):
    response = stub.Search(pb.SearchRequest(text="Fix crash when saving a file", k=5))
    assert response.index_version == "000001"
    scores = [n.score for n in response.neighbors]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    for n in response.neighbors:
        assert n.distance == pytest.approx(1 - n.score, abs=1e-6)
        assert n.text and n.id and n.label in {"1", "2", "3", "4", "5"}
    expected = float(
        model.embed(["Fix crash when saving a file"])[0]
        @ model.embed([response.neighbors[0].text])[0]
    )
    assert response.neighbors[0].score == pytest.approx(expected, abs=1e-4)


def test_search_label_filter_and_min_score(stub):
    filtered = stub.Search(pb.SearchRequest(text="Fix crash", k=10, labels=["5"]))
    assert {n.label for n in filtered.neighbors} == {"5"}
    everything = stub.Search(pb.SearchRequest(text="Fix crash", k=20)).neighbors
    threshold = (everything[0].score + everything[-1].score) / 2
    high = stub.Search(pb.SearchRequest(text="Fix crash", k=20, min_score=threshold)).neighbors
    # exactly the unfiltered hits at or above the threshold: some, but not all of them
    assert [n.id for n in high] == [n.id for n in everything if n.score >= threshold]
    assert 0 < len(high) < len(everything)


def test_search_batch_keeps_request_order(stub):
    texts = ["Improve performance of the cache", "Remove duplicated code"]
    batch = stub.SearchBatch(pb.SearchBatchRequest(texts=texts, k=3))
    assert len(batch.results) == 2
    for text, result in zip(texts, batch.results, strict=True):
        single = stub.Search(pb.SearchRequest(text=text, k=3))
        assert [n.id for n in result.neighbors] == [n.id for n in single.neighbors]


def test_predict_votes_and_abstains(stub):
    response = stub.Predict(pb.PredictRequest(text="Improve performance of the parser", k=5))
    assert response.label == "5"
    assert 0 < response.confidence <= 1
    assert sum(s.score for s in response.scores) == pytest.approx(1.0, abs=1e-5)
    assert response.scores[0].label == response.label and len(response.neighbors) == 5
    abstained = stub.Predict(pb.PredictRequest(text="Improve performance", k=5, min_score=1.0))
    assert abstained.label == "" and abstained.confidence == 0
    assert "min_score" in abstained.abstention_reason
    nothing = pb.Filter(must=[pb.Filter(key="id", match=pb.Match(value=Value(string_value="-")))])
    unmatched = stub.Predict(pb.PredictRequest(text="Improve performance", k=5, filter=nothing))
    assert unmatched.abstained and not unmatched.neighbors
    assert "no neighbour was found" in unmatched.abstention_reason  # not "under min_score"
    batch = stub.PredictBatch(
        pb.PredictBatchRequest(
            texts=["Remove duplicate code in tests", "Improve performance of the parser"], k=5
        )
    )
    assert [r.label for r in batch.results] == ["2", "5"]


def test_predict_applies_the_models_abstention_rule(stub, model, index_dir):
    """Without min_score, Predict answers exactly what the model's fitted rule says,
    the query's wording agreement and label share included."""
    from siamese_search.core.abstention import predict
    from siamese_search.indexer.store import open_index

    texts = [
        "Fix NPE when the session expires",
        "Improve performance of the parser",
        "Remove duplicate code in tests",
        "zebra giraffe elephant safari",
        "book a table for two at an italian restaurant",
        "what is the weather like in paris tomorrow",
        "la la la",
    ]
    assert model.abstention is not None
    version = open_index(index_dir)
    abstained = []
    try:
        for text in texts:
            answer = stub.Predict(pb.PredictRequest(text=text, k=5))
            vector = model.embed([text])
            hits = version.search(vector, 5)[0]
            expected = predict(
                [h.label for h in hits],
                [h.score for h in hits],
                model.abstention,
                label_share=float(model.label_shares(vector)[0]),
                wording=model.wording_agreement([text])[0],  # the rule reads it
            )
            assert (answer.label, answer.voted_label, answer.abstained) == (
                expected.label,
                expected.voted,
                expected.abstained,
            )
            assert answer.confidence == pytest.approx(expected.confidence, abs=1e-5)
            abstained.append(answer.abstained)
    finally:
        version.close()
    assert True in abstained and False in abstained  # both sides of the threshold seen
    # a caller's min_score replaces the model's rule
    unsure = texts[abstained.index(True)]
    answer = stub.Predict(pb.PredictRequest(text=unsure, k=5, min_score=-1.0))
    assert not answer.abstained and answer.label == answer.voted_label != ""


def test_embed_and_get_info(stub, model):
    response = stub.Embed(pb.EmbedRequest(texts=["Fix crash", "Add feature"]))
    vectors = np.array([e.values for e in response.embeddings])
    assert response.dim == 640 and vectors.shape == (2, 640)  # meaning 512 + labels 128
    np.testing.assert_allclose(vectors, model.embed(["Fix crash", "Add feature"]), atol=1e-5)
    assert response.model_fingerprint == model.fingerprint
    info = stub.GetInfo(pb.GetInfoRequest())
    assert info.model_fingerprint == model.fingerprint and info.index_type == "flat"
    assert info.count == 100 and info.dim == 640 and info.index_version == "000001"
    assert {lc.label: lc.count for lc in info.labels} == {str(c): 20 for c in range(1, 6)}
    assert (info.max_k, info.max_text_chars, info.max_batch) == (20, 200, 8)
    rule = model.abstention
    assert info.abstention.threshold == pytest.approx(rule.threshold)
    assert info.abstention.domain_meaning == pytest.approx(rule.domain_meaning)
    assert info.abstention.domain_rule == rule.domain_rule and info.abstention.source
    assert list(info.abstention.features) == list(rule.features)
    assert "wording_agreement" in info.abstention.features


@pytest.mark.parametrize(
    ("make_call", "message"),
    [
        (lambda s: s.Search(pb.SearchRequest(text="", k=3)), "text is empty"),
        (lambda s: s.Search(pb.SearchRequest(text=" \n\t", k=3)), "text is empty"),
        (lambda s: s.Search(pb.SearchRequest(text="x" * 201, k=3)), "the limit is 200"),
        (lambda s: s.Search(pb.SearchRequest(text="fix", k=0)), "k is 0"),
        (lambda s: s.Search(pb.SearchRequest(text="fix", k=21)), "between 1 and 20"),
        (lambda s: s.Search(pb.SearchRequest(text="fix", k=3, min_score=math.nan)), "min_score"),
        (lambda s: s.Search(pb.SearchRequest(text="fix", k=3, min_score=1.5)), "[-1, 1]"),
        (lambda s: s.SearchBatch(pb.SearchBatchRequest(texts=["a"] * 9, k=3)), "the limit is 8"),
        (lambda s: s.SearchBatch(pb.SearchBatchRequest(texts=[], k=3)), "texts is empty"),
        (
            lambda s: s.PredictBatch(pb.PredictBatchRequest(texts=["ok", ""], k=3)),
            "texts[1] is empty",
        ),
        (lambda s: s.Embed(pb.EmbedRequest(texts=["a"] * 9)), "the limit is 8"),
    ],
)
def test_bad_input_is_invalid_argument_with_a_message(stub, make_call, message):
    code, details = _code(lambda: make_call(stub))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in details


def test_a_label_the_index_does_not_hold_is_not_found(stub):
    """State, not a malformed request: the same filter works once the label exists."""
    code, details = _code(lambda: stub.Search(pb.SearchRequest(text="fix", k=3, labels=["nope"])))
    assert code == grpc.StatusCode.NOT_FOUND
    assert "unknown label(s) 'nope'" in details and "the index holds" in details


def test_oversized_message_and_expired_deadline(stub, server):
    huge = "word " * (LIMITS.max_request_bytes // 4)
    code, _ = _code(lambda: stub.Search(pb.SearchRequest(text=huge, k=3)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    code, _ = _code(
        lambda: stub.SearchBatch(pb.SearchBatchRequest(texts=["fix"] * 8, k=3), timeout=1e-4)
    )
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_health_and_reflection(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(
            health_pb2.HealthCheckRequest(service="siamese_search.v1.SearchService")
        )
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)  # v1alpha
        answers = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = {s.name for a in answers for s in a.list_services_response.service}
        assert {"siamese_search.v1.SearchService", "grpc.health.v1.Health"} <= names
        # v1 (what current grpcurl asks first): same messages, its own method path
        v1 = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        wanted = reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="siamese_search.v1.SearchService"
        )
        answers = list(v1(iter([reflection_pb2.ServerReflectionRequest(list_services=""), wanted])))
        names = {s.name for s in answers[0].list_services_response.service}
        assert {"siamese_search.v1.SearchService", "grpc.reflection.v1.ServerReflection"} <= names
        assert answers[1].file_descriptor_response.file_descriptor_proto  # the .proto, served


def test_query_cli_against_the_server(server, capsys, monkeypatch, tmp_path):
    import io
    import json

    target = f"127.0.0.1:{server.port}"
    assert query_main(["--target", target, "Improve performance of the parser", "--predict"]) == 0
    assert capsys.readouterr().out.startswith("label 5")
    assert query_main(["--target", target, "fix", "-k", "0"]) == 1
    assert "INVALID_ARGUMENT: k is 0" in capsys.readouterr().err
    # several texts, some from stdin ('-'), go in one batch call, answered in order
    monkeypatch.setattr("sys.stdin", io.StringIO("Fix NPE on startup\n\nSpeed up parsing\n"))
    assert query_main(["--target", target, "first text", "-", "--predict", "-k", "3"]) == 0
    out = capsys.readouterr().out
    queries = [line for line in out.splitlines() if line.startswith("> ")]
    assert queries == ["> first text", "> Fix NPE on startup", "> Speed up parsing"]
    assert sum(line.startswith("label ") for line in out.splitlines()) == 3
    # an off-topic text is answered "none of these", saying why
    assert query_main(["--target", target, "zebra safari tour in kenya", "--predict"]) == 0
    assert "(abstained: none of these; the nearest texts voted" in capsys.readouterr().out
    # a threshold nothing reaches is said, not printed as an empty list
    assert query_main(["--target", target, "fix", "--min-score", "0.9999"]) == 0
    assert "no neighbour reached --min-score 0.9999" in capsys.readouterr().out
    assert query_main(["--target", target, "fix", "--predict", "--min-score", "0.9999"]) == 0
    assert "abstained: no neighbour reached --min-score 0.9999" in capsys.readouterr().out
    # --filter: a JSON object (or @FILE), checked before any call
    only_five = '{"must": [{"key": "label", "match": {"value": "5"}}]}'
    assert query_main(["--target", target, "fix", "-k", "5", "--filter", only_five, "--json"]) == 0
    assert {n["label"] for n in json.loads(capsys.readouterr().out)["neighbors"]} == {"5"}
    spec = tmp_path / "filter.json"
    spec.write_text('{"must_not": [{"key": "label", "match": {"any": ["1", "2", "3", "4"]}}]}')
    asked = ["--target", target, "Improve performance of the parser", "--predict"]
    assert query_main([*asked, "--filter", f"@{spec}", "--json"]) == 0
    assert {n["label"] for n in json.loads(capsys.readouterr().out)["neighbors"]} == {"5"}
    for bad, said in [
        ("{must: [", "--filter is not JSON"),
        ("[1]", "must be a JSON object"),
        ("@/no/such.json", "no such file"),
    ]:
        assert query_main(["--target", target, "fix", "--filter", bad]) == 2
        assert said in capsys.readouterr().err
    unknown = '{"must": [{"key": "nope", "match": {"value": "x"}}]}'
    assert query_main(["--target", target, "fix", "--filter", unknown]) == 1
    assert "INVALID_ARGUMENT" in capsys.readouterr().err


def test_no_index_is_unavailable_until_one_is_built(tmp_path, trained_model, model, sample_train):
    index_dir = tmp_path / "empty"
    running = _start(index_dir, model_dir=trained_model)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            code, details = _code(lambda: stub.Search(pb.SearchRequest(text="fix", k=3)))
            assert code == grpc.StatusCode.UNAVAILABLE and "siamese-index build" in details
            build_index(index_dir, model, sample_train, COLUMNS, QUIET)
            deadline = time.monotonic() + 10
            while running.holder.current is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert stub.Search(pb.SearchRequest(text="fix", k=3)).index_version == "000001"
            unlabelled = tmp_path / "unlabelled"
            build_index(unlabelled, model, sample_train, Columns(text="text", label=None), QUIET)
    finally:
        running.stop(0)
    running = _start(unlabelled)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            code, details = _code(lambda: stub.Predict(pb.PredictRequest(text="fix", k=3)))
            assert code == grpc.StatusCode.FAILED_PRECONDITION and "no labels" in details
    finally:
        running.stop(0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hot_reload_under_load_has_no_failed_calls_and_no_mixed_versions(
    request, backend, tmp_path, model, sample_train
):
    """A new version (a moved CURRENT, or a moved Milvus alias) is picked up under load."""
    index_dir = tmp_path / "index"
    options = _milvus_options(request, "reload") if backend == "milvus" else QUIET
    build_index(index_dir, model, sample_train, COLUMNS, options)
    if backend == "milvus":
        running = _start(None, milvus=options.milvus, reload_interval=0.05)
    else:
        running = _start(index_dir, reload_interval=0.05)
    marker = "Zebra giraffe elephant safari marker"
    failures: list[Exception] = []
    # (version the answer names, whether it holds the marker): checked below, in the test
    # thread, so a wrong answer fails the test instead of only ending a client thread
    answers: list[tuple[str, bool]] = []
    seen: dict[str, int] = {}
    stop = threading.Event()

    def client():
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            while not stop.is_set():
                try:
                    response = stub.Search(pb.SearchRequest(text=marker, k=3), timeout=10)
                except grpc.RpcError as error:
                    failures.append(error)
                    continue
                has_marker = any(n.text == marker for n in response.neighbors)
                answers.append((response.index_version, has_marker))
                seen[response.index_version] = seen.get(response.index_version, 0) + 1

    threads = [threading.Thread(target=client) for _ in range(6)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        more = write_csv(tmp_path / "more.csv", [(marker, "4")], header=("text", "class"))
        add_to_index(
            index_dir,
            model,
            more,
            Columns(text="text", label="class", id=None),
            options,
            upsert=False,
        )
        deadline = time.monotonic() + 10
        while seen.get("000002", 0) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        running.stop(0)
    assert not failures
    assert seen.get("000001", 0) > 0 and seen.get("000002", 0) >= 20
    # the marker exists only from version 000002 on: every answer is of one version
    mixed = [(v, has) for v, has in answers if has != (v != "000001")]
    assert not mixed, f"{len(mixed)} answers mixed versions, e.g. {mixed[:3]}"


def _train_small(out, sample_train, seed: int):
    flags = ("--no-fine-tune", "--steps", "5", "--ensemble", "1", "--seed", str(seed))
    return train_model(sample_train, out, *flags)


@pytest.fixture(scope="module")
def retrained_dir(tmp_path_factory, sample_train):
    """Another model of the same data (seed 7): what a retrain makes."""
    return _train_small(tmp_path_factory.mktemp("retrained") / "model", sample_train, seed=7)


@pytest.mark.slow  # trains two more models and serves under load for seconds
def test_retrained_model_swaps_in_with_its_index_under_load(
    tmp_path, model, trained_model, sample_train, retrained_dir
):
    """Retrain -> re-index without a restart: the new version's model is loaded beside
    the serving one and swapped together with the index, with no failed call; a
    version whose model is missing, or is no longer the one it was built with, is
    refused and the serving pair stays."""
    import shutil

    retrained = load_model(retrained_dir)
    index_dir = tmp_path / "index"
    build_index(index_dir, model, sample_train, COLUMNS, QUIET)
    running = _start(index_dir, reload_interval=0.05)  # no --model: follows the index
    failures: list[Exception] = []
    versions: list[str] = []
    stop = threading.Event()

    def client():
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            while not stop.is_set():
                try:
                    versions.append(
                        stub.Predict(pb.PredictRequest(text="fix the npe", k=3)).index_version
                    )
                    stub.Search(pb.SearchRequest(text="add a feature", k=3), timeout=10)
                except grpc.RpcError as error:
                    failures.append(error)

    threads = [threading.Thread(target=client) for _ in range(4)]
    replace = BuildOptions(show_progress=False, replace=True)
    try:
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        build_index(index_dir, retrained, sample_train, COLUMNS, replace)
        deadline = time.monotonic() + 20
        while versions.count("000002") < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        for thread in threads:
            thread.join()
        assert not failures, failures[:3]
        assert "000001" in versions and versions.count("000002") >= 20
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            info = stub.GetInfo(pb.GetInfoRequest())
            assert info.model_fingerprint == retrained.fingerprint
            assert info.model_directory == str(retrained.directory)
            embedded = stub.Embed(pb.EmbedRequest(texts=["fix the npe"])).embeddings[0].values
            np.testing.assert_allclose(embedded, retrained.embed(["fix the npe"])[0], atol=1e-5)

            # a version whose model directory is gone: refused, the pair keeps serving
            gone = load_model(_train_small(tmp_path / "gone", sample_train, seed=8))
            build_index(index_dir, gone, sample_train, COLUMNS, replace)
            shutil.rmtree(gone.directory)
            outcome = stub.Reload(pb.ReloadRequest())
            assert not outcome.changed and outcome.index_version == "000002"
            assert "which is not there" in outcome.message
            # ... and one whose model directory now holds another model (retrained in place)
            shutil.copytree(trained_model, gone.directory)
            outcome = stub.Reload(pb.ReloadRequest())
            assert not outcome.changed and "was built with model" in outcome.message
            info = stub.GetInfo(pb.GetInfoRequest())
            assert (info.index_version, info.model_fingerprint) == ("000002", retrained.fingerprint)
            assert "was built with model" in info.last_reload_error
            assert stub.Search(pb.SearchRequest(text="fix", k=3)).index_version == "000002"
    finally:
        stop.set()
        running.stop(0)


@pytest.mark.slow  # trains a second model: refusals of other models are fast elsewhere
def test_pinned_model_refuses_a_version_of_another_model(
    tmp_path, model, trained_model, sample_train, retrained_dir
):
    """--model pins the model: a version built with another is refused, old keeps serving."""
    other = load_model(retrained_dir)
    index_dir = tmp_path / "index"
    build_index(index_dir, model, sample_train, COLUMNS, QUIET)
    running = _start(index_dir, reload_interval=0, model_dir=trained_model)
    try:
        build_index(
            index_dir, other, sample_train, COLUMNS, BuildOptions(show_progress=False, replace=True)
        )
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            outcome = stub.Reload(pb.ReloadRequest())
            assert not outcome.changed and outcome.index_version == "000001"
            assert "refused new index version 000002" in outcome.message
            assert stub.Search(pb.SearchRequest(text="fix", k=3)).index_version == "000001"
    finally:
        running.stop(0)


def test_a_damaged_current_at_reload_keeps_the_old_version_serving(tmp_path, model, sample_train):
    """CURRENT edited by hand (garbage, a version never made, empty): the reload is
    refused, saying how to repair it, and the old version serves on. The message read
    "refused new index version None" when no version could be named."""
    index_dir = tmp_path / "index"
    build_index(index_dir, model, sample_train, COLUMNS, QUIET)
    running = _start(index_dir, reload_interval=0)
    current = index_dir / "CURRENT"
    kept = current.read_text()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            for damaged, said in (
                ("garbage", "rollback --index"),
                ("000009", "rollback"),
                ("", ""),
            ):
                current.write_text(damaged)
                outcome = stub.Reload(pb.ReloadRequest())
                assert not outcome.changed and outcome.index_version == "000001"
                assert "refused" in outcome.message and said in outcome.message
                assert "None" not in outcome.message, outcome.message
                assert stub.Search(pb.SearchRequest(text="fix", k=3)).index_version == "000001"
            current.write_text(kept)
            assert "already serving" in stub.Reload(pb.ReloadRequest()).message
    finally:
        running.stop(0)


def test_a_record_store_damaged_under_the_server_is_data_loss_not_internal(
    tmp_path, model, sample_test
):
    """A served version's records.sqlite overwritten in place (its pages are read as
    lookups ask for them): Search answered INTERNAL "see the server log", and over
    REST the connection closed unanswered with a raw traceback on stderr. Now both
    say DATA_LOSS, naming the file and what to do."""
    import json
    import urllib.error

    index_dir = tmp_path / "index"  # 400 KB of texts, most of them not read at load
    build_index(index_dir, model, sample_test, COLUMNS, QUIET)
    running = _start(index_dir, reload_interval=0, http_port=0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            assert stub.GetInfo(pb.GetInfoRequest()).count == 3277
            (records,) = index_dir.glob("versions/*/segments/*/records.sqlite")
            with open(records, "r+b") as handle:  # every page but the first (the schema)
                handle.seek(4096)
                handle.write(np.random.default_rng(0).bytes(records.stat().st_size - 4096))
            with pytest.raises(grpc.RpcError) as refused:
                stub.Search(pb.SearchRequest(text="add a test for the parser", k=3))
        assert refused.value.code() == grpc.StatusCode.DATA_LOSS
        assert str(records) in refused.value.details()
        assert "damaged" in refused.value.details()
        request = urllib.request.Request(
            f"http://127.0.0.1:{running.http_port}/v1/search",
            data=json.dumps({"text": "update the docs", "k": 3}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as answered:
            urllib.request.urlopen(request, timeout=30)
        assert answered.value.code == 500
        body = json.loads(answered.value.read())
        assert body["code"] == grpc.StatusCode.DATA_LOSS.value[0] and "damaged" in body["message"]
    finally:
        running.stop(0)


def test_an_idle_grpc_connection_is_closed_and_a_client_reconnects(tmp_path, index_dir):
    """Connections opened and left idle stayed for ever (5,000 of them: 5,000 file
    descriptors and +35 MB, until the server could accept no more). With no call in
    flight for --grpc-idle-seconds a connection is closed; a client's next call opens
    a new one."""
    import socket

    running = _start(index_dir, grpc_idle_seconds=1.0)
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            assert stub.Search(pb.SearchRequest(text="fix", k=1)).neighbors
            with socket.create_connection(("127.0.0.1", running.port), timeout=10) as idle:
                idle.sendall(preface)
                received, started = b"", time.monotonic()
                while chunk := idle.recv(4096):  # SETTINGS, then GOAWAY, then the end
                    received += chunk
                assert time.monotonic() - started < 9, "the idle connection was kept"
            time.sleep(1.5)  # the channel's connection is closed too
            assert stub.Search(pb.SearchRequest(text="fix", k=1)).neighbors
    finally:
        running.stop(0)


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_swapped_tls_files_are_named_not_taken_for_a_busy_port(tmp_path, index_dir):
    cert, key = _self_signed(tmp_path)
    with pytest.raises(UserError, match="are the two swapped"):
        ServerConfig(index_dir=index_dir, port=0, tls_cert=key, tls_key=cert)


def test_tls_and_bearer_token(tmp_path, index_dir):
    cert, key = _self_signed(tmp_path)
    token = "s3cret-token-for-tests"
    running = _start(index_dir, tls_cert=cert, tls_key=key, token=token, metrics_port=0)
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{running.port}", credentials) as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            code, details = _code(lambda: stub.Search(pb.SearchRequest(text="fix", k=3)))
            assert code == grpc.StatusCode.UNAUTHENTICATED and "bearer token" in details
            code, _ = _code(
                lambda: stub.Search(
                    pb.SearchRequest(text="fix", k=3), metadata=[("authorization", "Bearer wrong")]
                )
            )
            assert code == grpc.StatusCode.UNAUTHENTICATED
            good = [("authorization", f"Bearer {token}")]
            assert len(stub.Search(pb.SearchRequest(text="fix", k=3), metadata=good).neighbors) == 3
            health = health_pb2_grpc.HealthStub(channel)
            assert (
                health.Check(health_pb2.HealthCheckRequest()).status
                == health_pb2.HealthCheckResponse.SERVING
            )
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as plain:
            code, _ = _code(
                lambda: pb_grpc.SearchServiceStub(plain).Search(
                    pb.SearchRequest(text="fix", k=3), metadata=good, timeout=3
                )
            )
            assert code == grpc.StatusCode.UNAVAILABLE
        # the typed client: TLS with a private CA and the token
        target = f"127.0.0.1:{running.port}"
        with SearchClient(target, ca_cert=cert, token=token) as client:
            assert len(client.search("fix", k=3).neighbors) == 3
        with SearchClient(target, ca_cert=cert, retry=RetryPolicy(attempts=1)) as client:
            with pytest.raises(grpc.RpcError) as caught:
                client.search("fix", k=3)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        running.stop(0)


def test_metrics_endpoint_counts_requests(tmp_path, index_dir):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    running = _start(index_dir, metrics_port=metrics_port)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            stub.Search(pb.SearchRequest(text="fix", k=3))
            _code(lambda: stub.Search(pb.SearchRequest(text="", k=3)))
        body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
        assert 'siamese_requests_total{code="OK",method="Search"} 1.0' in body
        assert 'siamese_requests_total{code="INVALID_ARGUMENT",method="Search"} 1.0' in body
        assert "siamese_request_seconds_bucket" in body
        # per collection: the --index one is named after its directory
        assert 'siamese_index_vectors{collection="index"} 100.0' in body
        assert 'siamese_collection_requests_total{collection="index",method="Search"} 2.0' in body
    finally:
        running.stop(0)


def test_auth_scheme_headers_admin_token_and_counted_refusals(tmp_path, index_dir, caplog):
    token, admin = "query-token-0123456789", "admin-token-0123456789"
    running = _start(index_dir, token=token, admin_token=admin)
    request = pb.SearchRequest(text="fix", k=3)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            for scheme in ("Bearer", "bearer", "BEARER"):  # RFC 7235: case-insensitive
                assert stub.Search(request, metadata=[("authorization", f"{scheme} {token}")])
            twice = [("authorization", f"Bearer {token}"), ("authorization", "Bearer other")]
            code, details = _code(lambda: stub.Search(request, metadata=twice))
            assert code == grpc.StatusCode.UNAUTHENTICATED and "exactly one" in details
            query = [("authorization", f"Bearer {token}")]
            code, details = _code(lambda: stub.Reload(pb.ReloadRequest(), metadata=query))
            assert code == grpc.StatusCode.PERMISSION_DENIED and "admin token" in details
            as_admin = [("authorization", f"Bearer {admin}")]
            assert stub.Reload(pb.ReloadRequest(), metadata=as_admin).index_version == "000001"
            assert stub.Search(request, metadata=as_admin).neighbors  # admin may query too
            code, _ = _code(lambda: stub.Search(request, metadata=[("authorization", "Bearer x")]))
            assert code == grpc.StatusCode.UNAUTHENTICATED
        counted = running.metrics.requests.labels(method="Search", code="UNAUTHENTICATED")
        assert counted._value.get() == 2  # the two refused searches
        refusals = [r for r in caplog.records if r.getMessage() == "auth_refused"]
        assert len(refusals) == 3 and all(token not in str(r.__dict__) for r in refusals)
    finally:
        running.stop(0)
    # auth on without an admin token: nobody can reload
    running = _start(index_dir, token=token)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            query = [("authorization", f"Bearer {token}")]
            code, details = _code(lambda: stub.Reload(pb.ReloadRequest(), metadata=query))
            assert code == grpc.StatusCode.PERMISSION_DENIED and "admin-token-file" in details
    finally:
        running.stop(0)


def test_hostile_requests_get_invalid_argument_with_short_messages(server, stub):
    target = f"127.0.0.1:{server.port}"
    with grpc.insecure_channel(target) as channel:
        raw = channel.unary_unary(
            "/siamese_search.v1.SearchService/Search",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        for body in (b"\xff\xff\xff", b"\x0a\x02\xff\xfe\x10\x03"):  # junk; text not UTF-8
            code, details = _code(lambda body=body: raw(body, timeout=5))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a valid Search" in details
    for text in ("\u200b\u200c\u200d", "\x00\x01\x02", "\u2060\u200e\u200f \t"):
        code, details = _code(lambda text=text: stub.Search(pb.SearchRequest(text=text, k=3)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "nothing to read" in details
    many = [f"l{i}" for i in range(5_000)]  # within the size limit, beyond the count
    code, details = _code(lambda: stub.Search(pb.SearchRequest(text="fix", k=3, labels=many)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and len(details) < 300
    unknown = [f"unknown-{i}-{'y' * 100}" for i in range(900)]
    code, details = _code(lambda: stub.Search(pb.SearchRequest(text="fix", k=3, labels=unknown)))
    assert code == grpc.StatusCode.NOT_FOUND and "and 895 more" in details
    assert len(details) < 1000
