"""The console scripts as a user runs them: outputs, and messages for bad input."""

from __future__ import annotations

import json
import shutil

import pytest

from siamese_search.core.errors import ArtifactMismatchError
from siamese_search.core.model_artifact import MANIFEST, load_model
from siamese_search.trainer import cli as train_cli
from siamese_search.trainer import evaluate as evaluate_cli
from tests.conftest import TOY_ROWS, write_csv
from tests.tiny_savedmodel import build_tiny_savedmodel


def _train(*args):
    """siamese-train with a frozen encoder (fine-tuning runs in tests/test_fine_tune.py)."""
    return train_cli.main([*map(str, args), "--no-fine-tune", "--quiet"])


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_evaluate_reports_scores_and_plots(trained_model, sample_train, tmp_path, capsys):
    test_file = write_csv(
        tmp_path / "test.csv",
        [
            ("Fix NPE when the session expires", "1"),
            ("Remove duplicated code in the parser", "2"),
            ("Refactor the package structure", "3"),
            ("Add export feature", "4"),
            ("Improve performance of the index", "5"),
            ("fixed crash on start", "1"),
        ],
        header=("text", "class"),
    )
    report = tmp_path / "out" / "report.json"
    code = evaluate_cli.main(
        [
            "--model",
            str(trained_model),
            "--reference",
            str(sample_train),
            "--test",
            str(test_file),
            "--label-column",
            "class",
            "--report-json",
            str(report),
            "--quiet",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "macro avg" in printed and "accuracy" in printed
    scores = json.loads(report.read_text())
    assert 0.0 <= scores["accuracy"] <= 1.0 and 0.0 <= scores["macro_f1"] <= 1.0
    assert scores["accuracy"] >= 0.5  # six easy texts; a broken pipeline scores ~0.2
    assert set(scores["per_class"]) == {"1", "2", "3", "4", "5"}
    assert (report.parent / "confusion_matrix.png").stat().st_size > 1000
    assert (report.parent / "test_map.png").stat().st_size > 1000
    assert scores["test_labels_not_in_reference"] == {}


def test_evaluate_names_test_labels_no_reference_text_has(
    trained_model, sample_train, tmp_path, capsys
):
    """A test label the reference set lacks (a typo, a label left out) can never be
    voted: it scored as wrong in silence."""
    rows = [("Fix NPE when the session expires", "1"), ("Add export feature", "fetaure")]
    test_file = write_csv(tmp_path / "test.csv", rows, header=("text", "class"))
    report = tmp_path / "report.json"
    argv = ["--model", str(trained_model), "--reference", str(sample_train), "--test"]
    argv += [str(test_file), "--label-column", "class", "--report-json", str(report)]
    assert evaluate_cli.main([*argv, "--no-plots", "--quiet"]) == 0
    assert "labels no reference text has: 'fetaure' (1)" in _error(capsys)
    assert json.loads(report.read_text())["test_labels_not_in_reference"] == {"fetaure": 1}


OUT_OF_SCOPE = [
    "what is the weather like in paris tomorrow",
    "book a table for two at an italian restaurant",
    "how many calories are in a banana",
    "play some jazz music in the living room",
    "set an alarm for seven in the morning",
    "what is the capital city of australia",
    "tell me a joke about cats",
    "how do I say thank you in japanese",
]


@pytest.mark.slow  # trains a model of its own
def test_out_of_scope_training_and_evaluation(sample_train, sample_test, tmp_path, capsys):
    """--validation-data / --oos-label fit the abstention rule; evaluate scores it."""
    from siamese_search.core.tables import Columns, read_table

    held = read_table(sample_test, Columns(text="text", label="class"))
    in_scope = list(zip(held.texts[:60], held.label_list[:60], strict=True))
    validation = write_csv(
        tmp_path / "val.csv",
        in_scope + [(t, "oos") for t in OUT_OF_SCOPE[:4]],
        header=("text", "class"),
    )
    test = write_csv(
        tmp_path / "test.csv",
        list(zip(held.texts[100:140], held.label_list[100:140], strict=True))
        + [(t, "oos") for t in OUT_OF_SCOPE[4:]],
        header=("text", "class"),
    )
    model = tmp_path / "model"
    flags = ["--label-column", "class", "--oos-label", "oos"]
    small = ["--steps", "60", "--ensemble", "2"]
    code = _train(
        "--data", sample_train, "--out", model, "--validation-data", validation, *flags, *small
    )
    assert code == 0
    assert "abstains under confidence" in capsys.readouterr().out
    rule = json.loads((model / MANIFEST).read_text())["abstention"]
    assert rule["held_out_rows"] == 64 and "val.csv" in rule["source"]
    assert 0.0 < rule["threshold"] < 1.0
    # with a validation table the rule reads the vote alone, so no wording model is kept
    # (calibrate.on_validation: it cost CLINC150's out-of-scope recall)
    assert "wording_agreement" not in rule["features"] and not (model / "wording.npz").exists()
    report = tmp_path / "eval" / "report.json"
    code = evaluate_cli.main(
        ["--model", str(model), "--reference", str(sample_train), "--test", str(test)]
        + flags
        + ["--report-json", str(report), "--quiet"]
    )
    assert code == 0
    assert "out-of-scope recall" in capsys.readouterr().out
    scores = json.loads(report.read_text())
    assert not [key for key in scores if key.startswith("_")]  # no per-row arrays leak
    for key in ("in_scope_accuracy", "closed_set_accuracy", "oos_recall", "oos_precision"):
        assert 0.0 <= scores[key] <= 1.0, key
    # overall = right answers on in-scope rows + abstentions on the 4 out-of-scope rows
    answered_right = scores["in_scope_accuracy"] * 40
    abstained_oos = scores["oos_recall"] * 4
    assert scores["overall_accuracy"] == pytest.approx((answered_right + abstained_oos) / 44)
    assert scores["oos_recall"] > 0  # far-off requests are not labelled as commits
    assert scores["in_scope_accuracy"] <= scores["closed_set_accuracy"]
    assert (report.parent / "reliability.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("rows", "flags", "message"),
    [
        ([("only one", "a"), ("class here", "a")], [], "at least 2 classes"),
        ([("a1", "a"), ("a2", "a"), ("b1", "b")], [], "have a single example: 'b'"),
        ([*TOY_ROWS, ("  ", "bug")], [], "empty text"),
        (TOY_ROWS, ["--label-column", "kind"], "no column 'kind'"),
        (TOY_ROWS, ["--steps", "0"], "--steps must be at least 1"),
    ],
)
def test_train_bad_input_exits_2_with_a_message_and_writes_nothing(
    tmp_path, capsys, rows, flags, message
):
    data = write_csv(tmp_path / "train.csv", rows)
    out = tmp_path / "model"
    assert _train("--data", data, "--out", out, *flags) == 2
    assert message in _error(capsys)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_training_shows_progress_through_calibration_unless_quiet(tmp_path, capsys, sample_train):
    """Without a validation table the calibration (a wording model, then one fold at a
    time: ~15 s on CLINC150) shows a bar, as training does; --quiet shows none."""
    flags = ["--data", str(sample_train), "--label-column", "class", "--no-fine-tune"]
    flags += ["--steps", "5", "--ensemble", "1"]
    assert train_cli.main([*flags, "--out", str(tmp_path / "shown")]) == 0
    shown = capsys.readouterr().err
    assert "fitting the wording model" in shown and "calibrating on held-out folds" in shown
    assert "3/3" in shown  # every fold reported
    assert train_cli.main([*flags, "--out", str(tmp_path / "quiet"), "--quiet"]) == 0
    assert "calibrating" not in capsys.readouterr().err


def test_no_wording_trains_a_rule_that_reads_the_vote_alone(tmp_path, sample_train):
    """--no-wording (queries in other languages than the training texts'): no wording
    model, a four-feature rule, and the vote-only rule's cut, saying so."""
    from siamese_search.core.abstention import FEATURES, VOTE_ONLY_IN_DOMAIN_ABSTAIN

    out = tmp_path / "model"
    flags = ["--label-column", "class", "--steps", "5", "--ensemble", "1", "--no-wording"]
    assert _train("--data", sample_train, "--out", out, *flags) == 0
    rule = json.loads((out / "manifest.json").read_text())["abstention"]
    assert tuple(rule["features"]) == FEATURES and not (out / "wording.npz").exists()
    assert f"the {VOTE_ONLY_IN_DOMAIN_ABSTAIN:.0%} quantile" in rule["threshold_rule"]


def test_train_missing_file_and_existing_output(tmp_path, capsys, trained_model):
    assert _train("--data", tmp_path / "nope.csv", "--out", tmp_path / "m") == 2
    assert "no such file" in _error(capsys)
    (tmp_path / "folder.csv").mkdir()  # said "no such file" as well
    assert _train("--data", tmp_path / "folder.csv", "--out", tmp_path / "m") == 2
    assert "a directory, not a table file" in _error(capsys)
    data = write_csv(tmp_path / "train.csv", TOY_ROWS)
    assert _train("--data", data, "--out", trained_model) == 2
    assert "already exists" in _error(capsys)


def test_train_non_utf8_file_names_the_line(tmp_path, capsys):
    data = tmp_path / "latin1.csv"
    data.write_bytes(
        b"text,label\n"
        + "".join(f"{t},{lab}\n" for t, lab in TOY_ROWS).encode()
        + "r\u00e9sum\u00e9 fix,bug\n".encode("latin-1")
    )
    assert _train("--data", data, "--out", tmp_path / "m") == 2
    assert "line 8: bytes that are not UTF-8" in _error(capsys)


def test_model_from_another_encoder_is_refused(trained_model, tmp_path, capsys, sample_train):
    tampered = tmp_path / "tampered"
    shutil.copytree(trained_model, tampered)
    manifest = json.loads((tampered / MANIFEST).read_text())
    manifest["encoder"]["fingerprint"]["weights_sha256"] = "0" * 64
    (tampered / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactMismatchError, match="was trained with encoder"):
        load_model(tampered)
    code = evaluate_cli.main(
        [
            "--model",
            str(tampered),
            "--reference",
            str(sample_train),
            "--test",
            str(sample_train),
            "--label-column",
            "class",
            "--no-plots",
            "--quiet",
        ]
    )
    assert code == 2
    assert "retrain the model with this encoder" in _error(capsys)


def test_evaluate_rejects_a_directory_that_is_not_a_model(tmp_path, capsys, sample_train):
    code = evaluate_cli.main(
        [
            "--model",
            str(tmp_path),
            "--reference",
            str(sample_train),
            "--test",
            str(sample_train),
            "--label-column",
            "class",
            "--quiet",
        ]
    )
    assert code == 2
    assert "is not a model directory" in _error(capsys)


@pytest.mark.slow  # trains on an exported SavedModel (TensorFlow)
def test_train_and_load_with_a_savedmodel_encoder(tmp_path):
    encoder_dir = build_tiny_savedmodel(tmp_path / "encoder")
    data = write_csv(tmp_path / "train.csv", TOY_ROWS)
    out = tmp_path / "model"
    assert (
        _train(
            "--data",
            data,
            "--out",
            out,
            "--encoder",
            encoder_dir,
            "--preprocess",
            "none",
            "--steps",
            "10",
            "--ensemble",
            "1",
        )
        == 0
    )
    model = load_model(out)
    assert model.manifest["encoder"]["spec"] == {
        "kind": "hub",
        "handle": str(encoder_dir),
        "preprocess": "none",
    }
    # served space: the encoder's own 16-d vector (meaning) beside the 128-d head vector
    assert model.encoder.dim == 16 and model.embed(["fix crash"]).shape == (1, 16 + 128)
    assert model.meaning_encoder is None  # not fine-tuned: one encoder makes both parts


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "is empty, which would leave auth off"),
        ("  \n\t\n", "is empty"),
        ("abc", "at least 16"),
    ],
)
def test_serve_refuses_a_token_file_that_would_leave_auth_off(tmp_path, capsys, content, message):
    """An empty or whitespace-only --token-file used to start the server with auth off."""
    from siamese_search.server.cli import main as serve_main

    token_file = tmp_path / "token"
    token_file.write_text(content)
    argv = ["--index", str(tmp_path / "index"), "--port", "0", "--token-file", str(token_file)]
    assert serve_main(argv) != 0
    assert message in capsys.readouterr().err


