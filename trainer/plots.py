"""Pictures a person looks at: loss curve, confusion matrix, 2-D map of vectors.

matplotlib with the Agg backend (no display); each figure is written atomically.
matplotlib and scikit-learn come with the `plots` (and `train`) extra, not the base
install: `siamese-evaluate` says so and skips its plots without them.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from siamese_search.core.atomic import write_bytes_atomic


def available() -> bool:
    """Whether the plots extra (matplotlib; scikit-learn for t-SNE) is installed."""
    return all(importlib.util.find_spec(name) for name in ("matplotlib", "sklearn"))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    write_bytes_atomic(Path(path), buffer.getvalue())


def loss_curve(
    losses: Sequence[float], validation: Sequence[tuple[int, float]], path: Path, title: str
) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(np.arange(1, len(losses) + 1), losses, lw=1, label="triplet loss (mean of members)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    if validation:
        other = ax.twinx()
        steps, scores = zip(*validation, strict=True)
        other.plot(steps, scores, "o-", color="tab:orange", label="validation macro-F1")
        other.set_ylabel("validation macro-F1")
        other.legend(loc="center right")
    ax.legend(loc="upper right")
    _save(fig, path)


def confusion_matrix(matrix: np.ndarray, labels: Sequence[str], path: Path, title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(labels), 0.8 + 0.7 * len(labels)))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(value),
            ha="center",
            va="center",
            color="white" if value > threshold else "black",
            fontsize=8,
        )
    fig.colorbar(image, ax=ax)
    _save(fig, path)


def vector_map(
    vectors: np.ndarray, labels: Sequence[str], path: Path, title: str, seed: int = 0
) -> None:
    """t-SNE (cosine) of the vectors, coloured by label, as the original notebook drew."""
    from sklearn.manifold import TSNE

    plt = _pyplot()
    perplexity = float(min(30, max(2, (len(vectors) - 1) // 3)))
    points = TSNE(
        n_components=2, metric="cosine", init="pca", perplexity=perplexity, random_state=seed
    ).fit_transform(vectors)
    fig, ax = plt.subplots(figsize=(7, 6))
    label_array = np.asarray(labels)
    for label in np.unique(label_array):
        chosen = label_array == label
        ax.scatter(points[chosen, 0], points[chosen, 1], s=5, alpha=0.7, label=str(label))
    ax.legend(markerscale=3, title="label")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    _save(fig, path)


def reliability_diagram(
    confidence: np.ndarray, correct: np.ndarray, path: Path, title: str, bins: int = 10
) -> None:
    """Accuracy per confidence bin against the diagonal (a calibrated model sits on it)."""
    plt = _pyplot()
    confidence, correct = np.asarray(confidence), np.asarray(correct, dtype=float)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    centres, accuracy, counts = [], [], []
    for b in range(bins):
        members = which == b
        if members.any():
            centres.append(confidence[members].mean())
            accuracy.append(correct[members].mean())
            counts.append(int(members.sum()))
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
    ax.plot(centres, accuracy, "o-", label="model")
    for x, y, n in zip(centres, accuracy, counts, strict=True):
        ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (mean per bin)")
    ax.set_ylabel("share of votes that were right")
    ax.set_title(title)
    ax.legend(loc="upper left")
    _save(fig, path)
