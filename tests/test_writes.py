"""Upsert / Delete over gRPC against a real server on 127.0.0.1: new classes without
retraining, deletes by label, the commit policy, concurrent writers and readers, and
acknowledged writes that survive a SIGKILL (the journal is replayed at start)."""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import grpc
import pytest

from siamese_search.client import Example, RetryPolicy, SearchClient, _upsert_request
from siamese_search.core.model_artifact import load_model
from siamese_search.core.tables import Columns
from siamese_search.indexer import layout
from siamese_search.indexer.build import BuildOptions, build_index
from siamese_search.indexer.store import open_index
from siamese_search.server.app import SearchServer
from siamese_search.server.config import Limits, ServerConfig
from siamese_search.server.generated import search_pb2 as pb
from siamese_search.server.generated import search_pb2_grpc as pb_grpc
from siamese_search.server.writes import JOURNAL, LEGACY_JOURNAL, CommitPolicy
from tests.conftest import encode_in_server

COLUMNS = Columns(text="text", label="class")
TRANSLATIONS = [
    "Translate the settings menu into German",
    "Translate the settings menu into French",
    "Translate the settings menu into Spanish",
    "Translate the settings menu into Italian",
    "Translate the settings menu into Dutch",
]


@pytest.fixture
def index_dir(tmp_path, trained_model, sample_train):
    directory = tmp_path / "index"
    build_index(
        directory,
        load_model(trained_model),
        sample_train,
        COLUMNS,
        BuildOptions(show_progress=False),
    )
    return directory


def _start(index_dir, **overrides) -> SearchServer:
    settings = dict(
        index_dir=index_dir,
        port=0,
        limits=Limits(max_k=20, max_batch=16),
        reload_interval=0.2,
        grace_seconds=5,
        batching=encode_in_server(),
    )
    settings.update(overrides)
    return SearchServer(ServerConfig(**settings)).start()


def test_upsert_of_a_new_label_is_predicted_and_delete_by_label_removes_it(index_dir):
    server = _start(index_dir)
    try:
        with SearchClient(f"127.0.0.1:{server.port}") as client:
            before = client.info()
            assert "translation" not in before.labels
            written = client.upsert(
                [Example(t, label="translation", id=f"tr-{i}") for i, t in enumerate(TRANSLATIONS)],
                wait=True,
            )
            assert written.committed and written.ids == [f"tr-{i}" for i in range(5)]
            assert written.index_version == "000002"
            info = client.info()
            assert info.labels["translation"] == 5 and info.count == before.count + 5
            prediction = client.predict("Translate the settings menu into Polish", k=3)
            assert prediction.voted_label == "translation"
            assert prediction.index_version == "000002"
            assert (
                client.predict("Translate the settings menu into Polish", k=3, min_score=0.3).label
                == "translation"
            )
            # upsert by id replaces: same count, new text
            client.upsert(
                [Example("Translate the login page into German", "translation", "tr-0")], wait=True
            )
            hits = client.search("Translate the login page into German", k=1).neighbors
            assert hits[0].id == "tr-0" and hits[0].score > 0.99
            assert client.info().count == before.count + 5

            deleted = client.delete(label="translation", wait=True)
            assert deleted.committed
            found = client.search("Translate the settings menu into German", k=20).neighbors
            assert all(n.label != "translation" for n in found)
            assert "translation" not in client.info().labels
            with pytest.raises(grpc.RpcError) as caught:
                client.search("x", labels=["translation"])
            assert (
                caught.value.code() == grpc.StatusCode.NOT_FOUND
            )  # a label deleted is state, not a bad request
            # delete by id, and ids that are not there are ignored
            client.delete(ids=["0", "no-such-id"], wait=True)
            assert client.info().count == before.count - 1
    finally:
        server.stop(0)


