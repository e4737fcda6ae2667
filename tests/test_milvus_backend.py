"""The Milvus backend's writer: versions as collections, the alias moved last, a killed
writer that leaves the alias on a complete version, reconcile, rollback and pruning.

(Search behaviour is in tests/test_backend_conformance.py, the gRPC contract with a
Milvus-backed server in tests/test_server.py; both run against every backend.)
"""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest

from siamese_search.core.errors import UserError
from siamese_search.core.model_artifact import load_model
from siamese_search.core.tables import Columns
from siamese_search.indexer import layout
from siamese_search.indexer.backends.milvus_backend import (
    MilvusSource,
    MilvusTarget,
    connect,
    head_of,
)
from siamese_search.indexer.backends.milvus_writer import PENDING, MilvusWriter
from siamese_search.indexer.build import (
    BuildOptions,
    add_to_index,
    build_index,
    delete_from_index,
)
from siamese_search.indexer.cli import main as index_main
from siamese_search.indexer.compaction import compact_index
from siamese_search.indexer.store import open_index
from siamese_search.indexer.versions import rollback
from tests.conftest import write_csv
from tests.test_crash_safety import BIG_ROWS, _kill_writer_at

pytestmark = [pytest.mark.milvus, pytest.mark.slow]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("milvus-writer")
    small = write_csv(root / "small.csv", [(f"text {i} about fixing bugs", "1") for i in range(50)])
    big = write_csv(
        root / "big.csv", [(f"another text {i} on performance work", "5") for i in range(BIG_ROWS)]
    )
    return small, big


def _served(target: MilvusTarget) -> tuple[str | None, int]:
    source = MilvusSource(target)
    name = source.current_name()
    if name is None:
        return None, 0
    with source.open_current() as version:
        return name, version.count


def _built_on_milvus(milvus_uri, alias, tmp_path, trained_model, data, **options):
    """An index directory built from `data`, each version also written to Milvus
    under `alias`: (target, index_dir, model, the options later writes use)."""
    target = MilvusTarget(milvus_uri, alias)
    index_dir = tmp_path / "index"
    model = load_model(trained_model)
    options = BuildOptions(show_progress=False, milvus=target, **options)
    build_index(index_dir, model, data, Columns(), options)
    return target, index_dir, model, options


def _one_more_text(tmp_path):
    """A table of one new text with label "2" (no ids: it gets the next row number)."""
    return write_csv(tmp_path / "more.csv", [("a brand new text", "2")], header=("text", "label"))


def _collections(target: MilvusTarget) -> list[str]:
    client = connect(target)
    try:
        return sorted(c for c in client.list_collections() if c.startswith(target.name + "_v"))
    finally:
        client.close()


@pytest.mark.parametrize("stage", ["milvus-inserting", "after-current", "after-alias"])
def test_killed_writer_leaves_the_alias_on_a_complete_version(
    milvus_uri, tmp_path, trained_model, corpus, stage
):
    small, big = corpus
    target = MilvusTarget(milvus_uri, f"crash_{stage.replace('-', '_')}")
    index_dir = tmp_path / "index"
    options = BuildOptions(show_progress=False, replace=True, milvus=target)
    model = load_model(trained_model)
    build_index(index_dir, model, small, Columns(), options)
    assert _served(target) == ("000001", 50)

    reported = _kill_writer_at(
        trained_model, big, index_dir, stage, milvus=(milvus_uri, target.name)
    )
    assert reported[-1] == f"stopped {stage}"
    # servers follow the alias: the old version until the alias moved, then the new one
    assert _served(target) == (("000002", BIG_ROWS) if stage == "after-alias" else ("000001", 50))

    # the next writer puts the alias back in step with the local current version first,
    # then publishes its own; leftovers of the killed writer are replaced or pruned
    build_index(index_dir, model, small, Columns(), options)
    current = layout.current_version(index_dir)
    assert _served(target) == (current, 50)
    kept = layout.list_versions(index_dir)
    assert _collections(target) == [target.collection_for(v) for v in kept]


