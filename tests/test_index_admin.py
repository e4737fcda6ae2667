"""Operating an index directory: one writer at a time, settings carried, rollback and
list, trust in what is on disk, file modes, failed jobs, and reader lifetimes."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time

import grpc
import pytest

from siamese_search.core.errors import ArtifactMismatchError, UserError
from siamese_search.core.model_artifact import load_model
from siamese_search.core.tables import Columns
from siamese_search.indexer import layout
from siamese_search.indexer.build import (
    BuildOptions,
    add_to_index,
    build_index,
    delete_from_index,
)
from siamese_search.indexer.cli import main as index_main
from siamese_search.indexer.store import open_index
from siamese_search.indexer.versions import rollback
from siamese_search.server.app import SearchServer
from siamese_search.server.config import ServerConfig
from siamese_search.server.generated import search_pb2 as pb
from siamese_search.server.generated import search_pb2_grpc as pb_grpc
from tests.conftest import ROOT, encode_in_server, write_csv

QUIET = BuildOptions(show_progress=False)
COLUMNS = Columns(text="text", label="label", id="id")


@pytest.fixture(scope="module")
def model(trained_model):
    return load_model(trained_model)


def _rows(prefix: str, n: int, label: str = "1") -> list[tuple[str, str, str]]:
    return [(f"{prefix}{i}", f"{prefix} commit message number {i}", label) for i in range(n)]


def _table(path, rows):
    return write_csv(path, rows, header=("id", "text", "label"))


@pytest.fixture
def index_dir(tmp_path, model):
    directory = tmp_path / "idx"
    build_index(directory, model, _table(tmp_path / "base.csv", _rows("base", 20)), COLUMNS, QUIET)
    return directory


def _ids(index_dir) -> set[str]:
    with open_index(index_dir) as version:
        return {row[1] for rows in version.records().iter_all() for row in rows}


def _writer(trained_model, index_dir, data, pause_at, wait="60"):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "paused_writer.py")]
        + [str(trained_model), str(index_dir), str(data), pause_at, wait],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_until(process, prefix: str) -> list[str]:
    lines = []
    for line in process.stdout:
        lines.append(line.strip())
        if line.startswith(prefix):
            return lines
    raise AssertionError(f"writer ended before {prefix!r}: {lines}\n{process.stderr.read()}")


def test_two_writers_interleaved_lose_nothing(tmp_path, trained_model, index_dir):
    """Writer A has opened its base (holding the lock) when writer B starts: B waits,
    then builds on A's version; both additions are in the end (issue: lost update)."""
    first = _writer(
        trained_model, index_dir, _table(tmp_path / "a.csv", _rows("a", 30)), "base-opened"
    )
    _read_until(first, "paused base-opened")  # A holds the lock and has read its base
    second = _writer(trained_model, index_dir, _table(tmp_path / "b.csv", _rows("b", 100)), "none")
    _read_until(second, "reached waiting-for-lock")  # B is provably waiting on A
    first.stdin.write("go\n")
    first.stdin.flush()
    assert _read_until(first, "published")[-1] == "published 000002 50"
    assert _read_until(second, "published")[-1] == "published 000003 150"
    assert first.wait(timeout=30) == 0 and second.wait(timeout=30) == 0
    assert "waiting for another writer" in second.stderr.read()
    ids = _ids(index_dir)
    assert {f"a{i}" for i in range(30)} <= ids and {f"b{i}" for i in range(100)} <= ids


def test_a_second_writer_can_fail_fast(tmp_path, trained_model, index_dir):
    first = _writer(
        trained_model, index_dir, _table(tmp_path / "a.csv", _rows("a", 3)), "base-opened"
    )
    try:
        _read_until(first, "paused base-opened")
        more = _table(tmp_path / "b.csv", _rows("b", 3))
        options = BuildOptions(show_progress=False, wait_seconds=0)
        with pytest.raises(UserError, match="still busy after 0 s"):
            add_to_index(index_dir, load_model(trained_model), more, COLUMNS, options)
    finally:
        first.stdin.write("go\n")
        first.stdin.flush()
        first.wait(timeout=60)