@pytest.mark.parametrize(
    "examples, message",
    [
        ([], "no examples"),
        ([Example("", "1", "a")], "empty"),
        ([Example("fine text", "", "a")], "needs a label"),
        ([Example("fine text", "1", "x" * 300)], "id"),
    ],
)
def test_bad_writes_are_invalid_argument(index_dir, examples, message):
    server = _start(index_dir)
    try:
        with SearchClient(f"127.0.0.1:{server.port}") as client:
            with pytest.raises(grpc.RpcError) as caught:
                client._stub.Upsert(_upsert_request(examples, wait=False))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert message in caught.value.details()
            with pytest.raises(grpc.RpcError) as caught:
                client.delete()
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert layout.current_version(index_dir) == "000001"
    finally:
        server.stop(0)


def test_commit_policy_batches_small_writes_into_one_version(index_dir):
    server = _start(index_dir, commit_policy=CommitPolicy(every_rows=5, every_seconds=0))
    try:
        with SearchClient(f"127.0.0.1:{server.port}") as client:
            for i in range(4):
                written = client.upsert([Example(f"batched text {i}", "4", f"b{i}")])
                assert not written.committed  # acknowledged: durable, not yet served
            time.sleep(1.0)
            assert layout.list_versions(index_dir) == ["000001"]  # 4 rows: no commit yet
            client.upsert([Example("batched text 4", "4", "b4")])
            deadline = time.monotonic() + 30
            while client.info().index_version != "000002" and time.monotonic() < deadline:
                time.sleep(0.1)
            assert layout.list_versions(index_dir) == ["000001", "000002"]  # one version
            assert client.info().labels["4"] == 25
    finally:
        server.stop(0)
    server = _start(index_dir, commit_policy=CommitPolicy(every_rows=1000, every_seconds=0.5))
    try:
        with SearchClient(f"127.0.0.1:{server.port}") as client:
            client.upsert([Example("timed text", "4", "t0")])
            deadline = time.monotonic() + 30
            while client.info().index_version != "000003" and time.monotonic() < deadline:
                time.sleep(0.1)
            assert client.info().index_version == "000003"  # committed by age
    finally:
        server.stop(0)


def test_upserts_beyond_the_pending_backlog_are_refused_until_commits_catch_up(index_dir):
    """An Upsert is acknowledged once journaled (fast) and committed by embedding (slow):
    four clients upserting in a loop left 858,000 rows waiting after 30 s, all in
    memory and all for one commit. Past --max-pending-rows an Upsert is refused with
    RESOURCE_EXHAUSTED (nothing of it kept; clients retry), a Delete is still taken,
    and once a commit drains the backlog upserts are taken again."""
    policy = CommitPolicy(every_rows=10**9, every_seconds=0, max_pending_rows=10)
    server = _start(index_dir, commit_policy=policy)
    try:
        retry_once = RetryPolicy(attempts=1)
        with SearchClient(f"127.0.0.1:{server.port}", retry=retry_once) as client:
            client.upsert([Example(f"backlog text {i}", "4", f"q{i}") for i in range(8)])
            with pytest.raises(grpc.RpcError) as refused:
                client.upsert([Example(f"one too many {i}", "4", f"x{i}") for i in range(3)])
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "8 upserted rows wait to be committed" in refused.value.details()
            assert "--max-pending-rows 10" in refused.value.details()
            assert client.delete(["q0"], wait=True).committed  # and the backlog with it
            assert client.upsert([Example("after the commit", "4", "x0")], wait=True).committed
            stored = {example.id for example in client.get([f"q{i}" for i in range(8)])}
            assert stored == {f"q{i}" for i in range(1, 8)}
            assert not client.get(["x1", "x2"])  # the refused call left nothing
    finally:
        server.stop(0)


def test_writes_need_the_admin_token(index_dir):
    server = _start(index_dir, token="q" * 20, admin_token="a" * 20)
    try:
        with SearchClient(f"127.0.0.1:{server.port}", token="q" * 20) as client:
            assert client.search("fix crash").neighbors
            for call in (
                lambda: client.upsert([Example("text", "1", "x")]),
                lambda: client.delete(ids=["0"]),
            ):
                with pytest.raises(grpc.RpcError) as caught:
                    call()
                assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with SearchClient(f"127.0.0.1:{server.port}", token="a" * 20) as admin:
            assert admin.upsert([Example("text", "1", "x")], wait=True).committed
    finally:
        server.stop(0)


