"""The learning loop (issue 33): what the index holds (API writes included) exported,
trained on, and re-embedded with the new model as a new version while writes go on;
no version ever holds vectors of two models."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import numpy as np
import pytest

from siamese_search.core.errors import UserError
from siamese_search.core.model_artifact import load_model
from siamese_search.core.tables import Columns, read_table
from siamese_search.indexer import layout, resume
from siamese_search.indexer.build import BuildOptions, apply_changes, build_index
from siamese_search.indexer.changes import Change
from siamese_search.indexer.export import export_version
from siamese_search.indexer.reembed import reembed_index
from siamese_search.indexer.store import open_index
from siamese_search.indexer.transaction import Plan, write_version
from tests.conftest import ROOT

COLUMNS = Columns(text="text", label="class")
QUIET = BuildOptions(show_progress=False)
ADDED = [
    ("Translate the settings menu into Welsh", "welsh", "api-1"),
    ("Welsh translation of the login page", "welsh", "api-2"),
    ('A text with "quotes", commas, and a\nnewline', "welsh", "api-3"),
]


def _rows(index_dir) -> dict[str, tuple[str | None, str]]:
    with open_index(index_dir) as version:
        return {
            row_id: (label, text)
            for rows in version.records().iter_all()
            for _, row_id, label, text in rows
        }


@pytest.fixture
def written_index(tmp_path, trained_model, sample_train):
    """An index of the sample texts, then API-style writes: a new label, a delete."""
    index_dir = tmp_path / "index"
    model = load_model(trained_model)
    build_index(index_dir, model, sample_train, COLUMNS, QUIET)
    upsert = Change(
        "upsert",
        tuple(i for _, _, i in ADDED),
        tuple(t for t, _, _ in ADDED),
        tuple(label for _, label, _ in ADDED),
    )
    apply_changes(index_dir, model, [upsert, Change("delete", ("3",))], QUIET)
    return index_dir


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_export_then_build_keeps_every_id_label_and_text(
    written_index, trained_model, tmp_path, suffix
):
    """What Upsert added comes out (and what Delete removed does not); a build from
    the export holds the same rows."""
    out = tmp_path / f"export{suffix}"
    report = export_version(written_index, out, show_progress=False)
    before = _rows(written_index)
    assert report.rows == len(before) and "api-3" in before and "3" not in before
    rebuilt = tmp_path / "rebuilt"
    columns = Columns(text="text", label="label", id="id")
    build_index(rebuilt, load_model(trained_model), out, columns, QUIET)
    assert _rows(rebuilt) == before
    old = export_version(written_index, tmp_path / f"v1{suffix}", "000001", show_progress=False)
    assert old.rows == len(before) - len(ADDED) + 1  # the version before the writes


def test_export_refuses_what_it_cannot_write(written_index, tmp_path):
    with pytest.raises(UserError, match="unsupported file type '.xlsx'"):
        export_version(written_index, tmp_path / "rows.xlsx", show_progress=False)
    with pytest.raises(UserError, match="no version '000009'; retained: 000001, 000002"):
        export_version(written_index, tmp_path / "rows.csv", "000009", show_progress=False)
    with pytest.raises(UserError, match="no directory .*; create it or choose another"):
        export_version(written_index, tmp_path / "absent" / "rows.csv", show_progress=False)
    assert not list(tmp_path.glob(".rows.csv*"))  # nothing half-written left


def test_reembed_gives_every_row_the_new_models_vector(written_index, new_model_dir):
    """The new version: the same rows, each vector the new model's (of its dimension),
    its manifest naming the new model (servers swap model and index together on it);
    the version before keeps its own."""
    before = _rows(written_index)
    with open_index(written_index, load_indexes=False) as current:
        old_dim = current.dim
    new_model = load_model(new_model_dir)
    report = reembed_index(written_index, new_model, QUIET)
    assert report.version == "000003" and report.count == len(before)
    assert _rows(written_index) == before
    with open_index(written_index, model=new_model) as version:  # refuses another model
        ids = [row_id for rows in version.records().iter_all() for _, row_id, _, _ in rows]
        texts = [before[i][1] for i in ids]
        np.testing.assert_allclose(version.vectors(), new_model.embed(texts), atol=1e-5)
        assert version.manifest["operation"]["kind"] == "reembed"
        assert len(version.segments) == 1
        assert version.dim == new_model.dim
    with open_index(layout.version_dir(written_index, "000002")) as previous:
        assert previous.dim == old_dim


def test_writes_during_the_job_are_there_exactly_once_after_it(
    written_index, trained_model, new_model_dir
):
    """Writes committed while the job embeds (an upsert of a new id, an upsert that
    replaces a snapshot row, a delete) are in the published version, embedded with the
    new model; the deleted row is gone."""
    old_model, new_model = load_model(trained_model), load_model(new_model_dir)
    during = [
        Change("upsert", ("late-1",), ("Add a Welsh keyboard layout",), ("welsh",)),
        Change("upsert", ("api-1",), ("Translate the help pages into Welsh",), ("welsh",)),
        Change("delete", ("api-2",)),
    ]

    def write_meanwhile(stage: str) -> None:
        if stage == "reembed-embedded":
            apply_changes(written_index, old_model, during, QUIET)  # a server's commit

    layout.CHECKPOINT_OBSERVERS.append(write_meanwhile)
    try:
        reembed_index(written_index, new_model, QUIET)
    finally:
        layout.CHECKPOINT_OBSERVERS.remove(write_meanwhile)
    rows = _rows(written_index)
    assert rows["late-1"] == ("welsh", "Add a Welsh keyboard layout")
    assert rows["api-1"][1] == "Translate the help pages into Welsh"
    assert "api-2" not in rows
    with open_index(written_index, model=new_model) as version:
        positions = version.records().positions_of(["late-1", "api-1"])
        got = version.vectors_at(np.array([positions["late-1"], positions["api-1"]]))
        expected = new_model.embed([rows["late-1"][1], rows["api-1"][1]])
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert version.manifest["operation"]["rows_written_since"] == 2
    # and the old model can no longer write to it: the committer's cue to swap models
    with pytest.raises(UserError, match="was built with model"):
        apply_changes(written_index, old_model, [Change("delete", ("late-1",))], QUIET)


def test_a_version_mixing_two_models_is_refused(written_index, tuned_model):
    """A plan that keeps a segment of the old model in a version of the new one."""

    def keep_everything(base):
        return Plan("flat", None, base.has_labels, None, {"operation": {"kind": "test"}})

    with pytest.raises(UserError, match="never holds vectors of two models"):
        write_version(
            written_index, load_model(tuned_model), QUIET, keep_everything, True, model_change=True
        )
    assert layout.current_version(written_index) == "000002"


@pytest.mark.slow
def test_reembed_refuses_an_index_type_too_large_for_its_rows_before_embedding(
    written_index, new_model_dir
):
    """ivf-pq learns 256-centroid quantizers: the index's few rows cannot train it.
    Refused before the first text is embedded (not after all are), nothing kept."""
    with open_index(written_index, load_indexes=False) as current:
        count = current.count
    options = BuildOptions(show_progress=False, index_type="ivf-pq")
    with pytest.raises(UserError, match=f"at most {count} \\(refused before embedding any text"):
        reembed_index(written_index, load_model(new_model_dir), options)
    assert not list(written_index.glob(resume.WORKSPACE_PREFIXES["reembed"] + "*"))
    assert layout.current_version(written_index) == "000002"


@pytest.mark.parametrize("stop_at", ["reembed-page", "reembed-embedded", "before-finish"])
def test_a_killed_job_leaves_the_current_version_serving_and_the_next_run_works(
    written_index, tuned_model, stop_at
):
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "crash_writer.py"), str(tuned_model)]
        + ["reembed", str(written_index), stop_at],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("stopped"):
                break
        else:
            raise AssertionError(process.stderr.read() if process.stderr else "")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert layout.current_version(written_index) == "000002"
    before = _rows(written_index)  # opens and verifies the current version
    report = reembed_index(written_index, load_model(tuned_model), QUIET)
    assert report.version == "000003" and _rows(written_index) == before
    # what the killed run had made durable is not embedded again: nothing on its first
    # page (the first checkpoint comes CHECKPOINT_SECONDS in), every row once embedded
    assert report.reused == (0 if stop_at == "reembed-page" else len(before))
    assert not list(written_index.glob(resume.WORKSPACE_PREFIXES["reembed"] + "*"))


class _Stop(Exception):
    """Stands for a kill or a Ctrl-C in a job run in this process."""


def _stop_after_pages(pages: int):
    seen = []

    def observer(stage: str) -> None:
        if stage == "reembed-page":
            seen.append(stage)
            if len(seen) == pages:
                raise _Stop

    return observer


def _stopped_reembed(index_dir, model, pages: int) -> None:
    """A reembed of `index_dir` with `model` stopped after `pages` pages (checkpointed
    at each: the caller sets resume.CHECKPOINT_SECONDS to 0)."""
    layout.CHECKPOINT_OBSERVERS.append(_stop_after_pages(pages))
    try:
        with pytest.raises(_Stop):
            reembed_index(index_dir, model, QUIET)
    finally:
        layout.CHECKPOINT_OBSERVERS.clear()


def _live_texts(version) -> list[str]:
    return [text for rows in version.records().iter_all() for _, _, _, text in rows]


def test_a_stopped_job_resumes_with_what_it_embedded(
    written_index, trained_model, tuned_model, monkeypatch, capsys
):
    """Stopped after 4 pages of 10, with writes before the next run (a delete, a row
    whose text changed): the next run takes the checkpointed rows whose text it still
    holds from the workspace, embeds the rest, and publishes what a run from scratch
    would (each vector the new model's of the row's text now); then the workspace goes."""
    from siamese_search.indexer import reembed

    monkeypatch.setattr(reembed, "PAGE_ROWS", 10)
    monkeypatch.setattr(resume, "CHECKPOINT_SECONDS", 0.0)
    old_model, new_model = load_model(trained_model), load_model(tuned_model)
    _stopped_reembed(written_index, new_model, pages=4)
    assert layout.current_version(written_index) == "000002"
    (workspace,) = written_index.glob(resume.WORKSPACE_PREFIXES["reembed"] + "*")
    checkpointed = json.loads((workspace / resume.PROGRESS_FILE).read_text())["rows"]
    said = capsys.readouterr().err  # where it is and how to resume, or free the disk
    assert f"the {checkpointed} vectors embedded so far are kept in {workspace}" in said
    from siamese_search.indexer.cli import main as index_main

    assert index_main(["list", "--index", str(written_index)]) == 0  # and `list` shows it
    shown = f"kept by a stopped reembed: {checkpointed} vectors in {workspace}"
    assert shown in capsys.readouterr().out
    with open_index(written_index) as stopped_at:  # the live rows of 4 pages of 10
        done = set(_live_texts(stopped_at)[:checkpointed])
    assert 36 <= checkpointed <= 40
    first_ids = [i for i in _rows(written_index) if _rows(written_index)[i][1] in done]
    changes = [
        Change("delete", (first_ids[0],)),
        Change("upsert", (first_ids[1],), ("An entirely new text for this row",), ("1",)),
    ]
    apply_changes(written_index, old_model, changes, QUIET)
    with open_index(written_index) as now:
        expected = sum(text in done for text in _live_texts(now))
    report = reembed_index(written_index, new_model, QUIET)
    assert report.reused == expected and 30 <= expected < report.count
    with open_index(written_index, model=new_model) as version:
        np.testing.assert_allclose(
            version.vectors(), new_model.embed(_live_texts(version)), atol=1e-5
        )
    assert not list(written_index.glob(resume.WORKSPACE_PREFIXES["reembed"] + "*"))


def test_a_job_with_another_model_removes_a_stopped_ones_workspace(
    written_index, tuned_model, labels_only_model, monkeypatch
):
    monkeypatch.setattr(resume, "CHECKPOINT_SECONDS", 0.0)
    _stopped_reembed(written_index, load_model(tuned_model), pages=1)
    assert len(list(written_index.glob(resume.WORKSPACE_PREFIXES["reembed"] + "*"))) == 1
    report = reembed_index(written_index, load_model(labels_only_model), QUIET)
    assert report.reused == 0
    assert not list(written_index.glob(resume.WORKSPACE_PREFIXES["reembed"] + "*"))


def test_discard_kept_deletes_what_a_stopped_job_kept_never_a_running_ones(
    written_index, tuned_model, monkeypatch, capsys
):
    """There was no command for it: the user was told to delete the directory, which
    a job might be using. `discard-kept` takes both jobs' locks first."""
    from siamese_search.indexer.cli import main as index_main

    monkeypatch.setattr(resume, "CHECKPOINT_SECONDS", 0.0)
    _stopped_reembed(written_index, load_model(tuned_model), pages=1)
    (workspace,) = written_index.glob(resume.WORKSPACE_PREFIXES["reembed"] + "*")
    capsys.readouterr()
    discard = ["discard-kept", "--index", str(written_index), "--wait", "0"]
    with layout.writer_lock(written_index, wait=0):  # a build or add running
        assert index_main(discard) == 2
    assert "being written by another" in capsys.readouterr().err and workspace.is_dir()
    assert index_main(discard) == 0
    assert "deleted" in capsys.readouterr().out and not workspace.exists()
    assert index_main(discard) == 0
    assert "no stopped job kept any vectors" in capsys.readouterr().out