def test_add_delete_rollback_and_prune_move_the_alias(milvus_uri, tmp_path, trained_model, corpus):
    small, _ = corpus
    target, index_dir, model, options = _built_on_milvus(
        milvus_uri, "lifecycle", tmp_path, trained_model, small, keep_versions=2
    )
    more = _one_more_text(tmp_path)

    # the alias is this directory's: the default alias is a directory's name, so
    # `a/index` and `b/index` share one, and another directory's first build used to
    # drop the collection this one's servers searched. Refused, as is a directory
    # with versions of its own; nothing in Milvus changes
    with pytest.raises(UserError, match="already serves another index.*--milvus-collection"):
        build_index(tmp_path / "b" / "index", model, more, Columns(), options)
    assert layout.current_version(tmp_path / "b" / "index") is None
    build_index(tmp_path / "c" / "index", model, more, Columns(), BuildOptions(show_progress=False))
    with pytest.raises(UserError, match="already serves another index"):
        add_to_index(tmp_path / "c" / "index", model, more, Columns(), options, upsert=True)
    assert _served(target) == ("000001", 50)
    assert _collections(target) == [target.collection_for("000001")]

    add_to_index(index_dir, model, more, Columns(), options)
    assert _served(target) == ("000002", 51)
    delete_from_index(index_dir, model, ["0", "1"], options)
    assert _served(target) == ("000003", 49)
    # keep=2: version 1 is gone, locally and in Milvus
    assert _collections(target) == [target.collection_for(v) for v in ("000002", "000003")]
    rollback(index_dir, milvus=target)
    assert _served(target) == ("000002", 51)

    # a write without --backend milvus would never reach the servers: refused
    with pytest.raises(UserError, match="served from Milvus"):
        add_to_index(index_dir, model, more, Columns(), BuildOptions(show_progress=False))
    # the CLI: the same through flags
    code = index_main(
        ["delete", "--index", str(index_dir), "--ids", "50", "--quiet"]
        + ["--backend", "milvus", "--milvus-uri", milvus_uri, "--milvus-collection", "lifecycle"]
    )
    assert code == 0
    assert _served(target) == ("000004", 50)


def test_unreachable_milvus_and_bad_flags_are_clear(tmp_path, capsys):
    code = index_main(["rollback", "--index", str(tmp_path), "--backend", "milvus"])
    assert code != 0 and "--milvus-uri" in capsys.readouterr().err
    with pytest.raises(UserError, match="cannot reach"):
        connect(MilvusTarget("http://127.0.0.1:1", "nothing_here"))
    with pytest.raises(UserError, match="Milvus names"):
        MilvusTarget("http://127.0.0.1:19530", "bad-name!")


