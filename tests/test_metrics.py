"""trainer/metrics.py gives scikit-learn's scores (zero_division=0) on random labellings,
labels missing from the truth or the predictions included."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from siamese_search.trainer import metrics


@pytest.mark.parametrize("seed", range(5))
def test_the_scores_are_scikit_learns(seed):
    rng = np.random.default_rng(seed)
    pool = ["billing", "bug", "docs", "ui", "zzz-never-true", "oos"]
    truth = [str(x) for x in rng.choice(pool[:4] + ["oos"], size=200)]
    predicted = [str(x) for x in rng.choice(pool, size=200, p=[0.3, 0.2, 0.2, 0.1, 0.1, 0.1])]
    labels = sorted(set(pool) - {"oos"} | {"never-predicted"})
    expected = classification_report(
        truth, predicted, labels=labels, output_dict=True, zero_division=0
    )
    got = metrics.per_class(truth, predicted, labels)
    for label in labels:
        for name in ("precision", "recall", "f1-score", "support"):
            assert got[label][name] == pytest.approx(expected[label][name], abs=1e-12)
    assert metrics.accuracy(truth, predicted) == pytest.approx(accuracy_score(truth, predicted))
    assert metrics.macro_f1(truth, predicted, labels) == pytest.approx(
        f1_score(truth, predicted, labels=labels, average="macro", zero_division=0)
    )
    np.testing.assert_array_equal(
        metrics.confusion(truth, predicted, labels),
        confusion_matrix(truth, predicted, labels=labels),
    )
    text = metrics.report_text(truth, predicted, labels)
    sk_text = classification_report(truth, predicted, labels=labels, digits=3, zero_division=0)
    for name in ("macro avg", "weighted avg", *labels):
        ours = next(line for line in text.splitlines() if line.strip().startswith(name + " "))
        theirs = next(line for line in sk_text.splitlines() if line.strip().startswith(name + " "))
        assert ours.split()[-4:] == theirs.split()[-4:]