def test_the_index_cli_exports_and_reembeds(written_index, tuned_model, tmp_path):
    from siamese_search.indexer.cli import main

    out = tmp_path / "rows.jsonl"
    assert main(["export", "--index", str(written_index), "--out", str(out), "--quiet"]) == 0
    first = json.loads(out.read_text().splitlines()[0])
    assert set(first) == {"id", "label", "text"}
    flags = ["--index", str(written_index), "--model", str(tuned_model), "--quiet"]
    assert main(["reembed", *flags]) == 0
    with open_index(written_index, model=load_model(tuned_model)) as version:
        assert version.count == len(read_table(out, Columns(label="label", id="id")).texts)


@pytest.mark.slow
@pytest.mark.parametrize(
    "recipe", [[], ["--served-space", "labels"]], ids=["same-dim", "other-dim"]
)
def test_retrain_learns_the_labels_added_over_the_api_and_reembeds(written_index, tmp_path, recipe):
    """The whole cycle in one command: siamese-train --from-index (the Upsert-added
    label is a class of the new model), then the index re-embedded with it, also when
    the recipe makes vectors of another dimension."""
    from siamese_search.indexer.cli import main

    out = tmp_path / "retrained"
    train_flags = ["--no-fine-tune", "--steps", "20", "--ensemble", "1", "--seed", "0", *recipe]
    flags = ["--index", str(written_index), "--out", str(out), "--quiet"]
    assert main(["retrain", *flags, "--", *train_flags, "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    data = manifest["data"]
    assert data["label_counts"]["welsh"] == len(ADDED)
    assert data["from_index"] == {
        "index": str(written_index),
        "version": "000002",
        "rows": len(_rows(written_index)),
        "skipped_unlabelled": 0,
        "untrained_single_labels": [],
    }
    assert layout.current_version(written_index) == "000003"
    with open_index(written_index, model=load_model(out)) as version:
        assert version.manifest["operation"]["kind"] == "reembed"
        assert version.dim == (128 if recipe else 640)


def test_a_label_with_one_example_is_served_not_trained_and_the_retrain_goes_on(
    written_index, trained_model, tmp_path, capfd
):
    """One example of a new label written over the API made the whole retrain fail
    ("'billing' have a single example"). It is now set aside from training, said and
    recorded, and stays in the index, re-embedded with the new model and served."""
    from siamese_search.indexer.cli import main

    billing = Change(
        "upsert", ("api-billing",), ("Refund the invoice charged twice",), ("billing",)
    )
    apply_changes(written_index, load_model(trained_model), [billing], QUIET)
    out = tmp_path / "retrained"
    train_flags = ["--no-fine-tune", "--steps", "20", "--ensemble", "1", "--seed", "0"]
    flags = ["--index", str(written_index), "--out", str(out)]
    assert main(["retrain", *flags, "--", *train_flags]) == 0
    said = capfd.readouterr().out  # the training runs in a process of its own
    assert "1 label(s)" in said and "'billing'" in said and "add a second example" in said
    data = json.loads((out / "manifest.json").read_text())["data"]
    assert data["from_index"]["untrained_single_labels"] == ["billing"]
    assert "billing" not in data["label_counts"]
    assert data["label_counts"]["welsh"] == len(ADDED)
    with open_index(written_index, model=load_model(out)) as version:
        assert version.manifest["operation"]["kind"] == "reembed"
        assert _rows(written_index)["api-billing"] == (
            "billing",
            "Refund the invoice charged twice",
        )


def test_train_from_an_index_without_labels_says_what_to_do(tmp_path, trained_model, capsys):
    from siamese_search.trainer.cli import main
    from tests.conftest import write_csv

    plain = write_csv(tmp_path / "plain.csv", [("one text",), ("another",)], header=("text",))
    index_dir = tmp_path / "plain-index"
    build_index(index_dir, load_model(trained_model), plain, Columns(label=None), QUIET)
    code = main(["--from-index", str(index_dir), "--out", str(tmp_path / "m"), "--quiet"])
    assert code != 0
    assert "has no labels" in capsys.readouterr().err


def test_train_from_an_index_of_one_class_names_the_index(tmp_path, trained_model, capsys):
    """The rows are exported to a scratch table first; a message about them must name
    the index the user gave, not that table."""
    from siamese_search.trainer.cli import main
    from tests.conftest import write_csv

    rows = [("fix the crash", "bug"), ("fix the leak", "bug")]
    one = write_csv(tmp_path / "one.csv", rows, header=("text", "class"))
    index_dir = tmp_path / "one-class-index"
    build_index(index_dir, load_model(trained_model), one, COLUMNS, QUIET)
    code = main(["--from-index", str(index_dir), "--out", str(tmp_path / "m"), "--quiet"])
    said = capsys.readouterr().err
    assert code != 0 and "at least 2 classes" in said
    assert f"index {index_dir}" in said and "rows.csv" not in said and "siamese-train-" not in said


@pytest.mark.slow
@pytest.mark.parametrize("reload_interval", [0.2, 0.0], ids=["polling", "no-polling"])
def test_a_served_index_swaps_to_the_reembedded_version_under_load(
    written_index, new_model_dir, reload_interval
):
    """Searches and acknowledged writes run before, during and after the job: no call
    fails, every acknowledged write is there exactly once afterwards, and every one of
    them is embedded with the new model (those committed during the job at its
    publish, those after the swap by the server's committer with the model it swapped
    to). Without polling, the first commit after the publish is what swaps the server
    (its committer meets a version of another model)."""
    import threading
    import time

    from siamese_search.client import Example, SearchClient
    from tests.test_writes import _start

    new_model = load_model(new_model_dir)
    server = _start(written_index, reload_interval=reload_interval)
    failures: list[str] = []
    acknowledged: dict[str, str] = {}
    stop = threading.Event()

    def search() -> None:
        with SearchClient(f"127.0.0.1:{server.port}") as client:
            while not stop.is_set():
                try:
                    assert client.search("Fix the login crash", k=5).neighbors
                except Exception as error:  # noqa: BLE001 - every failure is the finding
                    failures.append(f"search: {error!r}")

    def write() -> None:
        with SearchClient(f"127.0.0.1:{server.port}") as client:
            i = 0
            while not stop.is_set():
                text = f"Translate screen {i} of the settings into Welsh"
                try:
                    client.upsert([Example(text, "welsh", f"w{i}")], wait=True)
                    acknowledged[f"w{i}"] = text
                except Exception as error:  # noqa: BLE001
                    failures.append(f"upsert w{i}: {error!r}")
                i += 1

    workers = [threading.Thread(target=search), threading.Thread(target=write)]
    try:
        for worker in workers:
            worker.start()
        time.sleep(1.0)
        reembed_index(written_index, new_model, QUIET)
        deadline = time.monotonic() + 60
        with SearchClient(f"127.0.0.1:{server.port}") as client:
            while time.monotonic() < deadline:
                info = client.info()
                if info.model_fingerprint == new_model.fingerprint:
                    break
                time.sleep(0.1)
            assert info.model_fingerprint == new_model.fingerprint
        time.sleep(2.0)  # writes after the swap
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
        server.stop(0)
    assert not failures, failures[:5]
    assert len(acknowledged) > 5
    with open_index(written_index, model=new_model) as version:
        found = version.records().positions_of(sorted(acknowledged))
        assert found.keys() == acknowledged.keys()
        ids = [row_id for rows in version.records().iter_all() for _, row_id, _, _ in rows]
        assert len(ids) == len(set(ids))  # nothing twice
        order = sorted(acknowledged)
        got = version.vectors_at(np.array([found[i] for i in order]))
        expected = new_model.embed([acknowledged[i] for i in order])
        np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.slow
def test_a_server_follows_a_rollback_across_a_change_of_dimension(
    written_index, trained_model, labels_only_model
):
    """Re-embedded with a model of 128 dimensions, then rolled back to the 640-d
    version before: a read-only server swaps model and index each time, its searches
    answer in the served model's space, and a writer of the old model writes on."""
    import time

    from siamese_search.client import SearchClient
    from siamese_search.indexer.versions import rollback
    from tests.test_writes import _start

    old_model, new_model = load_model(trained_model), load_model(labels_only_model)
    server = _start(written_index, writes=False)

    def serves(model) -> None:
        with SearchClient(f"127.0.0.1:{server.port}") as client:
            deadline = time.monotonic() + 60
            while client.info().model_fingerprint != model.fingerprint:
                assert time.monotonic() < deadline, "the server did not swap models"
                time.sleep(0.1)
            hits = client.search("Welsh translation of the login page", k=3).neighbors
            assert hits[0].id == "api-2" and hits[0].score == pytest.approx(1.0, abs=1e-4)

    try:
        serves(old_model)
        reembed_index(written_index, new_model, QUIET)
        serves(new_model)
        assert rollback(written_index) == ("000003", "000002")
        serves(old_model)
    finally:
        server.stop(0)
    apply_changes(written_index, old_model, [Change("delete", ("api-1",))], QUIET)
    with open_index(written_index, model=old_model) as version:
        assert version.dim == old_model.dim and "api-1" not in _rows(written_index)


def test_evaluate_against_an_index_counts_what_the_api_wrote(
    written_index, trained_model, tuned_model, tmp_path, capsys
):
    """`siamese-evaluate --reference INDEX_DIR` searches the index's current version,
    Upserted rows included: a label only the API wrote is predicted, which a build of
    the original table cannot; an index of another model is refused, as the server
    refuses it; an index without labels is told so."""
    from siamese_search.trainer.evaluate import main as evaluate_main

    test = tmp_path / "test.csv"
    test.write_text("text,class\nWelsh translation of the settings page,welsh\n")
    argv = ["--model", str(trained_model), "--test", str(test), "--label-column", "class"]
    argv += ["--no-plots", "--quiet", "--k", "3"]
    report = tmp_path / "report.json"
    assert (
        evaluate_main([*argv, "--reference", str(written_index), "--report-json", str(report)]) == 0
    )
    said = json.loads(report.read_text())
    assert said["reference_rows"] == 100 + len(ADDED) - 1 and "welsh" in said["labels"]
    assert said["accuracy"] == 1.0
    mismatched = [*argv[:1], str(tuned_model), *argv[2:], "--reference", str(written_index)]
    assert evaluate_main(mismatched) == 2
    assert "was built with model" in capsys.readouterr().err
    unlabelled = tmp_path / "unlabelled"
    build_index(
        unlabelled,
        load_model(trained_model),
        read_table(ROOT / "data/commit-messages/train.csv", Columns(text="text", label=None)),
        Columns(text="text", label=None),
        QUIET,
    )
    assert evaluate_main([*argv, "--reference", str(unlabelled)]) == 2
    assert "holds no labels" in capsys.readouterr().err