def test_writes_through_a_milvus_backed_server_reach_milvus(
    milvus_uri, tmp_path, trained_model, sample_train
):
    """Upsert / Delete on a server that serves a Milvus alias and owns the index
    directory: each commit is a new collection, the alias moves, the server follows.
    Metadata written over the API is filtered on, read back (Get, Scroll) and searched
    by id from Milvus (the same answers as FAISS: tests/test_backend_conformance.py)."""
    from siamese_search.client import Example, SearchClient
    from siamese_search.server.app import SearchServer
    from siamese_search.server.config import ServerConfig

    target = MilvusTarget(milvus_uri, "writes")
    index_dir = tmp_path / "index"
    options = BuildOptions(show_progress=False, milvus=target)
    build_index(index_dir, load_model(trained_model), sample_train, Columns(label="class"), options)
    server = SearchServer(ServerConfig(index_dir=index_dir, milvus=target, port=0)).start()
    try:
        with SearchClient(f"127.0.0.1:{server.port}") as client:
            written = client.upsert(
                [
                    Example("Translate the settings menu into German", "i18n", "tr-1", {"n": 1}),
                    Example("Translate the help pages into Welsh", "i18n", "tr-2", {"n": 2}),
                ],
                wait=True,
            )
            assert written.index_version == "000002"
            assert _served(target) == ("000002", 102)
            hits = client.search("Translate the settings menu into German", k=1, labels=["i18n"])
            assert hits.neighbors[0].id == "tr-1" and hits.index_version == "000002"
            assert hits.neighbors[0].metadata == {"n": 1}
            only_two = {"must": [{"key": "n", "range": {"gte": 2}}]}
            found = client.search("Translate the settings menu", k=5, filter=only_two)
            assert [h.id for h in found.neighbors] == ["tr-2"]
            assert [e.id for e in client.get(["tr-2", "nope", "tr-1"])] == ["tr-2", "tr-1"]
            assert [
                e.id
                for e in client.scroll_all(
                    filter={"must": [{"key": "n", "range": {"gt": 0}}]}, limit=1
                )
            ] == ["tr-1", "tr-2"]
            like = client.search_like("tr-1", k=3, labels=["i18n"])
            assert [h.id for h in like.neighbors] == ["tr-2"]
            with pytest.raises(grpc.RpcError) as refused:
                client.search("x", filter={"must": [{"key": "nope", "match": {"value": 1}}]})
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            client.delete(label="i18n", wait=True)
            assert _served(target) == ("000003", 100)
            # a scroll with a write after every page: the page's version (and so its
            # Milvus head) is held from pruning (server/scroll_holds.py); the index
            # keeps 3 versions, so the scroll's head was dropped after 3 writes
            seen, token, pages = [], "", 0
            while True:
                page = client.scroll(limit=20, page_token=token)
                assert page.index_version == "000003"
                seen += [e.id for e in page.examples]
                token, pages = page.next_page_token, pages + 1
                if not token:
                    break
                client.upsert(
                    [Example(f"Written after page {pages}", "i18n", f"w-{pages}")], wait=True
                )
            assert pages == 5 and len(seen) == len(set(seen)) == 100
    finally:
        server.stop(0)


def test_a_ray_build_is_written_to_milvus(
    milvus_uri, tmp_path, trained_model, sample_train, running_cluster
):
    """`siamese-index build --engine ray --backend milvus`: the actors encode, the
    version lands in Milvus, and Milvus serves the neighbours a local build gives.
    (The 100 sample texts: a large build on Ray is tests/test_ray_engine.py's.)"""
    target = MilvusTarget(milvus_uri, "from_ray")
    model = load_model(trained_model)
    local = tmp_path / "local"
    quiet = BuildOptions(show_progress=False)
    build_index(local, model, sample_train, Columns(label="class"), quiet)
    code = index_main(
        ["build", "--model", str(trained_model), "--data", str(sample_train)]
        + ["--label-column", "class", "--out", str(tmp_path / "ray"), "--quiet"]
        + ["--engine", "ray", "--ray-actors", "2", "--backend", "milvus"]
        + ["--milvus-uri", milvus_uri, "--milvus-collection", "from_ray"]
    )
    assert code == 0
    queries = model.embed(["fix a crash in the parser", "add docs for the cache", "speed up login"])
    with MilvusSource(target).open_current() as served, open_index(local) as expected:
        assert served.manifest["engine"]["kind"] == "ray"
        assert [[(h.id, h.label) for h in row] for row in served.search(queries, k=5)] == [
            [(h.id, h.label) for h in row] for row in expected.search(queries, k=5)
        ]


def test_an_unreadable_alias_stops_the_writer(milvus_uri, tmp_path, trained_model, corpus):
    """Only "alias does not exist" means no alias. Any other failure to read it stops
    the writer before it re-creates the alias or prunes (it would no longer know which
    collection is served), and the served version stays as it was."""
    small, _ = corpus
    target, index_dir, model, options = _built_on_milvus(
        milvus_uri, "unreadable", tmp_path, trained_model, small, keep_versions=1
    )
    never_made = MilvusWriter(MilvusTarget(milvus_uri, "never_made"))
    writer = MilvusWriter(target)
    try:
        assert writer.aliased_collection() == target.collection_for("000001")
        assert never_made.aliased_collection() is None

        def unreachable(alias, **kwargs):
            raise ConnectionError("connection reset by peer")

        writer.client.describe_alias = unreachable
        with pytest.raises(UserError, match="cannot read alias unreadable: connection reset"):
            writer.prune(index_dir)
        with pytest.raises(UserError, match="cannot read alias"):
            writer.point_alias_at("000001")
    finally:
        writer.close()
        never_made.close()
    assert _served(target) == ("000001", 50)
    assert _collections(target) == [target.collection_for("000001")]


