"""Labelling scores: accuracy, per-class precision / recall / F1, macro-F1, confusion.

Written out (a few lines of numpy) rather than taken from scikit-learn, because
`siamese-evaluate` is part of the base install and scikit-learn with SciPy would add
~165 MB to it for these four functions. The definitions are scikit-learn's, zero
division counted as 0 (`zero_division=0`); tests/test_metrics.py checks them against
scikit-learn on random labellings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """(len(labels), len(labels)) counts: row = true label, column = predicted; pairs
    naming a label outside `labels` are not counted."""
    position = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for true, guess in zip(truth, predicted, strict=True):
        if true in position and guess in position:
            matrix[position[true], position[guess]] += 1
    return matrix


def per_class(
    truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]
) -> dict[str, dict[str, float]]:
    """label -> precision, recall, f1-score, support (scikit-learn's report keys)."""
    truth_array, predicted_array = np.asarray(truth), np.asarray(predicted)
    scores = {}
    for label in labels:
        hits = float(np.sum((truth_array == label) & (predicted_array == label)))
        support = int(np.sum(truth_array == label))
        guessed = float(np.sum(predicted_array == label))
        precision = hits / guessed if guessed else 0.0
        recall = hits / support if support else 0.0
        both = precision + recall
        f1 = 2 * precision * recall / both if both else 0.0
        scores[label] = {"precision": precision, "recall": recall, "f1-score": f1}
        scores[label]["support"] = support
    return scores


def accuracy(truth: Sequence[str], predicted: Sequence[str]) -> float:
    if len(truth) == 0:
        return 0.0
    return float(np.mean(np.asarray(truth) == np.asarray(predicted)))


def macro_f1(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> float:
    scores = per_class(truth, predicted, labels)
    return float(np.mean([s["f1-score"] for s in scores.values()])) if scores else 0.0


def report_text(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> str:
    """A table of `per_class` with its accuracy and macro / weighted averages, laid out
    like scikit-learn's classification_report (3 digits)."""
    scores = per_class(truth, predicted, labels)
    width = max([len("weighted avg"), *(len(label) for label in labels)])
    header = f"{'':>{width}} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}"
    lines = [header, ""]

    def row(name: str, values: list[float], support: int) -> str:
        p, r, f = values
        return f"{name:>{width}} {p:>9.3f} {r:>9.3f} {f:>9.3f} {support:>9}"

    for label, s in scores.items():
        lines.append(row(label, [s["precision"], s["recall"], s["f1-score"]], int(s["support"])))
    total = sum(int(s["support"]) for s in scores.values())
    lines += [
        "",
        f"{'accuracy':>{width}} {'':>9} {'':>9} {accuracy(truth, predicted):>9.3f} {total:>9}",
    ]
    columns = ("precision", "recall", "f1-score")
    macro = [float(np.mean([s[c] for s in scores.values()])) for c in columns]
    supports = np.array([s["support"] for s in scores.values()], dtype=np.float64)
    weights = supports / supports.sum() if supports.sum() else supports
    weighted = [
        float(sum(w * s[c] for w, s in zip(weights, scores.values(), strict=True))) for c in columns
    ]
    lines.append(row("macro avg", macro, total))
    lines.append(row("weighted avg", weighted, total))
    return "\n".join(lines) + "\n"
