"""Metadata and filters served (issue 36): Upsert takes metadata, every neighbour
carries it, Search / Predict take a filter, Search takes an id, GetExamples and Scroll
read what is stored; over gRPC and REST, with bad filters answered INVALID_ARGUMENT."""

from __future__ import annotations

import http.client
import json

import grpc
import pytest
from google.protobuf import struct_pb2

from siamese_search.core.model_artifact import load_model
from siamese_search.indexer.build import BuildOptions, build_index
from siamese_search.server.app import SearchServer
from siamese_search.server.config import Limits, ServerConfig
from siamese_search.server.generated import search_pb2 as pb
from siamese_search.server.generated import search_pb2_grpc as pb_grpc
from tests.conftest import encode_in_server
from tests.test_metadata import COLUMNS, _jsonl, _rows


@pytest.fixture(scope="module")
def served(tmp_path_factory, trained_model):
    root = tmp_path_factory.mktemp("served-metadata")
    rows = _rows(120)
    build_index(
        root / "index",
        load_model(trained_model),
        _jsonl(root / "rows.jsonl", rows),
        COLUMNS,
        BuildOptions(show_progress=False),
    )
    config = ServerConfig(
        index_dir=root / "index",
        port=0,
        http_port=0,
        limits=Limits(max_k=20, max_batch=16),
        batching=encode_in_server(),
    )
    server = SearchServer(config).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield server, pb_grpc.SearchServiceStub(channel), {r["id"]: r for r in rows}
    channel.close()
    server.stop(0)


def _rest(server, path: str, body: dict):
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _filter(spec: dict) -> pb.Filter:
    from google.protobuf import json_format

    return json_format.ParseDict(spec, pb.Filter())


def test_upserted_metadata_comes_back_and_filters_see_it(served):
    server, stub, _ = served
    fields = struct_pb2.Struct()
    fields.update({"repo": "mobile", "year": 2026, "tags": ["ios", "swift"]})
    written = stub.Upsert(
        pb.UpsertRequest(
            examples=[
                pb.Example(id="m1", text="Fix the iOS login crash", label="1", metadata=fields)
            ],
            wait=True,
        )
    )
    assert written.committed
    where = _filter({"must": [{"key": "repo", "match": {"value": "mobile"}}]})
    found = stub.Search(pb.SearchRequest(text="login crash", k=5, filter=where)).neighbors
    assert [n.id for n in found] == ["m1"]
    from google.protobuf import json_format

    assert json_format.MessageToDict(found[0].metadata) == {
        "repo": "mobile",
        "year": 2026,
        "tags": ["ios", "swift"],
    }
    status, body = _rest(
        server,
        "/v1/search",
        {
            "text": "login crash",
            "k": 3,
            "filter": {"must": [{"key": "tags", "match": {"any": ["swift"]}}]},
        },
    )
    assert status == 200 and [n["id"] for n in body["neighbors"]] == ["m1"]
    assert body["neighbors"][0]["metadata"]["year"] == 2026


def test_filters_limit_search_and_predict_over_grpc_and_rest(served):
    server, stub, rows = served
    spec = {
        "must": [{"key": "year", "range": {"gte": 2021}}],
        "must_not": [{"key": "repo", "match": {"value": "core"}}],
    }
    found = stub.Search(pb.SearchRequest(text="Fix the parser", k=10, filter=_filter(spec)))
    upserted = {"m1": {"year": 2026, "repo": "mobile"}}  # the test above wrote it
    for neighbor in found.neighbors:
        row = rows.get(neighbor.id) or upserted[neighbor.id]
        assert row["year"] >= 2021 and row.get("repo") != "core"
    status, body = _rest(server, "/v1/search", {"text": "Fix the parser", "k": 10, "filter": spec})
    assert status == 200
    assert [n["id"] for n in body["neighbors"]] == [n.id for n in found.neighbors]
    only_two = {"must": [{"key": "label", "match": {"value": "2"}}]}
    predicted = stub.Predict(
        pb.PredictRequest(text="Fix the parser", k=5, filter=_filter(only_two))
    )
    assert predicted.voted_label == "2" and all(n.label == "2" for n in predicted.neighbors)
    status, body = _rest(
        server, "/v1/predict", {"text": "Fix the parser", "k": 5, "filter": only_two}
    )
    assert status == 200 and body["votedLabel"] == "2"


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"must": [{"key": "author", "match": {"value": "x"}}]}, "no field 'author'"),
        ({"must": [{"key": "repo", "range": {"gt": 1}}]}, "not numbers; use match"),
        ({"must": [{"key": "repo"}]}, "exactly one of match or range"),
    ],
)
def test_bad_filters_are_invalid_argument_with_what_to_fix(served, spec, message):
    server, stub, _ = served
    with pytest.raises(grpc.RpcError) as refused:
        stub.Search(pb.SearchRequest(text="fix", k=3, filter=_filter(spec)))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in refused.value.details()
    status, body = _rest(server, "/v1/search", {"text": "fix", "k": 3, "filter": spec})
    # REST refuses it by the served schema, which lists the index's fields
    assert status == 400 and "not a condition this index takes" in body["message"]