# ---- writes as deltas (issue 23): one data collection, partitions, deletion marks -------


def _served_ids(target: MilvusTarget, model, k: int = 200) -> tuple[str, set[str]]:
    """The version the alias serves and every id it returns (k above its rows)."""
    with MilvusSource(target).open_current() as served:
        hits = served.search(model.embed(["fixing bugs"]), k=min(k, max(served.count, 1)))
        return served.name, {hit.id for hit in hits[0]}


def _local_ids(index_dir) -> tuple[str, set[str]]:
    with open_index(index_dir) as local:
        return local.name, {row[1] for rows in local.records().iter_all() for row in rows}


def _head(target: MilvusTarget, version: str):
    client = connect(target)
    try:
        if not client.has_collection(target.collection_for(version)):
            return None
        return head_of(client, target.collection_for(version))[1]
    finally:
        client.close()


def _stored_rows(target: MilvusTarget, data: str) -> int:
    client = connect(target)
    try:
        counted = client.query(data, output_fields=["count(*)"], consistency_level="Strong")
        return int(counted[0]["count(*)"])
    finally:
        client.close()


def test_a_write_sends_milvus_its_delta_and_rollback_keeps_every_view(
    milvus_uri, tmp_path, trained_model, corpus
):
    small, _ = corpus
    target, index_dir, model, options = _built_on_milvus(
        milvus_uri, "deltas", tmp_path, trained_model, small, keep_versions=5
    )
    more = _one_more_text(tmp_path)
    add_to_index(index_dir, model, more, Columns(), options)  # 000002: row "50"
    delete_from_index(index_dir, model, ["0", "1"], options)  # 000003

    # one data collection holds each row once: the writes inserted 1 row and marked 2
    first, third = _head(target, "000001"), _head(target, "000003")
    assert third.data == first.data and _stored_rows(target, third.data) == 51
    assert third.partitions == ("s_000001", "s_000002")
    # each version's searches wait for its own writes (read-your-writes on any replica)
    assert third.ts > first.ts > 0
    assert _served_ids(target, model) == _local_ids(index_dir)
    assert {"0", "1"}.isdisjoint(_served_ids(target, model)[1])

    # rollback moves the alias (version 1 never stopped seeing rows 0 and 1), then undoes
    # the later versions' marks: their heads are dropped, their local files kept
    rollback(index_dir, to="000001", milvus=target)
    assert _head(target, "000003") is None
    assert (
        _served_ids(target, model) == _local_ids(index_dir) == ("000001", _local_ids(index_dir)[1])
    )
    assert {"0", "1"} <= _served_ids(target, model)[1]
    # a write onto the rolled-back version sees them too
    add_to_index(index_dir, model, more, Columns(), options, upsert=False)  # 000004
    assert _served_ids(target, model) == _local_ids(index_dir)
    assert {"0", "1"} <= _served_ids(target, model)[1]

    # rolling forward to 3 writes its marks back (4's head is then wrong: dropped)
    rollback(index_dir, to="000003", milvus=target)
    assert _served_ids(target, model) == _local_ids(index_dir)
    assert {"0", "1"}.isdisjoint(_served_ids(target, model)[1])
    rollback(index_dir, to="000004", milvus=target)
    assert _served_ids(target, model) == _local_ids(index_dir)
    assert _stored_rows(target, _head(target, "000004").data) == 52

    # a compaction's segment is one new partition; partitions no retained version
    # lists are dropped (pruning keeps versions 4 and 5 here)
    compact_index(
        index_dir, model, BuildOptions(show_progress=False, keep_versions=1, milvus=target)
    )
    assert _served_ids(target, model) == _local_ids(index_dir)
    assert _head(target, "000005").partitions == ("s_c000004",)
    assert layout.list_versions(index_dir) == ["000004", "000005"]
    client = connect(target)
    try:
        partitions = sorted(client.list_partitions("deltas_g000001"))
        assert partitions == ["_default", "s_000001", "s_000004", "s_c000004"]
    finally:
        client.close()


