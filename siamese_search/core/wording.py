"""The training texts' wording: a second opinion on the neighbour vote, for abstaining.

A model labels a query by the vote of its nearest reference texts in the served space,
which compares meaning. On the commit split 81% of the wrong votes are unanimous (all
five neighbours carry the wrong label), so nothing read from the neighbours tells them
from right ones (bench/coverage.py --alternatives, issue 35). What does is a judge that
reads the text differently: a logistic regression on the training texts' character
n-grams (2 to 5 characters inside word boundaries, TF-IDF weighted; scikit-learn's
`char_wb`, reproduced here in numpy so serving needs no scikit-learn). It labels worse
than the vote on paraphrase-rich data (CLINC150) but differently: a
vote the wording also backs is far likelier right than one it doubts.

`WordingModel.agreement` gives, per text, each known label's probability divided by
the most probable one's: 1.0 for the wording's own choice, near 0 for a label it rules
out. The abstention rule (`core.abstention`) takes the voted label's agreement as its
fifth feature (`wording_agreement`), fitted on held-out folds like the other four
(models calibrated on a validation table read the vote alone: trainer/calibrate.py); a
label the wording model never saw (added by writes) gets 1.0, so the vote alone
decides it, as before this model existed.

Fitted by the trainer on the training texts as the encoder sees them (the model's
preprocessing), stored beside the head (`wording.npz`, checksummed in the manifest);
it does not change any vector, so it is not part of the model fingerprint.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from siamese_search.core.encoders.preprocess import preprocess

WORDING_FILE = "wording.npz"
NGRAM_RANGE = (2, 5)
#: the most frequent n-grams kept (by count over the training texts), for large tables
MAX_NGRAMS = 2**15
#: and at most this many weights (labels x n-grams, float32 in the file and in memory:
#: 16 MB), so many labels keep fewer n-grams: the model's size, and its fit's time
#: (~5 s for CLINC150's 150 labels x 14k n-grams, 2.1 M weights), stay bounded
MAX_WEIGHTS = 2**22
#: the logistic regression's inverse regularisation (scikit-learn's C)
REGULARISATION_C = 10.0
_WORD = re.compile(r"\S+")


def char_ngrams(text: str) -> Iterator[str]:
    """The character n-grams of each word of `text` (lower-cased), padded by a space
    on each side, as scikit-learn's `analyzer="char_wb"` makes them.

    Yielded one at a time, not listed: a table's text may hold millions of characters,
    and a list of its n-grams held ~250 bytes a character (4 GB for the 16 M a row may
    hold); counting them as they come holds only the distinct ones."""
    low, high = NGRAM_RANGE
    for match in _WORD.finditer(text):
        padded = f" {match.group().lower()} "
        for n in range(low, high + 1):
            offset = 0
            yield padded[offset : offset + n]
            while offset + n < len(padded):
                offset += 1
                yield padded[offset : offset + n]
            if offset == 0:  # a word shorter than n counts once, as scikit-learn does
                break


@dataclass(frozen=True)
class WordingModel:
    """TF-IDF character n-grams -> a logistic regression over the training labels."""

    labels: tuple[str, ...]
    vocabulary: dict[str, int]
    idf: np.ndarray  # (n-grams,)
    coef: np.ndarray  # float32 (labels, n-grams), or (1, n-grams) for two labels
    intercept: np.ndarray  # (labels,) or (1,)
    preprocess_mode: str

    def features(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per text, (columns, values) of its L2-normalised sublinear TF-IDF row."""
        rows = []
        for text in texts:
            counts = Counter(
                self.vocabulary[gram]
                for gram in char_ngrams(preprocess(text, self.preprocess_mode))
                if gram in self.vocabulary
            )
            columns = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
            values = np.fromiter(
                (1.0 + math.log(c) for c in counts.values()), dtype=np.float64, count=len(counts)
            )
            values *= self.idf[columns]
            norm = float(np.linalg.norm(values))
            rows.append((columns, values / norm if norm > 0 else values))
        return rows

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """(texts, labels) label probabilities, as scikit-learn's predict_proba."""
        logits = (
            np.array(
                [self.coef[:, columns] @ values for columns, values in self.features(texts)],
                dtype=np.float64,
            ).reshape(len(texts), -1)
            + self.intercept
        )
        if self.coef.shape[0] == 1:  # two labels: one logit for the second
            second = 1.0 / (1.0 + np.exp(-logits[:, 0]))
            return np.stack([1.0 - second, second], axis=1)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def agreement(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Per text, label -> its probability over the most probable label's (1.0 for
        the wording's own choice)."""
        probabilities = self.probabilities(texts)
        ratios = probabilities / probabilities.max(axis=1, keepdims=True)
        return [dict(zip(self.labels, row.tolist(), strict=True)) for row in ratios]

    def describe(self) -> dict:
        return {
            "file": WORDING_FILE,
            "analyzer": "char_wb",
            "ngram_range": list(NGRAM_RANGE),
            "ngrams": len(self.vocabulary),
            "labels": len(self.labels),
            "preprocess": self.preprocess_mode,
        }

    def save(self, path: Path) -> None:
        grams = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        np.savez(
            path,
            labels=np.array(self.labels, dtype=str),
            ngrams=np.array(grams, dtype=str),
            idf=self.idf,
            coef=self.coef.astype(np.float32),
            intercept=self.intercept,
            preprocess=np.array(self.preprocess_mode),
        )

    @classmethod
    def load(cls, path: Path) -> WordingModel:
        with np.load(path, allow_pickle=False) as arrays:
            grams = arrays["ngrams"].tolist()
            return cls(
                labels=tuple(arrays["labels"].tolist()),
                vocabulary={gram: column for column, gram in enumerate(grams)},
                idf=arrays["idf"].astype(np.float64),
                coef=arrays["coef"].astype(np.float32),
                intercept=arrays["intercept"].astype(np.float64),
                preprocess_mode=str(arrays["preprocess"]),
            )


def fit_wording(
    texts: Sequence[str], labels: Sequence[str], preprocess_mode: str
) -> WordingModel | None:
    """Fit on training texts (scikit-learn: trainer side only); None with one label."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    if len(set(labels)) < 2:
        return None
    kept = max(1, min(MAX_NGRAMS, MAX_WEIGHTS // len(set(labels))))
    vectorizer = TfidfVectorizer(
        analyzer=char_ngrams, sublinear_tf=True, max_features=kept, lowercase=False
    )
    matrix = vectorizer.fit_transform([preprocess(text, preprocess_mode) for text in texts])
    fitted = LogisticRegression(C=REGULARISATION_C, max_iter=3000).fit(matrix, list(labels))
    return WordingModel(
        labels=tuple(str(label) for label in fitted.classes_),
        vocabulary={str(gram): int(column) for gram, column in vectorizer.vocabulary_.items()},
        idf=vectorizer.idf_.astype(np.float64),
        coef=fitted.coef_.astype(np.float32),
        intercept=fitted.intercept_.astype(np.float64),
        preprocess_mode=preprocess_mode,
    )
