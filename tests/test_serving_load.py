"""Serving under hostile and heavy load (a real server on 127.0.0.1): streams that do not
starve unary calls, admission control, work stopped when the caller is gone, token
limits, honest readiness and a reload watcher that survives bad reads."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2_grpc

from siamese_search.core.model_artifact import load_model
from siamese_search.core.tables import Columns
from siamese_search.indexer import layout
from siamese_search.indexer.build import BuildOptions, build_index
from siamese_search.server.app import SearchServer
from siamese_search.server.config import Limits, ServerConfig
from siamese_search.server.generated import search_pb2 as pb
from siamese_search.server.generated import search_pb2_grpc as pb_grpc
from tests.conftest import encode_in_server

COLUMNS = Columns(text="text", label="class")
QUIET = BuildOptions(show_progress=False)
WIDE = Limits(
    max_batch=256,
    max_text_chars=20_000,
    max_text_tokens=600,
    max_call_tokens=200_000,
    max_call_chars=1_000_000,
)


@pytest.fixture(scope="module")
def model(trained_model):
    return load_model(trained_model)


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, model, sample_train):
    directory = tmp_path_factory.mktemp("load") / "index"
    build_index(directory, model, sample_train, COLUMNS, QUIET)
    return directory


def _start(index_dir, **settings) -> SearchServer:
    settings = {"batching": encode_in_server(), **settings}
    return SearchServer(ServerConfig(index_dir=index_dir, port=0, **settings)).start()


def _status(channel) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest()).status


def test_idle_streams_do_not_starve_unary_calls(index_dir):
    server = _start(index_dir, workers=2, max_streams=16, max_streams_per_client=16)
    held = []
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            gate = threading.Event()  # the streams' clients never send: idle streams

            def idle_requests():  # gRPC's sending thread waits here: an idle client
                gate.wait()
                yield from ()

            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            for i in range(16):
                if i % 2:
                    held.append(reflection.ServerReflectionInfo(idle_requests()))
                else:
                    held.append(health.Watch(health_pb2.HealthCheckRequest()))
            deadline = time.monotonic() + 5
            while server.metrics.open_streams._value.get() < 16 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert server.metrics.open_streams._value.get() == 16
            stub = pb_grpc.SearchServiceStub(channel)
            started = time.monotonic()
            assert stub.Search(pb.SearchRequest(text="fix the crash", k=3), timeout=5).neighbors
            assert time.monotonic() - started < 1.0
            extra = reflection.ServerReflectionInfo(idle_requests())
            with pytest.raises(grpc.RpcError) as refused:
                next(extra)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            for stream in held:
                stream.cancel()
            gate.set()
    finally:
        server.stop(0)


def test_one_client_cannot_hold_every_stream(index_dir):
    """Health Watch needs no token: one client opening Watch after Watch used to take
    every --max-streams slot, and nobody else could watch."""
    server = _start(index_dir, workers=2, max_streams=6, max_streams_per_client=2)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            held = [health.Watch(health_pb2.HealthCheckRequest()) for _ in range(2)]
            for stream in held:
                assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
            third = health.Watch(health_pb2.HealthCheckRequest())
            with pytest.raises(grpc.RpcError) as refused:
                next(third)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "the most one client may" in refused.value.details()
            assert server.metrics.open_streams._value.get() == 2  # 4 left for the others
            held.pop().cancel()  # a slot of this client's comes back when a stream ends
            deadline = time.monotonic() + 5
            while server.metrics.open_streams._value.get() != 1:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            again = health.Watch(health_pb2.HealthCheckRequest())
            assert next(again).status == health_pb2.HealthCheckResponse.SERVING
            again.cancel()
            held[0].cancel()
    finally:
        server.stop(0)


def test_calls_beyond_admission_are_refused_at_once(index_dir):
    server = _start(index_dir, workers=1, max_streams=1, max_queued=0, limits=WIDE)
    long_texts = ["improve the performance of the parser module " * 10] * 64
    codes: list[grpc.StatusCode] = []
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            futures = [
                stub.SearchBatch.future(pb.SearchBatchRequest(texts=long_texts, k=3), timeout=60)
                for _ in range(6)
            ]
            for future in futures:
                try:
                    future.result()
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as error:
                    codes.append(error.code())
    finally:
        server.stop(0)
    assert grpc.StatusCode.OK in codes
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert ServerConfig(index_dir=index_dir).request_memory_bound > 0


def _server_cpu(server: SearchServer) -> float:
    """CPU seconds of this process (the in-process server) and its encoding processes."""
    import os

    seconds = time.process_time()
    for pid in server.batcher.encoders.pids if server.batcher.encoders else []:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        seconds += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return seconds


def test_work_stops_soon_after_the_deadline(index_dir):
    """An abandoned call costs at most the piece being encoded: after its
    DEADLINE_EXCEEDED the server burns about one piece of CPU, not the rest of the
    call's texts, and an ordinary Search is answered at once."""
    from siamese_search.server.batching import BatchSettings

    # the default batching: pieces are encoded in the encoding processes
    server = _start(index_dir, limits=WIDE, batching=BatchSettings())
    piece_texts = server.config.batching.piece_texts
    texts = [f"improve the performance of module {i} " * 30 for i in range(12 * piece_texts)]
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            started, cpu_started = time.monotonic(), _server_cpu(server)
            stub.SearchBatch(pb.SearchBatchRequest(texts=texts[:piece_texts], k=3), timeout=60)
            piece = time.monotonic() - started  # one piece of work, measured
            piece_cpu = _server_cpu(server) - cpu_started
            with pytest.raises(grpc.RpcError) as late:
                stub.SearchBatch(pb.SearchBatchRequest(texts=texts, k=3), timeout=0.3)
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            cpu_started = _server_cpu(server)
            time.sleep(12 * piece)  # the time the whole call would have taken
            burned = _server_cpu(server) - cpu_started
            started = time.monotonic()
            stub.Search(pb.SearchRequest(text="fix the parser", k=3), timeout=60)
            waited = time.monotonic() - started
        # the whole call is 12 pieces; after its deadline the server finished at most
        # the piece it was on
        assert burned < 2 * piece_cpu + 0.2, (burned, piece_cpu)
        assert waited < piece, (waited, piece)
    finally:
        server.stop(0)