def test_a_writer_killed_while_marking_deletions_is_reconciled(
    milvus_uri, tmp_path, trained_model, corpus, monkeypatch
):
    """Killed after marking rows deleted in Milvus, before its version was published:
    servers still see every row (the alias never moved), and the next write undoes
    the marks before it writes, so its version sees those rows too. The marks are
    found by halving key ranges when there are more than a query returns (the cap is
    4 here: ten marks)."""
    from siamese_search.indexer.backends import milvus_writer

    small, _ = corpus
    target, index_dir, model, options = _built_on_milvus(
        milvus_uri, "killed_delete", tmp_path, trained_model, small
    )
    marked = [str(i) for i in range(10)]
    reported = _kill_writer_at(
        trained_model,
        "delete:" + ",".join(marked),
        index_dir,
        "milvus-inserting",
        milvus=(milvus_uri, target.name),
    )
    assert reported[-1] == "stopped milvus-inserting"
    assert (index_dir / PENDING).exists()
    assert _served_ids(target, model) == ("000001", _local_ids(index_dir)[1])
    more = _one_more_text(tmp_path)
    monkeypatch.setattr(milvus_writer, "MAX_QUERY_ROWS", 4)
    add_to_index(index_dir, model, more, Columns(), options)
    assert not (index_dir / PENDING).exists()
    name, ids = _served_ids(target, model)
    assert (name, ids) == _local_ids(index_dir) and len(ids) == 51 and set(marked) <= ids


def _scrolled(version, limit: int, where=None) -> list[str]:
    """Every row a scroll gives, page by page, in order (ids)."""
    seen, after = [], -1
    while True:
        page, after = version.scroll(where, limit=limit, after=after)
        seen += [row.id for row in page]
        if after is None:
            return seen


def test_a_scroll_past_what_one_query_returns_halves_key_ranges(
    milvus_uri, tmp_path, trained_model, corpus, monkeypatch
):
    """A Milvus query returns at most _QUERY_ROWS rows in no set order, so a scroll finds
    the smallest keys of a larger range by counting halves of it. With that cap at 4,
    pages still give every live row once, in key order, across two segments and a
    deletion (as the local index does), and with a filter."""
    from siamese_search.indexer.backends import milvus_backend

    small, _ = corpus
    target, index_dir, model, options = _built_on_milvus(
        milvus_uri, "scrolled", tmp_path, trained_model, small
    )
    add_to_index(index_dir, model, _one_more_text(tmp_path), Columns(), options)
    delete_from_index(index_dir, model, ["3", "17"], options)
    monkeypatch.setattr(milvus_backend, "_QUERY_ROWS", 4)
    with MilvusSource(target).open_current() as served, open_index(index_dir) as local:
        expected = _scrolled(local, 7)
        assert len(expected) == 49 and "3" not in expected
        assert _scrolled(served, 7) == expected
        assert _scrolled(served, 1) == expected
        labelled = served.parse_filter({"must": [{"key": "label", "match": {"value": "2"}}]})
        assert _scrolled(served, 3, labelled) == [expected[-1]]


