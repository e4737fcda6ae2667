"""Shared fixtures: the bundled sample data and one small, seeded, really trained model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("SIAMESE_THREADS", "2")
ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "commit-messages"


@pytest.fixture(scope="session")
def sample_train() -> Path:
    return SAMPLE / "train.csv"


@pytest.fixture(scope="session")
def sample_test() -> Path:
    return SAMPLE / "test.csv"


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory, sample_train) -> Path:
    """A real model trained on the 100 sample texts (frozen encoder: the 5-class recipe,
    batch-hard triplets over the seed head; few steps, 2 members, seed 0)."""
    from siamese_search.trainer.cli import main

    out = tmp_path_factory.mktemp("models") / "small"
    code = main(
        [
            "--data",
            str(sample_train),
            "--label-column",
            "class",
            "--out",
            str(out),
            "--no-fine-tune",
            "--steps",
            "60",
            "--ensemble",
            "2",
            "--seed",
            "0",
            "--quiet",
        ]
    )
    assert code == 0
    return out


def write_csv(path: Path, rows: list[tuple[str, str]], header=("text", "label")) -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


TOY_ROWS = [
    ("fix crash when the parser reads an empty file", "bug"),
    ("fix null pointer in login handler", "bug"),
    ("fixed wrong total in invoice report", "bug"),
    ("add dark mode to the settings page", "feature"),
    ("new export to PDF feature", "feature"),
    ("support uploading several files at once", "feature"),
]