def test_tensorflow_paths_name_the_extra_when_tensorflow_is_missing(
    monkeypatch, tmp_path, capsys, sample_train, trained_model
):
    """The base install has no TensorFlow (the `train` extra has it): siamese-train,
    siamese-export and a TF-Hub encoder say what to install, in one line."""
    import importlib.util

    from siamese_search.trainer import export as export_cli

    real_find_spec = importlib.util.find_spec
    hidden = {"tensorflow", "tensorflow_hub", "tensorflow_text"}
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *rest: None if name in hidden else real_find_spec(name, *rest),
    )
    argv = ["--data", str(sample_train), "--label-column", "class", "--out", str(tmp_path / "m")]
    assert train_cli.main(argv) == 2
    assert "pip install 'siamese-search[train]'" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
    out = tmp_path / "saved"
    assert export_cli.main(["--model", str(trained_model), "--out", str(out)]) == 2
    assert "siamese-export needs tensorflow" in capsys.readouterr().err
    from siamese_search.core.encoders import make_encoder
    from siamese_search.core.errors import UserError

    with pytest.raises(UserError, match=r"needs tensorflow, tensorflow_hub.*\[train\]"):
        make_encoder(str(tmp_path / "some-savedmodel"), "none")


def test_every_help_page_shows_a_default_once_and_only_where_there_is_one():
    """`--help` said "(default: )" for options whose default is an empty string, and
    "(default: the server's default) (default: )" where the help said its own."""
    import argparse

    from siamese_search.client import cli as query_cli
    from siamese_search.indexer import cli as index_cli
    from siamese_search.server import cli as serve_cli

    modules = (query_cli, index_cli, serve_cli, train_cli, evaluate_cli)
    parsers = [module.build_parser() for module in modules]
    helps = {}
    while parsers:
        parser = parsers.pop()
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
            elif action.help and action.help is not argparse.SUPPRESS:
                helps[f"{parser.prog} {action.dest}"] = formatter._expand_help(action)
    assert "siamese-index build metadata_columns" in helps and "siamese-query k" in helps
    for option, shown in helps.items():
        assert "(default: )" not in shown and "(default: None)" not in shown, option
        assert shown.count("(default") <= 1, (option, shown)