@pytest.mark.slow
def test_eight_writers_and_eight_readers_lose_nothing(index_dir):
    """20 s of concurrent writes and reads: no failed call, and every acknowledged
    write (minus the acknowledged deletes) is in the index afterwards."""
    server = _start(index_dir, limits=Limits(max_k=20, max_batch=16), workers=16)
    target = f"127.0.0.1:{server.port}"
    failures: list[BaseException] = []
    present: set[str] = set()
    absent: set[str] = set()
    lock = threading.Lock()
    stop = time.monotonic() + 20

    def writer(slot: int) -> None:
        rng = random.Random(slot)
        mine: list[str] = []
        with SearchClient(target, retry=RetryPolicy(attempts=1)) as client:
            n = 0
            while time.monotonic() < stop:
                try:
                    if mine and rng.random() < 0.2:
                        gone = mine.pop(rng.randrange(len(mine)))
                        client.delete(ids=[gone], wait=rng.random() < 0.3)
                        with lock:
                            present.discard(gone)
                            absent.add(gone)
                    else:
                        ids = [f"w{slot}-{n + i}" for i in range(rng.randint(1, 3))]
                        n += len(ids)
                        examples = [Example(f"writer {slot} adds text {i}", "3", i) for i in ids]
                        client.upsert(examples, wait=rng.random() < 0.3)
                        mine += ids
                        with lock:
                            present.update(ids)
                except BaseException as error:  # reaches the test thread below
                    failures.append(error)
                    return

    def reader(slot: int) -> None:
        with SearchClient(target, retry=RetryPolicy(attempts=1)) as client:
            while time.monotonic() < stop:
                try:
                    if slot % 2:
                        assert client.predict("writer adds text", k=5).index_version
                    else:
                        assert len(client.search("fix a crash", k=5).neighbors) == 5
                except BaseException as error:
                    failures.append(error)
                    return

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    threads += [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with SearchClient(target) as client:  # the last writes: wait until served
            client.upsert([Example("the very last write", "3", "last")], wait=True)
    finally:
        server.stop(0)
    assert not failures, failures[:3]
    assert len(present) > 50
    with open_index(index_dir) as version:
        found = version.records().positions_of(sorted(present | absent | {"last"}))
    assert present | {"last"} <= found.keys(), sorted(present - found.keys())[:10]
    assert not (absent & found.keys())


@pytest.mark.slow
def test_acknowledged_writes_survive_a_kill(index_dir):
    """Acknowledged = in the fsynced journal: a SIGKILLed server replays it at start."""
    from tests.test_server_process import _serve

    process, target = _serve(index_dir, "--commit-rows", "1000000")
    try:
        with SearchClient(target) as client:
            written = client.upsert([Example(f"durable text {i}", "2", f"d{i}") for i in range(3)])
            assert not written.committed
        journal = (index_dir / JOURNAL).read_text()
        assert all(f'"d{i}"' in journal for i in range(3))
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    assert layout.current_version(index_dir) == "000001"  # nothing was committed
    process, target = _serve(index_dir)  # default policy: replays and commits at once
    try:
        with SearchClient(target, retry=RetryPolicy(attempts=20, max_backoff=1.0)) as client:
            deadline = time.monotonic() + 60
            while client.info().index_version == "000001" and time.monotonic() < deadline:
                time.sleep(0.2)
            hits = client.search("durable text 1", k=3).neighbors
            assert {"d0", "d1", "d2"} <= {
                n.id for n in client.search("durable text", k=10).neighbors
            }
            assert hits[0].id == "d1"
        assert _journal_records(index_dir) == []
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def test_a_write_that_can_never_apply_is_set_aside_and_the_others_commit(
    index_dir, tmp_path, trained_model
):
    """A labelled upsert journaled, then the index rebuilt without labels: that write
    goes to the rejected file (kept, not lost), the writes around it still commit."""
    from siamese_search.server.writes import REJECTED
    from tests.conftest import write_csv

    server = _start(index_dir, commit_policy=CommitPolicy(every_rows=1000))
    try:
        with SearchClient(f"127.0.0.1:{server.port}") as client:
            assert not client.upsert([Example("a labelled example", "1", "bad")]).committed
            unlabelled = write_csv(
                tmp_path / "plain.csv", [("plain text one",), ("plain two",)], header=("text",)
            )
            options = BuildOptions(show_progress=False, replace=True)
            build_index(
                index_dir,
                load_model(trained_model),
                unlabelled,
                Columns(text="text", label=None),
                options,
            )
            deadline = time.monotonic() + 30
            while client.info().index_version != "000002" and time.monotonic() < deadline:
                time.sleep(0.1)
            written = client.upsert([Example("an unlabelled example", "", "good")], wait=True)
            assert written.committed
            ids = {n.id for n in client.search("an unlabelled example", k=5).neighbors}
            assert "good" in ids and "bad" not in ids
        assert _journal_records(index_dir) == []
        rejected = (index_dir / REJECTED).read_text()
        assert '"bad"' in rejected and "no labels" in rejected
    finally:
        server.stop(0)


def _journal_records(index_dir: Path) -> list[dict]:
    """The records a journal file holds after its header (CRC-framed JSON lines)."""
    import json

    lines = (index_dir / JOURNAL).read_bytes().splitlines()
    return [json.loads(line.partition(b" ")[2]) for line in lines[1:]]


def test_a_line_torn_by_a_crash_does_not_swallow_the_next_write(tmp_path):
    """A crash mid-append leaves a torn last line (never acknowledged); the next
    acknowledged write must still be readable at replay."""
    from siamese_search.indexer.changes import Change
    from siamese_search.server.writes import Journal

    journal = Journal(tmp_path)
    assert journal.append(Change("delete", ("a",))) == 1
    journal.close()
    with open(tmp_path / JOURNAL, "ab") as handle:
        handle.write(b'0badc0de {"seq": 2, "kind": "ups')
    journal = Journal(tmp_path)
    assert [seq for seq, _ in journal.entries] == [1]
    assert journal.append(Change("delete", ("b",))) == 2
    journal.close()
    replayed = Journal(tmp_path)
    assert [(seq, change.ids) for seq, change in replayed.entries] == [(1, ("a",)), (2, ("b",))]
    replayed.drop_through(1)
    replayed.reject(2, "test")
    assert replayed.entries == [] and _journal_records(tmp_path) == []
    assert replayed.append(Change("delete", ("c",))) == 3  # numbers never restart
    replayed.close()


_FAILING_APPEND = """
import resource, sys
from pathlib import Path
from siamese_search.indexer.changes import Change
from siamese_search.server.writes import Journal

journal = Journal(Path(sys.argv[1]))
journal.append(Change("delete", ("first",)))
size = (Path(sys.argv[1]) / "pending-writes.log").stat().st_size
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 40, hard))  # room for part of a line
try:
    journal.append(Change("delete", tuple(f"id-{i}" for i in range(50))))
    print("the oversized append was taken")
    sys.exit(1)
except OSError as error:  # EFBIG: past the file size limit (Python ignores SIGXFSZ)
    print("refused:", error)
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
journal.append(Change("delete", ("acknowledged",)))  # acknowledged: must survive
journal.close()
"""


def test_a_failed_append_leaves_nothing_for_the_next_acknowledged_write_to_land_on(tmp_path):
    """Appends failing part-way (here a real file size limit, as with a full disk):
    the write after it is acknowledged and must be replayed after a restart. Before
    the fix, the failed append's partial bytes stayed and the next line landed on them."""
    import subprocess
    import sys

    from siamese_search.server.writes import Journal

    run = subprocess.run(
        [sys.executable, "-c", _FAILING_APPEND, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "refused" in run.stdout
    replayed = Journal(tmp_path)
    try:
        assert [change.ids for _, change in replayed.entries] == [("first",), ("acknowledged",)]
    finally:
        replayed.close()


_GOOD = '{"seq": %d, "kind": "delete", "ids": ["%s"], "texts": [], "labels": null, "label": ""}'


@pytest.mark.parametrize("damage", [b"{not json at all", b'{"seq": 2, "kind": "del\xff\xfe"}'])
def test_a_damaged_journal_is_kept_aside_and_refused_never_emptied(tmp_path, damage):
    """An unreadable line in the middle (or a byte that is not UTF-8) used to be
    skipped and the journal rewritten without it: acknowledged writes gone, nothing
    said. Now the server refuses to start, a copy is kept, and --salvage-journal keeps
    the readable entries and sets the unreadable line aside."""
    import json

    from siamese_search.server.writes import REJECTED, Journal, JournalDamaged

    data = (
        (_GOOD % (1, "a")).encode() + b"\n" + damage + b"\n" + (_GOOD % (3, "c")).encode() + b"\n"
    )
    (tmp_path / LEGACY_JOURNAL).write_bytes(data)  # a journal of the format before
    with pytest.raises(JournalDamaged, match="1 unreadable line.*--salvage-journal"):
        Journal(tmp_path)
    assert (tmp_path / LEGACY_JOURNAL).read_bytes() == data  # untouched
    copies = list(tmp_path.glob(LEGACY_JOURNAL + ".damaged-*"))
    assert len(copies) == 1 and copies[0].read_bytes() == data
    salvaged = Journal(tmp_path, salvage=True)
    try:
        assert [change.ids for _, change in salvaged.entries] == [("a",), ("c",)]
    finally:
        salvaged.close()
    rejected = [json.loads(line) for line in (tmp_path / REJECTED).read_text().splitlines()]
    assert [r["rejected"] for r in rejected] == ["unreadable"] and rejected[0]["entry"]["line"] == 2


def test_a_bit_flipped_inside_a_journal_value_is_damage_not_a_write(tmp_path):
    """Every line carries its CRC-32: a flipped bit that still parses as JSON (an id
    'a' become 'c') used to replay as a different write. Lines written before the
    checksum (plain JSON) still replay."""
    from siamese_search.indexer.changes import Change
    from siamese_search.server.writes import Journal, JournalDamaged

    journal = Journal(tmp_path)
    journal.append(Change("delete", ("a",)))
    journal.append(Change("delete", ("b",)))
    journal.close()
    data = (tmp_path / JOURNAL).read_bytes()
    assert data[8:10] == b" {"  # <crc32 hex> <json>
    flipped = data.replace(b'"a"', b'"c"', 1)
    (tmp_path / JOURNAL).write_bytes(flipped)
    with pytest.raises(JournalDamaged, match="1 unreadable line"):
        Journal(tmp_path)
    legacy = b"".join(line.partition(b" ")[2] + b"\n" for line in data.splitlines()[1:])
    (tmp_path / JOURNAL).unlink()
    (tmp_path / LEGACY_JOURNAL).write_bytes((_GOOD % (7, "old")).encode() + b"\n" + legacy)
    replayed = Journal(tmp_path)  # plain JSON, from a journal of the format before
    try:
        assert [change.ids for _, change in replayed.entries] == [("a",), ("b",), ("old",)]
        assert not (tmp_path / LEGACY_JOURNAL).exists()  # rewritten in today's format
    finally:
        replayed.close()


def test_a_plain_json_line_in_a_framed_journal_is_damage(tmp_path):
    """An edited line without its checksum used to be read as a write."""
    from siamese_search.indexer.changes import Change
    from siamese_search.server.writes import Journal, JournalDamaged

    journal = Journal(tmp_path)
    journal.append(Change("delete", ("a",)))
    journal.close()
    with open(tmp_path / JOURNAL, "ab") as handle:
        handle.write((_GOOD % (2, "edited")).encode() + b"\n")
    with pytest.raises(JournalDamaged, match="1 unreadable line"):
        Journal(tmp_path)


def _five_pending(directory: Path, committed: int = 0) -> bytes:
    """A journal whose last rewrite left 5 records pending (seqs 3-7), then 3 appends."""
    from siamese_search.indexer.changes import Change
    from siamese_search.server.writes import Journal

    journal = Journal(directory)
    for i in range(7):
        journal.append(Change("delete", (f"id-{i + 1}",)))
    journal.drop_through(2)  # a commit: 3-7 pending
    for i in range(7, 10):
        journal.append(Change("delete", (f"id-{i + 1}",)))
    journal.close()
    return (directory / JOURNAL).read_bytes()


@pytest.mark.parametrize(
    "cut, missing, kept",
    [
        (lambda lines: lines[:3] + lines[4:], "records 5 are missing", [3, 4, 6, 7, 8, 9, 10]),
        (lambda lines: lines[:4], "records 6-7 are missing", [3, 4, 5]),
        (lambda lines: lines[:7] + lines[8:], "records 9 are missing", [3, 4, 5, 6, 7, 8, 10]),
        (lambda lines: [], "it is empty", []),
        (lambda lines: lines[1:], "header line is missing", [3, 4, 5, 6, 7, 8, 9, 10]),
    ],
    ids=["middle-line", "cut-short", "appended-line", "emptied", "no-header"],
)
def test_a_journal_with_records_missing_is_damage_named_by_seq(tmp_path, cut, missing, kept):
    """A journal cut short, emptied or with a line taken out used to read as if nothing
    were missing: the acknowledged writes in it were gone without a word. Now the
    header and the sequence numbers say what is missing; the server refuses to start,
    keeps a copy, and --salvage-journal names what it could not recover."""
    import json

    from siamese_search.server.writes import REJECTED, Journal, JournalDamaged

    lines = _five_pending(tmp_path).splitlines(keepends=True)
    assert len(lines) == 9  # header, seqs 3-7, appends 8-10
    damaged = b"".join(cut(lines))
    (tmp_path / JOURNAL).write_bytes(damaged)
    with pytest.raises(JournalDamaged, match=missing + ".*--salvage-journal"):
        Journal(tmp_path)
    assert (tmp_path / JOURNAL).read_bytes() == damaged  # untouched
    assert len(list(tmp_path.glob(JOURNAL + ".damaged-*"))) == 1
    salvaged = Journal(tmp_path, salvage=True)
    assert [seq for seq, _ in salvaged.entries] == kept
    salvaged.close()
    if "are missing" in missing:
        said = [json.loads(line) for line in (tmp_path / REJECTED).read_text().splitlines()]
        assert said[-1]["rejected"] == "missing: not recovered"
    again = Journal(tmp_path)  # salvaged: whole again, nothing more said missing
    assert [seq for seq, _ in again.entries] == kept
    again.close()


def test_a_truncated_journal_refuses_a_server_start(index_dir, capsys):
    """The server itself refuses a journal with a record missing, with the seq named."""
    from siamese_search.server.writes import JournalDamaged

    lines = _five_pending(index_dir).splitlines(keepends=True)
    (index_dir / JOURNAL).write_bytes(b"".join(lines[:3] + lines[4:]))
    with pytest.raises(JournalDamaged, match="records 5 are missing"):
        _start(index_dir)


def test_an_entry_that_can_never_apply_is_set_aside_and_later_writes_commit(index_dir):
    """An entry with texts shorter than its ids (or an unknown kind) used to fail
    every commit, for ever: every later write waited, then UNAVAILABLE."""
    import json

    from siamese_search.server.writes import REJECTED

    bad = [
        '{"seq": 1, "kind": "upsert", "ids": ["x", "y"], "texts": ["only one"], '
        '"labels": ["1", "1"], "label": ""}',
        '{"seq": 2, "kind": "shred", "ids": [], "texts": [], "labels": null, "label": ""}',
    ]
    (index_dir / LEGACY_JOURNAL).write_text("\n".join(bad) + "\n")
    server = _start(index_dir)
    try:
        with SearchClient(f"127.0.0.1:{server.port}") as client:
            written = client.upsert(
                [Example("Translate the menu into Welsh", "1", "w1")], wait=True
            )
            assert written.committed
            assert client.search("Translate the menu into Welsh", k=1).neighbors[0].id == "w1"
    finally:
        server.stop(0)
    reasons = [
        json.loads(line)["rejected"] for line in (index_dir / REJECTED).read_text().splitlines()
    ]
    assert reasons == ["ids, texts and labels differ in length", "unknown kind 'shred'"]


def test_a_failing_commit_is_visible_in_get_info_and_metrics(index_dir):
    """Commits that kept failing were invisible: health SERVING, nothing in GetInfo or
    the metrics, a log line naming neither index nor cause. Here a stray file sits
    where the next version goes, so publishing fails (a real OSError)."""
    server = _start(index_dir)
    blocker = layout.version_dir(index_dir, "000002")
    blocker.write_text("not a version")
    try:
        target = f"127.0.0.1:{server.port}"
        with SearchClient(target) as client, grpc.insecure_channel(target) as channel:
            info_of = pb_grpc.SearchServiceStub(channel).GetInfo
            client.upsert([Example("Translate the menu into Basque", "1", "eu-1")])
            deadline = time.monotonic() + 20
            while not info_of(pb.GetInfoRequest()).last_commit_error:
                assert time.monotonic() < deadline, "the failing commit never showed"
                time.sleep(0.1)
            info = info_of(pb.GetInfoRequest())
            assert info.pending_writes == 1 and "Error" in info.last_commit_error
            assert info.last_commit_error_at.endswith("Z")
            registry = server.metrics.registry
            labels = {"collection": server.default.name}  # metrics are per collection
            assert registry.get_sample_value("siamese_commit_failing", labels) == 1.0
            assert registry.get_sample_value("siamese_pending_writes", labels) == 1.0
            blocker.unlink()  # the cause goes: the retry commits, the error clears
            while info_of(pb.GetInfoRequest()).pending_writes:
                assert time.monotonic() < deadline + 20, "the retry never committed"
                time.sleep(0.1)
            assert info_of(pb.GetInfoRequest()).last_commit_error == ""
            assert registry.get_sample_value("siamese_commit_failing", labels) == 0.0
    finally:
        server.stop(0)


def test_writes_to_an_index_directory_deleted_under_the_server_are_refused(index_dir):
    """`rm -rf` of the index directory under a running server: appends to the open
    (deleted) journal still succeeded, so writes were acknowledged "durable" that lived
    only in the process, and ListCollections said nothing. Now the write is refused
    (UNAVAILABLE, saying why), searches still answer from the loaded version, and the
    collection names the cause."""
    import shutil

    server = _start(index_dir)
    try:
        target = f"127.0.0.1:{server.port}"
        with SearchClient(target) as client, grpc.insecure_channel(target) as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            client.upsert([Example("Translate the menu into Basque", "1", "eu-1")], wait=True)
            shutil.rmtree(index_dir)
            with pytest.raises(grpc.RpcError) as caught:
                client.upsert([Example("Translate the menu into Welsh", "1", "cy-1")])
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "deleted or replaced under the server" in caught.value.details()
            assert client.search("Translate the menu into Basque", k=1).neighbors
            (listed,) = stub.ListCollections(pb.ListCollectionsRequest()).collections
            assert "is gone" in listed.error and str(index_dir) in listed.error
    finally:
        server.stop(0)


def test_a_delete_of_unknown_ids_publishes_no_version(index_dir):
    """Each such delete used to publish a new version: three of them pushed every
    older version out of --keep 3."""
    server = _start(index_dir)
    try:
        with SearchClient(f"127.0.0.1:{server.port}") as client:
            for attempt in range(3):
                result = client.delete(ids=[f"nobody-{attempt}"], wait=True)
                assert result.committed and result.index_version == "000001"
            assert client.delete(ids=["0"], wait=True).index_version == "000002"
    finally:
        server.stop(0)
    assert layout.list_versions(index_dir) == ["000001", "000002"]


def test_a_second_server_on_the_same_index_refuses_writes(index_dir):
    first = _start(index_dir)
    second = _start(index_dir)
    try:
        with SearchClient(f"127.0.0.1:{first.port}") as one:
            assert one.upsert([Example("first server's write", "1", "w1")], wait=True).committed
        with SearchClient(f"127.0.0.1:{second.port}") as two:
            assert two.search("first server's write", k=1).neighbors  # queries still served
            with pytest.raises(grpc.RpcError) as caught:
                two.upsert([Example("second server's write", "1", "w2")])
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "another siamese-serve takes writes" in caught.value.details()
    finally:
        second.stop(0)
        first.stop(0)


@pytest.mark.slow
def test_acknowledged_writes_survive_failing_appends_and_a_kill(index_dir):
    """A server process whose journal appends start failing (a real file size limit,
    set on the running process, as a full disk would) in the middle of a stream of
    writes, then work again, then a SIGKILL: every acknowledged write is in the index
    after the restart, and a write that failed was answered with an error, not OK."""
    import resource

    from tests.test_server_process import _serve

    process, target = _serve(index_dir, "--commit-rows", "1000000")
    acknowledged: list[str] = []
    refused: list[grpc.StatusCode] = []
    try:
        with SearchClient(target, retry=RetryPolicy(attempts=1)) as client:

            def write(n: int) -> None:
                try:
                    client.upsert([Example(f"appended text number {n}", "2", f"a{n}")])
                    acknowledged.append(f"a{n}")
                except grpc.RpcError as error:
                    refused.append(error.code())

            for n in range(5):
                write(n)
            size = (index_dir / JOURNAL).stat().st_size
            hard = resource.prlimit(process.pid, resource.RLIMIT_FSIZE)[1]
            # room for about one more line: the append after it fails part-way
            resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (size + 150, hard))
            for n in range(5, 15):
                write(n)
            resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (hard, hard))
            for n in range(15, 25):
                write(n)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    assert refused and set(refused) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL}
    assert len(acknowledged) >= 15  # the first five and the last ten at least
    process, target = _serve(index_dir)  # replays the journal and commits it
    try:
        with SearchClient(target, retry=RetryPolicy(attempts=20, max_backoff=1.0)) as client:
            deadline = time.monotonic() + 60
            while client.info().raw.pending_writes and time.monotonic() < deadline:
                time.sleep(0.2)
            assert client.info().index_version != "000001"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    with open_index(index_dir) as version:
        found = version.records().positions_of(acknowledged)
    assert set(acknowledged) <= found.keys(), sorted(set(acknowledged) - found.keys())


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "search.example.com"])
def test_writes_beyond_loopback_need_a_token(tmp_path, host):
    """With writes on by default, a server on a public address without a token let anyone
    who reached the port Upsert and Delete. Refused, unless told so."""
    from siamese_search.core.errors import UserError

    with pytest.raises(UserError, match="listens beyond this machine with writes on"):
        ServerConfig(index_dir=tmp_path, host=host)
    ServerConfig(index_dir=tmp_path, host=host, admin_token="a" * 20)
    ServerConfig(index_dir=tmp_path, host=host, token="q" * 20)
    ServerConfig(index_dir=tmp_path, host=host, writes=False)
    ServerConfig(index_dir=tmp_path, host=host, open_writes=True)
    for loopback in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        ServerConfig(index_dir=tmp_path, host=loopback)


def test_a_commit_failed_for_want_of_disk_says_so(tmp_path, monkeypatch):
    """FAISS says only "309760 requested and 295936 written" when the disk fills (seen
    on an 8 MB tmpfs: the write is durable, its commit fails and is retried); the
    cause now names the free space and what to do."""
    import shutil
    from collections import namedtuple

    from siamese_search.server.writes import LOW_DISK_BYTES, disk_full_note

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(8_000_000, 7_000_000, 1_000_000))
    assert "the index's disk has 1.0 MB free: free space there" in disk_full_note(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(0, 0, LOW_DISK_BYTES))
    assert disk_full_note(tmp_path) == ""
    monkeypatch.undo()
    assert disk_full_note(tmp_path / "gone") == ""  # no such path: nothing to say
