"""Many collections behind one server (issue 37), on a real gRPC server and its REST
gateway: each collection answers as a server of its own would, collections are made,
filled, searched and dropped over the API, a broken one leaves the others serving, a
busy one does not starve another, and calls that name none reach the default."""

from __future__ import annotations

import http.client
import json
import shutil
import statistics
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from siamese_search.client import Example, SearchClient
from siamese_search.core.model_artifact import load_model
from siamese_search.core.tables import Columns, Table
from siamese_search.indexer.build import BuildOptions, build_index
from siamese_search.server.app import SearchServer
from siamese_search.server.batching import FairQueue
from siamese_search.server.config import Limits, ServerConfig
from siamese_search.server.generated import search_pb2 as pb
from siamese_search.server.generated import search_pb2_grpc as pb_grpc
from tests.conftest import encode_in_server

COLUMNS = Columns(text="text", label="class")
ADMIN = "admin-token-0123456789"
TEST_ROWS = 3277  # data/commit-messages/test.csv
QUERIES = ["Fix crash when saving a file", "Improve performance of the parser", "zebra"]


@pytest.fixture(scope="module")
def root(tmp_path_factory, trained_model, tuned_model, sample_train, sample_test):
    """Two index directories under one root, with different models: `commits` (the
    small model, training texts) and `tuned` (the fine-tuned model, test texts)."""
    directory = tmp_path_factory.mktemp("collections")
    quiet = BuildOptions(show_progress=False)
    build_index(directory / "commits", load_model(trained_model), sample_train, COLUMNS, quiet)
    build_index(directory / "tuned", load_model(tuned_model), sample_test, COLUMNS, quiet)
    return directory


def _config(**settings) -> ServerConfig:
    defaults = dict(
        index_dir=None,
        port=0,
        http_port=0,
        limits=Limits(max_k=20, max_batch=8),
        batching=encode_in_server(),
        reload_interval=0,
    )
    return ServerConfig(**{**defaults, **settings})


def _answers(target: str, collection: str = "") -> list:
    with SearchClient(target, collection=collection) as client:
        found = [
            [(n.id, round(n.score, 4)) for n in client.search(q, k=5).neighbors] for q in QUERIES
        ]
        labels = [client.predict(q, k=5).label for q in QUERIES]
    return [found, labels]