def test_a_whole_collection_version_from_before_segments_is_still_served(
    milvus_uri, tmp_path, trained_model, corpus
):
    """Versions written before segments are one collection each (position, id, label,
    label_code, text, vector; the manifest as description, no placement). Servers
    still search them, label filter included, and the next write copies the version
    into a data collection once and moves the alias to its head."""
    from pymilvus import DataType, MilvusClient

    from siamese_search.indexer.backends.milvus_backend import encode_head

    small, _ = corpus
    target = MilvusTarget(milvus_uri, "legacy")
    index_dir = tmp_path / "index"
    model = load_model(trained_model)
    build_index(index_dir, model, small, Columns(), BuildOptions(show_progress=False))
    client = connect(target)
    try:
        with open_index(index_dir) as local:
            names = local.manifest["labels"]["names"]
            schema = MilvusClient.create_schema(
                auto_id=False, enable_dynamic_field=False, description=encode_head(local.manifest)
            )
            schema.add_field("position", DataType.INT64, is_primary=True)
            for field in ("id", "label", "text"):
                schema.add_field(field, DataType.VARCHAR, max_length=65_535)
            schema.add_field("label_code", DataType.INT32)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=local.dim)
            client.create_collection("legacy_v000001", schema=schema)
            rows = [row for batch in local.records().iter_all() for row in batch]
            vectors = local.vectors_at(np.asarray([row[0] for row in rows]))
            client.insert(
                "legacy_v000001",
                [
                    {
                        "position": position,
                        "id": row_id,
                        "label": label,
                        "label_code": names.index(label),
                        "text": text,
                        "vector": vector.tolist(),
                    }
                    for (position, row_id, label, text), vector in zip(rows, vectors, strict=True)
                ],
            )
        client.flush("legacy_v000001")  # as that writer did: its row count is flushed rows
        index_params = client.prepare_index_params()
        index_params.add_index("vector", index_type="FLAT", metric_type="IP", params={})
        client.create_index("legacy_v000001", index_params)
        client.load_collection("legacy_v000001")
        client.create_alias("legacy_v000001", "legacy")
        assert _served_ids(target, model) == _local_ids(index_dir)
        with MilvusSource(target).open_current() as served:
            assert served.placement is None
            assert len(served.search(model.embed(["fixing bugs"]), k=5, labels=["1"])[0]) == 5
            with pytest.MonkeyPatch.context() as patch:  # its keys are positions
                from siamese_search.indexer.backends import milvus_backend

                patch.setattr(milvus_backend, "_QUERY_ROWS", 4)
                assert _scrolled(served, 6) == [str(i) for i in range(50)]

        more = _one_more_text(tmp_path)
        add_to_index(
            index_dir, model, more, Columns(), BuildOptions(show_progress=False, milvus=target)
        )
        assert _served_ids(target, model) == _local_ids(index_dir)
        assert _head(target, "000002").data == "legacy_g000002"
        assert client.has_collection("legacy_v000001")  # version 1 is retained
    finally:
        client.close()


def test_a_reembedded_index_is_served_from_a_new_data_collection(
    milvus_uri, tmp_path, trained_model, new_model_dir, corpus
):
    """siamese-index reembed --backend milvus: every vector changes, so the new
    version's rows go to a data collection of their own (the index signature names the
    model), of the new model's dimension; the alias serves the new model's
    neighbours, as the local index does, and a rollback serves the old model's again."""
    from siamese_search.indexer.reembed import reembed_index

    small, _ = corpus
    new_model = load_model(new_model_dir)
    name = f"reembedded_{new_model.dim}"  # an alias of its own per parameter
    target, index_dir, model, options = _built_on_milvus(
        milvus_uri, name, tmp_path, trained_model, small, keep_versions=5
    )
    add_to_index(index_dir, model, _one_more_text(tmp_path), Columns(), options)
    report = reembed_index(index_dir, new_model, options)
    assert report.version == "000003"
    before, after = _head(target, "000002"), _head(target, "000003")
    assert after.data != before.data and after.index["model"] == new_model.fingerprint
    assert _stored_rows(target, after.data) == 51
    assert _served_ids(target, new_model) == _local_ids(index_dir)
    texts = ["fixing bugs", "a brand new text", "performance work"]
    for serving in (new_model, "rollback", model):
        if serving == "rollback":
            rollback(index_dir, milvus=target)
            continue
        queries = serving.embed(texts)
        with MilvusSource(target).open_current() as served, open_index(index_dir) as local:
            assert served.model_fingerprint == serving.fingerprint
            assert served.dim == local.dim == serving.dim
            assert [[h.id for h in row] for row in served.search(queries, k=5)] == [
                [h.id for h in row] for row in local.search(queries, k=5)
            ]