def test_index_type_and_parameters_survive_add_and_delete(tmp_path, model):
    directory = tmp_path / "hnsw"
    custom = BuildOptions(
        show_progress=False, index_type="hnsw", index_params={"M": 8, "ef_search": 99}
    )
    build_index(directory, model, _table(tmp_path / "a.csv", _rows("a", 30)), COLUMNS, custom)
    add_to_index(directory, model, _table(tmp_path / "b.csv", _rows("b", 5)), COLUMNS, QUIET)
    with open_index(directory) as version:
        assert version.kind == "hnsw"
        assert version.manifest["index"]["params"]["M"] == 8
        assert version.manifest["index"]["params"]["ef_search"] == 99
    nprobe = BuildOptions(show_progress=False, index_params={"ef_search": 40})
    delete_from_index(directory, model, ["a1"], nprobe)
    with open_index(directory) as version:
        params = version.manifest["index"]["params"]
        assert version.kind == "hnsw" and params["M"] == 8 and params["ef_search"] == 40
        assert version.count == 34


@pytest.mark.parametrize(
    "kind, param, said",
    [
        ("hnsw", "M=1", "M is from 2 to 256"),  # FAISS segfaulted (M 0: aborted)
        ("ivf", "nlist=0", "nlist is at least 1"),  # a FAISS assertion, "a bug" traceback
        ("ivf", "nprobe=0", "nprobe is at least 1"),  # built, then found nothing
        ("hnsw", "ef_search=0", "ef_search is at least 1"),  # built, then found nothing
        ("ivf-pq", "pq_bits=40", "pq_bits is from 1 to 16"),  # a FAISS assertion
        ("ivf-pq", "pq_m=7", "640 dimensions must split evenly into pq_m"),  # the same
        ("auto", "nprob=8", "no index type has it"),  # a typo: ignored in silence
    ],
)
def test_index_parameters_out_of_range_are_refused_before_any_text_is_embedded(
    tmp_path, trained_model, kind, param, said, capsys
):
    data = _table(tmp_path / "a.csv", _rows("a", 30))
    argv = ["build", "--model", str(trained_model), "--data", str(data), "--out"]
    argv += [str(tmp_path / "index"), "--index-type", kind, "--index-param", param, "--quiet"]
    assert index_main(argv) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err and "bug" not in err
    assert not (tmp_path / "index").exists()


def test_build_takes_index_as_every_other_command_names_the_directory(tmp_path, trained_model):
    """`--index DIR` (as add, delete, reembed... say) was "ambiguous option: --index
    could match --index-metadata, --index-type, --index-param"."""
    data = _table(tmp_path / "a.csv", _rows("a", 5))
    argv = ["build", "--model", str(trained_model), "--data", str(data)]
    assert index_main([*argv, "--index", str(tmp_path / "index"), "--quiet"]) == 0
    assert (tmp_path / "index" / "CURRENT").is_file()