def _http(port: int, verb: str, path: str, body=None, token: str | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        payload = None if body is None else json.dumps(body).encode()
        connection.request(verb, path, body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


@pytest.mark.slow  # servers with two models: CI (make test-all)
def test_each_collection_answers_as_its_own_server_would(root):
    alone = {}
    for name in ("commits", "tuned"):
        single = SearchServer(_config(index_dir=root / name)).start()
        try:
            alone[name] = _answers(f"127.0.0.1:{single.port}")
        finally:
            single.stop(0)
    server = SearchServer(_config(collections_dir=root, default_collection="commits")).start()
    try:
        target = f"127.0.0.1:{server.port}"
        assert _answers(target, "commits") == alone["commits"]
        assert _answers(target, "tuned") == alone["tuned"]
        assert alone["commits"] != alone["tuned"]  # two models, two indexes
        # a client that names no collection (written before collections) gets the default
        assert _answers(target) == alone["commits"]
        with SearchClient(target) as client:
            listed = {c.name: c for c in client.collections()}
            assert set(listed) == {"commits", "tuned"}
            assert listed["commits"].is_default and not listed["tuned"].is_default
            assert listed["tuned"].health == "SERVING" and listed["tuned"].count == TEST_ROWS
            assert listed["commits"].model_fingerprint != listed["tuned"].model_fingerprint
        # the map (the console's): every point is where the projection puts its vector
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            mapped = stub.GetMap(pb.GetMapRequest(collection="tuned"))
            assert mapped.count == TEST_ROWS and mapped.sampled == 2000 == len(mapped.points)
            again = stub.GetMap(pb.GetMapRequest(collection="tuned"))
            assert [p.id for p in again.points] == [p.id for p in mapped.points]  # cached
        with SearchClient(target, collection="tuned") as client:
            chosen = mapped.points[:5]
            stored = {e.id: e.text for e in client.get([p.id for p in chosen])}
            vectors = client.embed([stored[p.id] for p in chosen])
        mean, axes = np.array(mapped.mean), np.array([mapped.axis_x, mapped.axis_y])
        placed = (vectors - mean) @ axes.T
        assert placed == pytest.approx(np.array([[p.x, p.y] for p in chosen]), abs=2e-3)
        # REST: the collection in the path
        status, body = _http(
            server.http_port, "POST", "/v1/collections/tuned/search", {"text": QUERIES[0], "k": 5}
        )
        assert status == 200
        assert [(n["id"], round(n["score"], 4)) for n in body["neighbors"]] == alone["tuned"][0][0]
        status, body = _http(server.http_port, "GET", "/v1/collections/tuned/info")
        assert status == 200 and body["count"] == str(TEST_ROWS)
        # bad and unknown names
        with SearchClient(target) as client:
            for name, code in (
                ("../commits", grpc.StatusCode.INVALID_ARGUMENT),
                ("a/b", grpc.StatusCode.INVALID_ARGUMENT),
                ("nope", grpc.StatusCode.NOT_FOUND),
            ):
                with pytest.raises(grpc.RpcError) as refused:
                    client._call(
                        client._stub.Search, pb.SearchRequest(text="x", k=1, collection=name), 10
                    )
                assert refused.value.code() == code, name
        assert (
            _http(server.http_port, "POST", "/v1/collections/nope/search", {"text": "x", "k": 1})[0]
            == 404
        )
    finally:
        server.stop(0)


@pytest.mark.slow  # servers with two models: CI (make test-all)
def test_create_fill_search_and_drop_over_grpc_and_rest(root, tmp_path, trained_model):
    served = tmp_path / "root"
    shutil.copytree(root, served)
    server = SearchServer(
        _config(collections_dir=served, default_collection="commits", admin_token=ADMIN)
    ).start()
    target = f"127.0.0.1:{server.port}"
    try:
        with SearchClient(target, token=ADMIN) as admin:
            made = admin.create_collection("support", str(trained_model), labels=True)
            assert made.name == "support" and made.count == 0 and made.health == "SERVING"
            with pytest.raises(grpc.RpcError) as again:
                admin.create_collection("support", str(trained_model))
            assert again.value.code() == grpc.StatusCode.ALREADY_EXISTS
            with pytest.raises(grpc.RpcError) as no_model:
                admin.create_collection("other", str(tmp_path / "no-model"))
            assert no_model.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.RpcError) as bad:
                admin.create_collection("../escape", str(trained_model))
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert not (served.parent / "escape").exists()
        with SearchClient(target, token=ADMIN, collection="support") as support:
            support.upsert(
                [
                    Example("The printer in room 4 is jammed", "hardware", "t1"),
                    Example("I cannot log in to the VPN", "access", "t2"),
                ],
                wait=True,
            )
            assert support.search("paper jam in the printer", k=1).neighbors[0].id == "t1"
            assert support.info().count == 2
        with SearchClient(target, token=ADMIN) as plain:  # the default one did not change
            assert plain.info().count == 100
        # REST: create, fill, search, drop
        status, body = _http(
            server.http_port,
            "POST",
            "/v1/collections",
            {"name": "web", "modelDirectory": str(trained_model), "labels": True},
            ADMIN,
        )
        assert status == 200 and body["name"] == "web"
        refused = _http(
            server.http_port,
            "POST",
            "/v1/collections",
            {"name": "web2", "modelDirectory": str(trained_model)},
        )
        assert refused[0] == 403  # an admin call without the admin token
        status, _ = _http(
            server.http_port,
            "POST",
            "/v1/collections/web/examples:upsert",
            {
                "examples": [{"id": "w1", "text": "The login page is slow", "label": "perf"}],
                "wait": True,
            },
            ADMIN,
        )
        assert status == 200
        status, body = _http(
            server.http_port,
            "POST",
            "/v1/collections/web/search",
            {"text": "slow login", "k": 3},
            ADMIN,
        )
        assert status == 200 and [n["id"] for n in body["neighbors"]] == ["w1"]
        status, body = _http(server.http_port, "DELETE", "/v1/collections/web", None, ADMIN)
        assert status == 200 and "web" not in body["remaining"]
        assert (
            _http(
                server.http_port, "POST", "/v1/collections/web/search", {"text": "x", "k": 1}, ADMIN
            )[0]
            == 404
        )
        # the default collection cannot be dropped; a dropped one's files go
        with SearchClient(target, token=ADMIN) as admin:
            with pytest.raises(grpc.RpcError) as default:
                admin.drop_collection("commits")
            assert default.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "support" not in admin.drop_collection("support")
            assert {c.name for c in admin.collections()} == {"commits", "tuned"}
        deadline = time.monotonic() + 10
        while (served / "support").exists() or (served / "web").exists():
            assert time.monotonic() < deadline, "a dropped collection's files stayed"
            time.sleep(0.05)
    finally:
        server.stop(0)


@pytest.mark.slow  # servers with two models: CI (make test-all)
def test_a_broken_collection_leaves_the_others_serving(root, tmp_path, trained_model):
    served = tmp_path / "root"
    shutil.copytree(root, served)
    # `broken` was built with a model that is gone since: it cannot serve
    broken_model = tmp_path / "gone-model"
    shutil.copytree(trained_model, broken_model)
    _build_with_model(served / "broken", broken_model)
    shutil.rmtree(broken_model)
    server = SearchServer(_config(collections_dir=served, default_collection="commits")).start()
    try:
        target = f"127.0.0.1:{server.port}"
        with SearchClient(target) as client:
            listed = {c.name: c for c in client.collections()}
            assert listed["broken"].health == "NOT_SERVING"
            assert "gone-model" in listed["broken"].error
            assert listed["commits"].health == listed["tuned"].health == "SERVING"
            assert client.search("fix a crash", k=3).neighbors
        with SearchClient(target, collection="tuned") as tuned:
            assert tuned.search("fix a crash", k=3).neighbors
        with SearchClient(target, collection="broken") as broken:
            with pytest.raises(grpc.RpcError) as down:
                broken.search("fix a crash", k=3)
            assert down.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "gone-model" in down.value.details()
        with grpc.insecure_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = health_pb2.HealthCheckResponse

            def check(service: str):
                return health.Check(health_pb2.HealthCheckRequest(service=service)).status

            assert check("collection/broken") == status.NOT_SERVING
            assert check("collection/tuned") == status.SERVING
            assert check("") == status.SERVING  # the default collection serves
    finally:
        server.stop(0)


def _build_with_model(index_dir: Path, model_dir: Path) -> None:
    from tests.conftest import SAMPLE

    build_index(
        index_dir,
        load_model(model_dir),
        SAMPLE / "train.csv",
        COLUMNS,
        BuildOptions(show_progress=False),
    )


def test_the_batch_queue_takes_collections_in_turn():
    class Serving:
        def __init__(self, lane):
            self.lane = lane

    class Job:
        def __init__(self, lane, n):
            self.serving, self.n = Serving(lane), n

    queue = FairQueue()
    for n in range(5):
        queue.put(Job("busy", n))
    queue.put(Job("quiet", 0))
    queue.put(Job("busy", 5))
    queue.put(Job("other", 0))
    taken = []
    while not queue.empty():
        job = queue.get_nowait()
        taken.append((job.serving.lane, job.n))
    assert taken[:3] == [("busy", 0), ("quiet", 0), ("other", 0)]
    assert [n for lane, n in taken if lane == "busy"] == [0, 1, 2, 3, 4, 5]


@pytest.mark.slow  # servers with two models: CI (make test-all)
def test_a_busy_collection_does_not_starve_another(root):
    """One collection flooded by many clients with large calls; a probe call on the
    other one waits for a batch, not behind the flood, as a probe on the busy one does."""
    server = SearchServer(
        _config(
            collections_dir=root,
            default_collection="commits",
            workers=8,
            limits=Limits(max_k=20, max_batch=64),
            batching=encode_in_server(),
        )
    ).start()
    target = f"127.0.0.1:{server.port}"
    stop = threading.Event()
    # each flood call is 4 batch jobs (16 texts a job): a deep queue for the busy one
    texts = [f"Refactor the module number {i} of the parser and its tests" for i in range(64)]

    def flood():
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            while not stop.is_set():
                try:
                    stub.SearchBatch(
                        pb.SearchBatchRequest(texts=texts, k=10, collection="commits"), timeout=30
                    )
                except grpc.RpcError:
                    time.sleep(0.01)  # refused beyond its share: a client backs off

    def probe(collection: str) -> float:
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            started = time.perf_counter()
            while True:
                try:
                    stub.Search(
                        pb.SearchRequest(text="fix a crash", k=3, collection=collection), timeout=30
                    )
                    return time.perf_counter() - started
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    time.sleep(0.01)

    threads = [threading.Thread(target=flood, daemon=True) for _ in range(12)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1.0)  # the flood is on
        busy, quiet = [], []
        for _ in range(8):
            busy.append(probe("commits"))
            quiet.append(probe("tuned"))
        assert statistics.median(quiet) < statistics.median(busy) / 2, (busy, quiet)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        server.stop(0)


def _commits_server(tmp_path, trained_model, sample_train) -> SearchServer:
    """A server of one collection, `commits` (the sample's training texts, the
    default), under a root where the API makes more."""
    served = tmp_path / "root"
    quiet = BuildOptions(show_progress=False)
    build_index(served / "commits", load_model(trained_model), sample_train, COLUMNS, quiet)
    return SearchServer(
        _config(collections_dir=served, default_collection="commits", admin_token=ADMIN)
    ).start()


def test_a_rest_body_is_checked_against_the_collection_it_names(
    tmp_path, trained_model, sample_train
):
    """The REST gateway checks a body against the schemas of the collection it names
    (its path, or its `collection` field), not the default one's: an unlabelled
    collection takes examples without labels, and a filter on a field only it holds."""
    server = _commits_server(tmp_path, trained_model, sample_train)
    port = server.http_port
    try:
        status, _ = _http(
            port,
            "POST",
            "/v1/collections",
            {"name": "notes", "modelDirectory": str(trained_model)},
            ADMIN,
        )
        assert status == 200
        notes = [
            {
                "id": "n1",
                "text": "The printer in room 4 is jammed",
                "metadata": {"topic": "printers"},
            },
            {"id": "n2", "text": "The VPN drops every hour", "metadata": {"topic": "network"}},
        ]
        status, body = _http(
            port,
            "POST",
            "/v1/collections/notes/examples:upsert",
            {"examples": notes, "wait": True},
            ADMIN,
        )
        assert status == 200, body
        on_topic = {"must": [{"key": "topic", "match": {"value": "network"}}]}
        query = {"text": "paper jam in the printer", "k": 2, "filter": on_topic}
        status, body = _http(port, "POST", "/v1/collections/notes/search", query, ADMIN)
        assert status == 200 and [n["id"] for n in body["neighbors"]] == ["n2"], body
        status, body = _http(port, "POST", "/v1/search", {**query, "collection": "notes"}, ADMIN)
        assert status == 200 and [n["id"] for n in body["neighbors"]] == ["n2"], body
        # the default collection holds no such field, and takes no unlabelled example
        status, body = _http(port, "POST", "/v1/search", query, ADMIN)
        assert status == 400 and "topic" in body["message"], body
        status, body = _http(
            port, "POST", "/v1/examples:upsert", {"examples": notes[:1], "wait": True}, ADMIN
        )
        assert status == 400 and "label" in body["message"], body
        # what a client reads before it writes: each collection's own document
        status, notes_document = _http(port, "GET", "/openapi.json?collection=notes")
        assert status == 200 and '"topic"' in json.dumps(notes_document)
        status, default_document = _http(port, "GET", "/openapi.json")
        assert status == 200 and '"topic"' not in json.dumps(default_document)
        for query, code in (("collection=nope", 404), ("collection=..%2Fx", 400), ("k=1", 400)):
            status, body = _http(port, "GET", f"/openapi.json?{query}")
            assert status == code and "collection" in body["message"], (query, body)
    finally:
        server.stop(0)


def test_concurrent_creates_of_one_name_make_one_collection(tmp_path, trained_model):
    """Creates of one name at once: one makes it, the others are told ALREADY_EXISTS
    (not INVALID_ARGUMENT from the losing builds), and the one made serves."""
    served = tmp_path / "root"
    served.mkdir()
    server = SearchServer(_config(collections_dir=served, admin_token=ADMIN)).start()
    target = f"127.0.0.1:{server.port}"
    try:
        for name in ("twin-0", "twin-1"):
            outcomes: list = []
            start = threading.Barrier(4)

            def create(name=name, outcomes=outcomes, start=start):
                with SearchClient(target, token=ADMIN) as admin:
                    start.wait()
                    try:
                        outcomes.append(admin.create_collection(name, str(trained_model)).name)
                    except grpc.RpcError as error:
                        outcomes.append(error.code())

            threads = [threading.Thread(target=create) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sorted(outcomes, key=str) == sorted(
                [name] + [grpc.StatusCode.ALREADY_EXISTS] * 3, key=str
            ), outcomes
            with SearchClient(target, token=ADMIN, collection=name) as client:
                assert client.info().count == 0
    finally:
        server.stop(0)


def test_a_create_that_another_server_wins_meanwhile_is_already_exists(tmp_path, trained_model):
    """Two servers on one collections root: the other makes the name while this one
    builds it (its directory appears before this one's rename). This one's rename is
    moved the winner's directory aside and deleted it (the other server's acknowledged
    writes with it); it now answers ALREADY_EXISTS, leaving the winner's index whole
    and no staging directory behind."""
    from siamese_search.indexer import layout

    served = tmp_path / "root"
    served.mkdir()
    winner = tmp_path / "winner"
    empty = Table(texts=[], labels=[], ids=[])
    columns = Columns(text="text", label="label", id="id")
    build_index(
        winner, load_model(trained_model), empty, columns, BuildOptions(show_progress=False)
    )
    server = SearchServer(_config(collections_dir=served, admin_token=ADMIN)).start()

    def the_other_server_renames_its_own_into_place(stage: str) -> None:
        if stage == "after-current" and not (served / "raced").exists():
            shutil.copytree(winner, served / "raced")

    layout.CHECKPOINT_OBSERVERS.append(the_other_server_renames_its_own_into_place)
    try:
        with SearchClient(f"127.0.0.1:{server.port}", token=ADMIN) as admin:
            with pytest.raises(grpc.RpcError) as refused:
                admin.create_collection("raced", str(trained_model))
        assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS, refused.value.details()
        assert "another server" in refused.value.details()
        assert sorted(p.name for p in served.iterdir()) == ["raced"]
        # the winner's index, not replaced by this one's (its files were deleted)
        assert layout.recorded_index_id(served / "raced") == layout.recorded_index_id(winner)
    finally:
        layout.CHECKPOINT_OBSERVERS.remove(the_other_server_renames_its_own_into_place)
        server.stop(0)


def test_a_start_removes_what_a_killed_create_left(tmp_path, trained_model, monkeypatch):
    """A server killed while it built a collection leaves its staging directory
    (`.tmp-NAME-*`); the next start removes it, and not one another server is still
    writing into the same root."""
    from siamese_search.core import atomic
    from tests.test_atomic import _kill, _writing

    monkeypatch.setattr(atomic, "LEFTOVER_SECONDS", 0.0)
    served = tmp_path / "root"
    served.mkdir()
    killed, killed_staging = _writing(served / "half")
    _kill(killed)
    living, living_staging = _writing(served / "other")  # another server's create
    try:
        server = SearchServer(_config(collections_dir=served, admin_token=ADMIN)).start()
        try:
            assert sorted(p.name for p in served.iterdir()) == [living_staging]
            with SearchClient(f"127.0.0.1:{server.port}", token=ADMIN) as admin:
                assert admin.create_collection("half", str(trained_model)).name == "half"
        finally:
            server.stop(0)
    finally:
        _kill(living)
    assert killed_staging not in {p.name for p in served.iterdir()}


def test_an_acknowledged_drop_stays_dropped_through_a_restart(tmp_path, trained_model):
    """A drop is acknowledged at once and its files go once its in-flight calls are
    done. A server stopped (or killed) in between used to leave the directory whole,
    and the next start served the dropped collection again; now the drop is marked on
    disk before it is acknowledged, and the next start removes what the last one left."""
    served = tmp_path / "root"
    served.mkdir()
    first = SearchServer(_config(collections_dir=served, admin_token=ADMIN)).start()
    held = None
    try:
        with SearchClient(f"127.0.0.1:{first.port}", token=ADMIN) as admin:
            admin.create_collection("kept", str(trained_model))
            admin.create_collection("gone", str(trained_model))
            held = first.collections.get("gone").holder.acquire()  # a call in flight
            assert held is not None
            assert "gone" not in admin.drop_collection("gone")
        assert (served / "gone").is_dir(), "the in-flight call still reads its files"
    finally:
        first.stop(0)
    again = SearchServer(_config(collections_dir=served, admin_token=ADMIN)).start()
    try:
        with SearchClient(f"127.0.0.1:{again.port}", token=ADMIN) as admin:
            assert {c.name for c in admin.collections()} == {"kept"}
        deadline = time.monotonic() + 10
        while (served / "gone").exists() or any(served.glob(".dropped-*")):
            assert time.monotonic() < deadline, "the dropped collection's files stayed"
            time.sleep(0.05)
        assert sorted(p.name for p in served.iterdir()) == ["kept"]
    finally:
        again.stop(0)
        if held is not None:
            held.exit()


def test_a_drop_waits_for_a_writer_and_refuses_every_later_one(
    tmp_path, trained_model, sample_train, monkeypatch
):
    """A siamese-index job writing to a collection's directory: the drop waits for it
    (here it holds on: UNAVAILABLE, still served), and once the drop is acknowledged
    no writer can publish there; a later `siamese-index add` used to exit 0 with a
    version that went with the files."""
    from siamese_search.core.errors import UserError
    from siamese_search.indexer import layout
    from siamese_search.indexer.build import add_to_index
    from siamese_search.server import collection_dirs

    monkeypatch.setattr(collection_dirs, "DROP_WAIT_SECONDS", 0.5)
    served = tmp_path / "root"
    served.mkdir()
    server = SearchServer(_config(collections_dir=served, admin_token=ADMIN)).start()
    held = None
    try:
        with SearchClient(f"127.0.0.1:{server.port}", token=ADMIN) as admin:
            admin.create_collection("busy", str(trained_model))
            with layout.writer_lock(served / "busy"):  # a job mid-write
                with pytest.raises(grpc.RpcError) as refused:
                    admin.drop_collection("busy")
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "being written" in refused.value.details()
            assert "busy" in {c.name for c in admin.collections()}
            held = server.collections.get("busy").holder.acquire()  # keeps its files
            admin.drop_collection("busy")
        with pytest.raises(UserError, match="was dropped as a collection"):
            add_to_index(
                served / "busy",
                load_model(trained_model),
                sample_train,
                Columns(label="class"),
                BuildOptions(show_progress=False),
            )
        assert layout.current_version(served / "busy") == "000001"
    finally:
        if held is not None:
            held.exit()
        server.stop(0)


def test_a_page_token_is_refused_by_another_collection(tmp_path, trained_model, sample_train):
    """Version numbers start at 1 in every index, so a page token names its index too:
    one collection's token sent to another is INVALID_ARGUMENT, not a page of the other
    one's rows read from the first one's position."""
    server = _commits_server(tmp_path, trained_model, sample_train)
    target = f"127.0.0.1:{server.port}"
    try:
        with SearchClient(target, token=ADMIN) as commits:
            commits.create_collection("other", str(trained_model), labels=True)
            commits.upsert([Example("one more row", "1", "extra")], wait=True)
            first = commits.scroll(limit=2)
            assert first.next_page_token
            second = commits.scroll(limit=2, page_token=first.next_page_token)
            assert [e.id for e in second.examples] == ["2", "3"]
            # a token without the index's part (an older server's) still reads on
            version, position, _ = first.next_page_token.split(".")
            older = commits.scroll(limit=2, page_token=f"{version}.{position}")
            assert [e.id for e in older.examples] == ["2", "3"]
        with SearchClient(target, token=ADMIN, collection="other") as other:
            other.upsert([Example(f"row {i}", "1", f"o{i}") for i in range(5)], wait=True)
            assert other.info().index_version == second.index_version  # the same number
            with pytest.raises(grpc.RpcError) as foreign:
                other.scroll(limit=2, page_token=first.next_page_token)
            assert foreign.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "another index" in foreign.value.details()
    finally:
        server.stop(0)