def test_collections_are_served_from_their_milvus_aliases(
    milvus_uri, tmp_path, trained_model, sample_train, sample_test
):
    """`--collections DIR --backend milvus`: each index directory's collection is the
    alias its writer uses (the directory's name), searched from Milvus."""
    from siamese_search.client import SearchClient
    from siamese_search.indexer.backends.milvus_backend import default_name
    from siamese_search.server.app import SearchServer
    from siamese_search.server.config import ServerConfig

    model = load_model(trained_model)
    root = tmp_path / "collections"
    for name, data in (("coll_train", sample_train), ("coll_test", sample_test)):
        target = MilvusTarget(milvus_uri, default_name(root / name))
        options = BuildOptions(show_progress=False, milvus=target)
        build_index(root / name, model, data, Columns(label="class"), options)
    config = ServerConfig(
        index_dir=None,
        collections_dir=root,
        default_collection="coll_train",
        milvus=MilvusTarget(milvus_uri, "unused"),
        port=0,
    )
    server = SearchServer(config).start()
    try:
        for name, count in (("coll_train", 100), ("coll_test", 3277)):
            with SearchClient(f"127.0.0.1:{server.port}", collection=name) as client:
                info = client.info()
                assert info.count == count and "milvus" in info.raw.index_directory
                assert len(client.search("Fix a crash", k=3).neighbors) == 3
    finally:
        server.stop(0)


def test_a_collection_made_and_dropped_over_the_api_is_made_and_dropped_in_milvus(
    milvus_uri, tmp_path, trained_model
):
    """CreateCollection on a `--backend milvus` server writes the new collection's alias
    (it was served from its directory alone, and after a restart from an alias nobody
    had written); DropCollection drops the alias and its collections (they stayed, so a
    collection made again under the name was refused: the alias served another index)."""
    from siamese_search.client import Example, SearchClient
    from siamese_search.server.app import SearchServer
    from siamese_search.server.config import ServerConfig

    root = tmp_path / "collections"
    root.mkdir()
    config = dict(index_dir=None, collections_dir=root, port=0)
    milvus = MilvusTarget(milvus_uri, "unused")
    server = SearchServer(ServerConfig(**config, milvus=milvus)).start()
    try:
        with SearchClient(f"127.0.0.1:{server.port}") as admin:
            admin.create_collection("made_api", str(trained_model), labels=True)
            admin.create_collection("kept_api", str(trained_model), labels=True)
            with pytest.raises(grpc.RpcError) as shared:  # Milvus would name it kept_api
                admin.create_collection("kept-api", str(trained_model))
            assert shared.value.code() == grpc.StatusCode.ALREADY_EXISTS
            assert "kept_api" in shared.value.details()
        with SearchClient(f"127.0.0.1:{server.port}", collection="made_api") as client:
            examples = [
                Example("The printer in room 4 is jammed", "hardware", "p1"),
                Example("I cannot log in to the VPN", "access", "v1"),
            ]
            client.upsert(examples, wait=True)
    finally:
        server.stop(0)
    assert _served(MilvusTarget(milvus_uri, "made_api"))[1] == 2
    restarted = ServerConfig(**config, milvus=milvus, default_collection="kept_api")
    server = SearchServer(restarted).start()
    try:
        with SearchClient(f"127.0.0.1:{server.port}", collection="made_api") as client:
            assert client.info().count == 2 and "milvus" in client.info().raw.index_directory
            assert client.search("paper jam in the printer", k=1).neighbors[0].id == "p1"
        with SearchClient(f"127.0.0.1:{server.port}") as admin:
            admin.drop_collection("made_api")
            client = connect(MilvusTarget(milvus_uri, "made_api"))
            deadline = time.monotonic() + 30
            while (root / "made_api").exists() or any(
                name.startswith("made_api_") for name in client.list_collections()
            ):
                assert time.monotonic() < deadline, client.list_collections()
                time.sleep(0.1)
            assert _served(MilvusTarget(milvus_uri, "made_api"))[0] is None
            again = admin.create_collection("made_api", str(trained_model), labels=True)
            assert again.count == 0 and again.health == "SERVING"
    finally:
        server.stop(0)