def test_token_limits_are_checked_and_reported(index_dir):
    limits = Limits(max_text_chars=5_000, max_text_tokens=50, max_call_tokens=120)
    server = _start(index_dir, limits=limits)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            with pytest.raises(grpc.RpcError) as long:
                stub.Search(pb.SearchRequest(text="fix the parser " * 30, k=3))
            assert long.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "tokens; the limit is 50 a text" in long.value.details()
            batch = pb.SearchBatchRequest(texts=["fix the parser crash " * 5] * 8, k=3)
            with pytest.raises(grpc.RpcError) as many:
                stub.SearchBatch(batch)
            assert "over 120 tokens together" in many.value.details()
            info = stub.GetInfo(pb.GetInfoRequest())
            assert (info.max_text_tokens, info.max_call_tokens) == (50, 120)
    finally:
        server.stop(0)


@pytest.mark.slow  # restarts and stalls a server for seconds
def test_readiness_is_honest_and_names_the_cause(tmp_path, trained_model, model, sample_train):
    from siamese_search.trainer.cli import main as train_main

    other = tmp_path / "other-model"
    assert (
        train_main(
            ["--data", str(sample_train), "--label-column", "class", "--out", str(other)]
            + ["--no-fine-tune", "--steps", "3", "--ensemble", "1", "--seed", "5", "--quiet"]
        )
        == 0
    )
    index_dir = tmp_path / "index"
    build_index(index_dir, load_model(other), sample_train, COLUMNS, QUIET)  # another model
    server = _start(index_dir, model_dir=trained_model, reload_interval=0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            assert _status(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
            stub = pb_grpc.SearchServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.Search(pb.SearchRequest(text="fix", k=3))
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "was built with model" in refused.value.details()
            replace = BuildOptions(show_progress=False, replace=True)
            build_index(index_dir, model, sample_train, COLUMNS, replace)
            assert server.holder.reload().changed
            assert _status(channel) == health_pb2.HealthCheckResponse.SERVING
            assert stub.Search(pb.SearchRequest(text="fix", k=3)).index_version == "000002"
    finally:
        server.stop(0)


def test_reload_watcher_survives_a_bad_current_and_reports_it(tmp_path, model, sample_train):
    index_dir = tmp_path / "index"
    build_index(index_dir, model, sample_train, COLUMNS, QUIET)
    server = _start(index_dir, reload_interval=0.05)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            (index_dir / layout.CURRENT).write_bytes(b"\xff\xfe\x00garbage")
            deadline = time.monotonic() + 10
            while not stub.GetInfo(pb.GetInfoRequest()).last_reload_error:
                assert time.monotonic() < deadline, "the bad CURRENT was never reported"
                time.sleep(0.05)
            info = stub.GetInfo(pb.GetInfoRequest())
            assert "CURRENT" in info.last_reload_error and info.last_reload_error_at
            assert info.index_version == "000001"  # still serving
            assert stub.Search(pb.SearchRequest(text="fix", k=3)).neighbors
            replace = BuildOptions(show_progress=False, replace=True)
            build_index(index_dir, model, sample_train, COLUMNS, replace)  # rewrites CURRENT
            while stub.GetInfo(pb.GetInfoRequest()).index_version != "000002":
                assert time.monotonic() < deadline + 20, "the watcher stopped reloading"
                time.sleep(0.05)
            assert stub.GetInfo(pb.GetInfoRequest()).last_reload_error == ""
    finally:
        server.stop(0)


def test_concurrent_calls_share_a_batch_and_keep_their_own_answers(index_dir, model):
    """Dynamic batching: calls arriving together are encoded and searched as one
    batch, yet each gets exactly the answer it would get alone, and its own status
    (an unknown label fails only the call that sent it)."""
    from siamese_search.indexer.store import open_index
    from siamese_search.server.batching import BatchSettings

    server = _start(index_dir, batching=BatchSettings(max_batch_texts=64, max_wait=0.3, threads=1))
    texts = [f"fix crash number {i} in the parser" for i in range(6)]
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            searches = [
                stub.Search.future(pb.SearchRequest(text=text, k=i + 1), timeout=30)
                for i, text in enumerate(texts)
            ]
            filtered = stub.Search.future(
                pb.SearchRequest(text=texts[0], k=3, labels=["2"]), timeout=30
            )
            unknown = stub.Search.future(
                pb.SearchRequest(text=texts[0], k=3, labels=["no-such-label"]), timeout=30
            )
            embedded = stub.Embed.future(pb.EmbedRequest(texts=texts[:2]), timeout=30)
            predicted = stub.Predict.future(pb.PredictRequest(text=texts[1], k=5), timeout=30)
            answers = [future.result() for future in searches]
            with pytest.raises(grpc.RpcError) as refused:
                unknown.result()
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND
            filtered_hits = filtered.result().neighbors
            vectors = embedded.result().embeddings
            prediction = predicted.result()
    finally:
        server.stop(0)
    registry = server.metrics.registry
    batches = registry.get_sample_value("siamese_batch_texts_count")
    batched_texts = registry.get_sample_value("siamese_batch_texts_sum")
    assert batched_texts / batches > 2, (batches, batched_texts)  # calls did share batches

    with open_index(index_dir, model=model) as index:
        alone = index.search(model.embed(texts), k=6)
        for i, answer in enumerate(answers):
            assert [n.id for n in answer.neighbors] == [h.id for h in alone[i][: i + 1]]
        expected = index.search(model.embed(texts[:1]), k=3, labels=["2"])[0]
        assert [n.id for n in filtered_hits] == [h.id for h in expected]
        assert {n.label for n in filtered_hits} == {"2"}
        assert [n.id for n in prediction.neighbors] == [h.id for h in alone[1][:5]]
    np.testing.assert_allclose([list(v.values) for v in vectors], model.embed(texts[:2]), atol=1e-5)


def test_requests_refused_before_the_service_are_counted(index_dir):
    """A request over the message size limit is refused by gRPC's core, before any
    interceptor; channelz's count of it reaches /metrics."""
    server = _start(index_dir, limits=Limits(max_batch=2, max_text_chars=100))
    limit = server.config.limits.max_request_bytes
    try:
        options = [("grpc.max_send_message_length", 4 * limit)]
        with grpc.insecure_channel(f"127.0.0.1:{server.port}", options=options) as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            stub.Search(pb.SearchRequest(text="fix the parser", k=3))
            oversize = pb.SearchBatchRequest(texts=["x" * (limit // 2)] * 3, k=3)
            for _ in range(2):
                with pytest.raises(grpc.RpcError) as refused:
                    stub.SearchBatch(oversize)
                assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        registry = server.metrics.registry  # read while the server (and its counts) live
        seen = registry.get_sample_value(
            "siamese_requests_total", {"method": "SearchBatch", "code": "RESOURCE_EXHAUSTED"}
        )
        assert seen is None  # the service never saw them, but the core counted them
        assert registry.get_sample_value("siamese_grpc_calls_total", {"result": "failed"}) == 2
        assert registry.get_sample_value("siamese_grpc_calls_total", {"result": "succeeded"}) == 1
    finally:
        server.stop(0)