def test_add_reads_the_table_as_the_index_was_built_and_finds_the_id_column(
    tmp_path, trained_model, capsys
):
    data = write_csv(
        tmp_path / "a.csv",
        [(f"x{i}", f"fix bug number {i}", "1") for i in range(10)],
        header=("id", "body", "kind"),
    )
    out = tmp_path / "idx"
    flags = ["--text-column", "body", "--label-column", "kind", "--quiet"]
    assert (
        index_main(
            ["build", "--model", str(trained_model), "--data", str(data), "--out", str(out), *flags]
        )
        == 0
    )
    assert "using the column 'id'" in capsys.readouterr().out
    more = write_csv(
        tmp_path / "b.csv", [("y1", "speed up the parser", "5")], header=("id", "body", "kind")
    )
    assert index_main(["add", "--index", str(out), "--data", str(more), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "text column 'body', label column 'kind', id column 'id'" in printed
    assert "keeping index type auto" in printed
    assert {"x0", "y1"} <= _ids(out)


def test_an_add_of_no_usable_row_publishes_nothing(tmp_path, index_dir, capsys):
    unusable = _table(tmp_path / "unusable.csv", [("n1", "", "1"), ("n2", "", "1")])
    assert index_main(["add", "--index", str(index_dir), "--data", str(unusable), "--quiet"]) == 2
    assert "No row is usable: nothing was written" in capsys.readouterr().err
    assert layout.list_versions(index_dir) == ["000001"]


def test_build_onto_versions_needs_replace_and_rollback_and_list(tmp_path, trained_model, capsys):
    data = _table(tmp_path / "a.csv", _rows("a", 12))
    out = tmp_path / "idx"
    build = [
        "build",
        "--model",
        str(trained_model),
        "--data",
        str(data),
        "--out",
        str(out),
        "--quiet",
    ]
    assert index_main(build) == 0
    capsys.readouterr()
    assert index_main(build) == 2
    assert "pass --replace" in capsys.readouterr().err
    assert layout.list_versions(out) == ["000001"]
    assert index_main([*build, "--replace"]) == 0
    assert layout.current_version(out) == "000002"
    assert index_main(["rollback", "--index", str(out)]) == 0
    assert layout.current_version(out) == "000001"
    assert index_main(["rollback", "--index", str(out), "--to", "2"]) == 0
    assert layout.current_version(out) == "000002"
    assert index_main(["rollback", "--index", str(out), "--to", "000009"]) == 2
    assert "no version '000009'" in capsys.readouterr().err
    with open_index(out):  # a reader holds 000002
        assert index_main(["list", "--index", str(out)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[1].split()[:2] == ["000001", "12"] and "current" not in listing[1]
    assert listing[2].split()[:2] == ["000002", "12"] and listing[2].endswith("current, held")


def test_rollback_is_served_with_no_failed_call(tmp_path, model, index_dir):
    add_to_index(index_dir, model, _table(tmp_path / "b.csv", _rows("b", 5)), COLUMNS, QUIET)
    # a server that takes writes refuses rollbacks (next test): this one serves read-only
    config = ServerConfig(
        index_dir=index_dir,
        port=0,
        reload_interval=0.05,
        writes=False,
        batching=encode_in_server(),
    )
    server = SearchServer(config).start()
    # each client keeps its own answers: a call one client started before the swap can
    # still answer 000002 after another client has seen 000001
    failures, answers, stop = [], [[] for _ in range(4)], threading.Event()

    def client(versions):
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.SearchServiceStub(channel)
            while not stop.is_set():
                try:
                    versions.append(
                        stub.Search(pb.SearchRequest(text="fix", k=3), timeout=10).index_version
                    )
                except grpc.RpcError as error:
                    failures.append(error)

    def every_client_answers(version):
        return all(versions[-1:] == [version] for versions in answers)

    threads = [threading.Thread(target=client, args=(versions,)) for versions in answers]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while not every_client_answers("000002") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert rollback(index_dir) == ("000002", "000001")
        while not every_client_answers("000001") and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        server.stop(0)
    assert not failures
    for versions in answers:
        # every client went from the new version to the rolled-back one, never back again
        assert versions.count("000002") > 0 and versions[-1] == "000001"
        first_old = versions.index("000001", versions.index("000002"))
        assert set(versions[first_old:]) == {"000001"}


def test_rollback_is_refused_while_a_server_takes_writes(tmp_path, model, index_dir):
    """Rolling back under a server that takes writes silently dropped acknowledged
    writes (its commits build on CURRENT), and a later rollback could resurrect them."""
    from siamese_search.client import Example, SearchClient

    server = SearchServer(
        ServerConfig(index_dir=index_dir, port=0, batching=encode_in_server())
    ).start()
    try:
        with SearchClient(f"127.0.0.1:{server.port}") as client:
            client.upsert([Example("Fix the flaky login test", "1", "w-1")], wait=True)
        before = layout.current_version(index_dir)
        with pytest.raises(UserError, match="takes writes"):
            rollback(index_dir)
        assert layout.current_version(index_dir) == before
    finally:
        server.stop(0)
    assert rollback(index_dir) == (before, "000001")  # with the server gone it may


def test_tampered_manifest_and_escaping_current_are_refused(tmp_path, index_dir):
    version = layout.version_dir(index_dir, "000001")
    manifest = json.loads((version / layout.MANIFEST).read_text())
    manifest["count"] = 5
    (version / layout.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactMismatchError, match="does not match its checksum"):
        open_index(index_dir)
    elsewhere = tmp_path / "elsewhere" / "x"
    elsewhere.mkdir(parents=True)
    for pointer in ("../../elsewhere/x", "000009", "\xff\xfe garbage"):
        (index_dir / layout.CURRENT).write_bytes(pointer.encode("utf-8", "surrogateescape"))
        with pytest.raises(UserError, match="is not a version in"):
            open_index(index_dir)


@pytest.mark.parametrize(
    ("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)]
)
def test_created_files_follow_the_umask(tmp_path, model, umask, file_mode, dir_mode):
    previous = os.umask(umask)
    try:
        build_index(
            tmp_path / "idx", model, _table(tmp_path / "a.csv", _rows("a", 5)), COLUMNS, QUIET
        )
    finally:
        os.umask(previous)
    version = layout.version_dir(tmp_path / "idx", "000001")
    assert stat.S_IMODE(version.stat().st_mode) == dir_mode
    for path in [*version.rglob("*"), tmp_path / "idx" / layout.CURRENT]:
        expected = dir_mode if path.is_dir() else file_mode
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_failed_jobs_say_what_to_do_and_leave_only_what_a_rerun_takes(
    tmp_path, trained_model, capsys
):
    good = _table(tmp_path / "a.csv", _rows("a", 100))
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    # 300 records, 60 of them without text: only the ingest finds that 240 are left
    thinned = _table(
        tmp_path / "thin.csv", _rows("t", 240) + [(f"e{i}", "", "1") for i in range(60)]
    )
    # no usable row (a build would publish an empty index), and a quote left open
    unusable = _table(tmp_path / "unusable.csv", [(f"u{i}", "", "1") for i in range(3)])
    open_quote = tmp_path / "open.csv"
    open_quote.write_text('id,text,label\nq1,fine,1\nq2,"left open,1\nq3,text,1\n')
    cases = [
        (["--data", str(good), "--label-column", "nope"], "no column 'nope'"),
        (["--data", str(empty)], "the file is empty"),
        (
            ["--data", str(good), "--index-type", "ivf-pq"],
            "ivf-pq needs at least 256 vectors to train (2 coarse lists and 256-centroid "
            "product quantizers); this version could have at most 100 (refused before "
            "embedding any text)",
        ),
        (["--data", str(thinned), "--index-type", "ivf-pq"], "this version would have 240."),
        (["--data", str(unusable)], "No row is usable: nothing was written"),
        (["--data", str(open_quote)], "line 3: a quoted field opened on this line is never"),
    ]
    for flags, message in cases:
        out = tmp_path / "new-index"
        code = index_main(
            ["build", "--model", str(trained_model), "--out", str(out), "--quiet", *flags]
        )
        err = capsys.readouterr().err
        assert code == 2 and message in err, err
        assert "This is a bug" not in err and "Traceback" not in err
        if str(thinned) in flags:  # refused once all was embedded: kept for the next run
            assert "the 240 vectors embedded so far are kept in" in err
            assert (
                index_main(
                    ["build", "--model", str(trained_model), "--out", str(out)]
                    + ["--quiet", "--data", str(thinned)]
                )
                == 0
            )
            assert "240 taken from a stopped run" in capsys.readouterr().out
            shutil.rmtree(out)
        assert not out.exists(), f"{flags} left {list(out.iterdir())}"


def test_os_errors_name_the_path_and_cause(tmp_path, trained_model, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    assert index_main(["info", "--index", str(a_file)]) == 2
    data = _table(tmp_path / "a.csv", _rows("a", 5))
    assert (
        index_main(
            [
                "build",
                "--model",
                str(trained_model),
                "--data",
                str(data),
                "--out",
                str(a_file / "idx"),
                "--quiet",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "This is a bug" not in err and "Not a directory" in err and str(a_file) in err


def test_server_closes_a_replaced_version_after_its_last_call(tmp_path, model, index_dir):
    server = SearchServer(
        ServerConfig(index_dir=index_dir, port=0, reload_interval=0, batching=encode_in_server())
    ).start()
    try:
        old = server.holder.acquire()  # an in-flight call on version 000001
        assert old is not None and layout.is_held(old.index.directory)
        add_to_index(index_dir, model, _table(tmp_path / "b.csv", _rows("b", 3)), COLUMNS, QUIET)
        assert server.holder.reload().changed
        assert not old.closed and layout.is_held(old.index.directory)  # still in use
        old.exit()
        assert old.closed and not layout.is_held(old.index.directory)
    finally:
        server.stop(0)
    assert not layout.is_held(layout.version_dir(index_dir, "000002"))  # stop releases it