def test_a_not_finite_number_or_the_most_values_a_match_takes_are_answered(served):
    """A protobuf double may be NaN or infinite where JSON cannot: such metadata or a
    filter holding one is INVALID_ARGUMENT (it was INTERNAL); and a match of MAX_ANY
    values is answered (one SQL test per value was deeper than SQLite parses)."""
    from siamese_search.indexer.metadata import MAX_ANY

    server, stub, rows = served
    for number in (float("nan"), float("inf")):
        fields = struct_pb2.Struct()
        fields.update({"year": number})
        with pytest.raises(grpc.RpcError) as refused:
            stub.Upsert(
                pb.UpsertRequest(
                    examples=[pb.Example(id="nan", text="x", label="1", metadata=fields)]
                )
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not finite" in refused.value.details()
        where = pb.Filter(
            must=[
                pb.Filter(key="year", match=pb.Match(value=struct_pb2.Value(number_value=number)))
            ]
        )
        with pytest.raises(grpc.RpcError) as refused:
            stub.Search(pb.SearchRequest(text="fix", k=3, filter=where))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        bound = pb.Filter(must=[pb.Filter(key="year", range=pb.Range(gt=number))])
        with pytest.raises(grpc.RpcError) as refused:
            stub.Search(pb.SearchRequest(text="fix", k=3, filter=bound))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "finite" in refused.value.details(), refused.value.details()  # not "a str"
    years = sorted({row["year"] for row in rows.values()})
    wanted = [*years[:2], *range(10_000, 10_000 + MAX_ANY - 4), "core", True]
    spec = {"must": [{"key": "year", "match": {"any": wanted}}]}
    found = stub.Search(pb.SearchRequest(text="Fix the parser", k=20, filter=_filter(spec)))
    assert found.neighbors and all(rows[n.id]["year"] in years[:2] for n in found.neighbors)
    status, body = _rest(server, "/v1/search", {"text": "Fix the parser", "k": 20, "filter": spec})
    assert status == 200 and [n["id"] for n in body["neighbors"]] == [n.id for n in found.neighbors]


def test_lists_over_their_limits_are_refused_before_their_items_are_read(served):
    """A request-size filter of 50,000 conditions took 0.5 s of CPU to be converted to
    JSON before the limit of 8 was checked (metadata of 60,000 fields: 0.3 s for 64);
    the sizes are now read off the message first, so a long list is refused for its
    length even when its items hold a NaN (which converting them reports)."""
    from siamese_search.indexer.metadata import MAX_ANY, MAX_CONDITIONS, MAX_KEYS, MAX_LIST

    _, stub, _ = served
    nan = pb.Filter(key="year", range=pb.Range(gt=float("nan")))
    wide = pb.Filter(must=[pb.Filter(must=[nan] * (MAX_CONDITIONS + 1))])
    many = pb.Match(any=[struct_pb2.Value(number_value=float("nan"))] * (MAX_ANY + 1))
    searches = [
        (wide, f"filter.must[0].must has {MAX_CONDITIONS + 1} conditions"),
        (
            pb.Filter(should=[pb.Filter(key="year", match=many)]),
            f"filter.should[0].match.any has {MAX_ANY + 1} values",
        ),
    ]
    calls = [
        (lambda where=where: stub.Search(pb.SearchRequest(text="fix", k=3, filter=where)), message)
        for where, message in searches
    ]
    wide_fields, long_list = struct_pb2.Struct(), struct_pb2.Struct()
    wide_fields.update({f"f{i}": float("nan") for i in range(MAX_KEYS + 1)})
    long_list.update({"year": [float("nan")] * (MAX_LIST + 1)})
    for fields, message in [
        (wide_fields, f"examples[0].metadata has {MAX_KEYS + 1} fields"),
        (long_list, f"examples[0].metadata.year is a list of {MAX_LIST + 1} items"),
    ]:
        example = pb.Example(id="wide", text="fix", label="1", metadata=fields)
        calls.append((lambda e=example: stub.Upsert(pb.UpsertRequest(examples=[e])), message))
    for call, message in calls:
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in refused.value.details(), refused.value.details()


def test_a_field_name_is_at_most_256_characters_over_grpc_and_rest(served):
    server, stub, _ = served
    for name, fine in (("n" * 256, True), ("n" * 257, False)):
        example = {"id": f"key-{len(name)}", "text": "x", "label": "1", "metadata": {name: 1}}
        # wait: committed before the next test's scroll, whose versions it would prune
        body = {"examples": [example], "wait": True}
        status, body = _rest(server, "/v1/examples:upsert", body)
        assert (status == 200) is fine, body
        fields = struct_pb2.Struct()
        fields.update({name: 1})
        request = pb.UpsertRequest(
            examples=[pb.Example(id=example["id"], text="x", label="1", metadata=fields)],
            wait=True,
        )
        if fine:
            stub.Upsert(request)
            continue
        assert "the limit is 256" in body["message"]
        with pytest.raises(grpc.RpcError) as refused:
            stub.Upsert(request)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "the limit is 256" in refused.value.details()


def test_a_field_named_as_the_records_own_is_refused_over_grpc_and_rest(served):
    """`text` as well as `label` and `id`: an export writes them as columns (one field
    named `text`, once acknowledged, made every export of the index refuse it)."""
    server, stub, _ = served
    for name in ("id", "label", "text"):
        example = {"id": f"own-{name}", "text": "x", "label": "1", "metadata": {name: "v"}}
        status, body = _rest(server, "/v1/examples:upsert", {"examples": [example]})
        assert status == 400 and "but id, label, text" in body["message"], body
        fields = struct_pb2.Struct()
        fields.update({name: "v"})
        with pytest.raises(grpc.RpcError) as refused:
            stub.Upsert(
                pb.UpsertRequest(
                    examples=[pb.Example(id=f"own-{name}", text="x", label="1", metadata=fields)]
                )
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "the example's own field" in refused.value.details()


def test_search_by_id_get_and_scroll(served):
    server, stub, rows = served
    by_id = stub.Search(pb.SearchRequest(id="r7", k=5)).neighbors
    assert len(by_id) == 5 and "r7" not in [n.id for n in by_id]
    status, body = _rest(server, "/v1/search", {"id": "r7", "k": 5})
    assert status == 200 and [n["id"] for n in body["neighbors"]] == [n.id for n in by_id]
    status, body = _rest(server, "/v1/search", {"id": "nope", "k": 5})
    assert status == 404 and "no example with id" in body["message"]
    got = stub.GetExamples(pb.GetExamplesRequest(ids=["r9", "missing", "r2"], with_vectors=True))
    assert [e.id for e in got.examples] == ["r9", "r2"]
    assert got.examples[0].text == rows["r9"]["text"] and len(got.examples[0].vector) == 640
    status, body = _rest(server, "/v1/examples:get", {"ids": ["r3"]})
    assert status == 200 and body["examples"][0]["metadata"]["year"] == rows["r3"]["year"]
    seen, token = [], ""
    spec = {"must": [{"key": "repo", "match": {"value": "web"}}]}
    while True:
        status, page = _rest(
            server, "/v1/examples:scroll", {"filter": spec, "limit": 7, "pageToken": token}
        )
        assert status == 200 and len(page["examples"]) <= 7
        seen += [e["id"] for e in page["examples"]]
        token = page["nextPageToken"]
        if not token:
            break
    expected = {i for i, r in rows.items() if r.get("repo") == "web"}
    assert len(seen) == len(set(seen)) and set(seen) == expected
    status, body = _rest(server, "/v1/examples:scroll", {"pageToken": "garbage"})
    assert status == 400 and "pageToken" in body["message"]
    # a well-formed token naming a version the index never made
    status, body = _rest(server, "/v1/examples:scroll", {"pageToken": "999999.3"})
    assert status == 404 and "start the scroll again" in body["message"]


def test_a_scroll_reads_one_version_while_writes_go_on(served):
    """Every live row of the version the first page read comes exactly once, though
    rows are written between pages (the token names the version), and though every
    page is followed by a write: each commits a version and the index keeps the 3
    newest, so the scroll's version was pruned after 3 writes (NOT_FOUND) until the
    scroll held it (server/scroll_holds.py)."""
    server, stub, _ = served
    first = stub.Scroll(pb.ScrollRequest(limit=10))
    version = first.index_version
    seen = [e.id for e in first.examples]
    token = first.next_page_token
    stub.Upsert(
        pb.UpsertRequest(
            examples=[pb.Example(id="late", text="Added mid-scroll", label="1")], wait=True
        )
    )
    stub.Delete(pb.DeleteRequest(ids=["r50"], wait=True))
    pages = 1
    while token:
        page = stub.Scroll(pb.ScrollRequest(limit=10, page_token=token))
        assert page.index_version == version
        seen += [e.id for e in page.examples]
        token = page.next_page_token
        pages += 1
        late = pb.Example(id=f"late-{pages}", text=f"Added after page {pages}", label="1")
        stub.Upsert(pb.UpsertRequest(examples=[late], wait=True))
    assert pages > 4 and not any(i.startswith("late") for i in seen)
    assert "r50" in seen and len(seen) == len(set(seen))


def test_the_typed_clients_take_filters_metadata_get_and_scroll(served):
    import asyncio

    from siamese_search.client import AsyncSearchClient, Example, SearchClient

    server, _, rows = served
    target = f"127.0.0.1:{server.port}"
    web = {"must": [{"key": "repo", "match": {"value": "web"}}]}
    with SearchClient(target) as client:
        client.upsert(
            [Example("Port the docs to Welsh", "3", "cy1", {"repo": "docs", "lang": "cy"})],
            wait=True,
        )
        hits = client.search(
            "Welsh docs", k=3, filter={"must": [{"key": "lang", "match": {"value": "cy"}}]}
        )
        assert [n.id for n in hits.neighbors] == ["cy1"]
        assert hits.neighbors[0].metadata == {"repo": "docs", "lang": "cy"}
        assert all(
            rows[n.id]["repo"] == "web" for n in client.search("fix", k=5, filter=web).neighbors
        )
        assert client.predict("fix", k=3, filter=web).neighbors
        like = client.search_like("r4", k=3)
        assert "r4" not in [n.id for n in like.neighbors] and len(like.neighbors) == 3
        got = client.get(["r4", "cy1"], with_vectors=True)
        assert [e.id for e in got] == ["r4", "cy1"] and got[1].vector.shape == (640,)
        everything = [e.id for e in client.scroll_all(web, limit=5)]
        assert set(everything) == {i for i, r in rows.items() if r.get("repo") == "web"}

    async def asynchronous():
        async with AsyncSearchClient(target) as client:
            hits = await client.search("fix", k=5, filter=web)
            page = await client.scroll(web, limit=4)
            got = await client.get(["cy1"])
            like = await client.search_like("r4", k=3)
            every = [e.id async for e in client.scroll_all(web, limit=5)]
            return hits, page, got, like, every

    hits, page, got, like, every = asyncio.run(asynchronous())
    assert every == everything  # the same pages, in the same order
    assert all(rows[n.id]["repo"] == "web" for n in hits.neighbors)
    assert len(page.examples) == 4 and page.next_page_token
    assert got[0].metadata["lang"] == "cy" and "r4" not in [n.id for n in like.neighbors]
