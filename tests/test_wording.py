"""The training texts' wording model (`core.wording`) and the abstention rule's use of it."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from siamese_search.core.abstention import (
    FEATURES,
    NO_WORDING,
    WORDING_FEATURES,
    Abstention,
    fit_abstention,
    predict,
)
from siamese_search.core.encoders.preprocess import preprocess
from siamese_search.core.wording import (
    MAX_NGRAMS,
    REGULARISATION_C,
    WORDING_FILE,
    WordingModel,
    char_ngrams,
    fit_wording,
)
from tests.conftest import ROOT

COMMITS = ROOT / "data" / "commit-messages"


@pytest.fixture(scope="module")
def commits():
    return pd.read_csv(COMMITS / "train.csv"), pd.read_csv(COMMITS / "test.csv")[:300]


def test_char_ngrams_are_scikit_learns_char_wb():
    from sklearn.feature_extraction.text import TfidfVectorizer

    analyzer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5)).build_analyzer()
    texts = ["Fix the NPE  in\tparser", "a I x", "naïve café über", "", "  "]
    texts += ["ΟΔΟΣ ΟΔΟΣ.", "İstanbul\u00a0x\x1cy\u2028z", "a\n\nb"]  # lowering, spaces
    for text in texts:
        assert list(char_ngrams(text)) == analyzer(text)


def test_a_long_text_is_read_in_memory_of_its_distinct_ngrams_not_its_length(commits):
    """A table row may hold 16 M characters; listing its n-grams held ~250 bytes a
    character (4 GB for such a row, in the fit and again when the trainer scores it).
    Counted as they come, a 400,000-character text of few distinct words costs little."""
    import tracemalloc

    train, _ = commits
    words = " ".join(train["text"].head(5)).split()
    long_text = " ".join(words[i % len(words)] for i in range(60_000))[:400_000]
    texts, labels = [*train["text"], long_text], [*train["class"].astype(str), "0"]
    fit_wording(texts[:10], labels[:10], "code")  # imports and first-call allocations
    tracemalloc.start()
    try:
        model = fit_wording(texts, labels, "code")
        model.agreement([long_text])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 30 * 2**20, f"{peak / 2**20:.0f} MB"


@pytest.mark.parametrize("classes", [5, 2])
def test_probabilities_are_scikit_learns_and_survive_the_file(commits, tmp_path, classes):
    """Serving computes the TF-IDF rows and the regression in numpy; they must give
    what scikit-learn's fitted pipeline gives (two labels: one logit, as scikit-learn
    stores it)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    train, test = commits
    train = train[train["class"] <= classes]
    texts, labels = train.text.tolist(), train["class"].astype(str).tolist()
    model = fit_wording(texts, labels, "code")
    model.save(tmp_path / WORDING_FILE)
    loaded = WordingModel.load(tmp_path / WORDING_FILE)
    assert loaded.labels == tuple(sorted(set(labels))) and loaded.preprocess_mode == "code"
    vectorizer = TfidfVectorizer(
        analyzer=char_ngrams, sublinear_tf=True, max_features=MAX_NGRAMS, lowercase=False
    )
    cleaned = [preprocess(text, "code") for text in texts]
    fitted = LogisticRegression(C=REGULARISATION_C, max_iter=3000).fit(
        vectorizer.fit_transform(cleaned), labels
    )
    queries = test.text.tolist()
    expected = fitted.predict_proba(vectorizer.transform([preprocess(q, "code") for q in queries]))
    np.testing.assert_allclose(loaded.probabilities(queries), expected, atol=1e-5)
    agreement = loaded.agreement(queries)
    best = np.array(loaded.labels)[expected.argmax(axis=1)]
    assert all(row[label] == pytest.approx(1.0) for row, label in zip(agreement, best, strict=True))
    assert all(0.0 <= value <= 1.0 for row in agreement for value in row.values())


def test_a_text_with_no_known_ngram_gets_the_priors():
    model = fit_wording(["fix the crash", "speed up the loop"], ["bug", "perf"], "lower")
    (row,) = model.probabilities(["zzqx"])  # no n-gram it knows: only the intercept
    assert row.sum() == pytest.approx(1.0)
    assert fit_wording(["a", "b"], ["only", "only"], "lower") is None  # one label: nothing to say


def test_the_wording_agreement_lowers_the_confidence_of_a_vote_it_doubts():
    """The fifth feature: the same unanimous vote is sure when the wording backs its
    label, unsure when the wording rules it out; a label the wording model never saw
    (added by writes), or no wording at all, reads the rule's `unknown_wording`
    (NO_WORDING by default)."""
    rule = Abstention((0.0, 0.0, 0.0, 0.0, 8.0), -4.0, 0.5, 0.2, "test", 1, 0.0, WORDING_FEATURES)
    labels, scores = ["A", "A", "A"], [0.9, 0.9, 0.9]
    backed = predict(labels, scores, rule, wording={"A": 1.0, "B": 0.1})
    doubted = predict(labels, scores, rule, wording={"A": 0.05, "B": 1.0})
    assert not backed.abstained and backed.confidence > 0.95
    assert doubted.abstained and doubted.voted == "A" and doubted.confidence < 0.1
    unknown = predict(labels, scores, rule, wording={"B": 1.0})
    assert unknown.confidence == pytest.approx(backed.confidence) and NO_WORDING == 1.0
    assert predict(labels, scores, rule).confidence == pytest.approx(backed.confidence)
    # a fitted rule reads its held-out votes' mean agreement for an unknown label
    fitted = replace(rule, unknown_wording=0.5)
    middle = predict(labels, scores, fitted, wording={"B": 1.0})
    assert doubted.confidence < middle.confidence < backed.confidence
    assert middle.confidence == pytest.approx(1 / (1 + math.exp(-(8.0 * 0.5 - 4.0))))
    # a four-feature rule (models made before) ignores any wording given
    old = Abstention((0.0, 0.0, 0.0, 0.0), 3.0, 0.5, 0.2, "test", 1, 0.0)
    assert not predict(labels, scores, old, wording={"A": 0.0}).abstained


def test_fit_abstention_names_the_features_it_was_fitted_on():
    rng = np.random.default_rng(0)
    votes = rng.uniform(0.3, 1.0, (300, 4))
    wording = rng.uniform(0.0, 1.0, 300)
    correct = rng.uniform(size=300) < wording  # right votes are the ones the wording backs
    oos = np.zeros(300, dtype=bool)
    four = fit_abstention(votes, correct, oos, "synthetic")
    five = fit_abstention(np.column_stack([votes, wording]), correct, oos, "synthetic")
    assert four.features == FEATURES and not four.reads_wording
    assert five.features == WORDING_FEATURES and five.reads_wording
    assert five.coef[-1] > 1.0  # it learned to read the agreement
    assert Abstention.from_dict(five.to_dict()) == five
    with pytest.raises(ValueError, match="coefficients"):
        Abstention.from_dict({**five.to_dict(), "coef": list(five.coef[:4])})


def test_a_trained_model_carries_its_wording_and_its_rule_reads_it(trained_model, sample_train):
    """Trained without a validation table: the folds each fit their own wording model,
    so the rule reads the agreement (and their mean agreement for a label the wording
    does not know); the model directory holds the final wording
    model (fitted on every training text), checksummed, not in the fingerprint."""
    import json

    from siamese_search.core.model_artifact import load_model

    model = load_model(trained_model)
    manifest = json.loads((trained_model / "manifest.json").read_text())
    assert model.abstention.features == WORDING_FEATURES
    assert 0.0 < model.abstention.unknown_wording < 1.0  # the held-out votes' mean
    assert manifest["wording"]["ngrams"] == len(model.wording.vocabulary) > 1000
    train = pd.read_csv(sample_train)
    assert model.wording.labels == tuple(sorted(train["class"].astype(str).unique()))
    (agreement,) = model.wording_agreement(["Improve the performance of the query cache"])
    assert max(agreement, key=agreement.get) == "5"  # 5: the performance class


def test_a_damaged_or_unrecorded_wording_file_is_refused_an_older_one_is_not(
    trained_model, tmp_path
):
    import json
    import shutil

    from siamese_search.core.errors import ArtifactMismatchError
    from siamese_search.core.model_artifact import load_model

    copy = tmp_path / "model"
    shutil.copytree(trained_model, copy)
    with np.load(copy / WORDING_FILE) as arrays:
        parts = {name: arrays[name] for name in arrays.files}
    np.savez(copy / WORDING_FILE, **{**parts, "coef": parts["coef"] * 2})
    with pytest.raises(ArtifactMismatchError, match=WORDING_FILE):
        load_model(copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["wording"]  # a rule that reads a wording model the manifest lacks
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactMismatchError, match="reads a wording model"):
        load_model(copy)
    # a model made before the wording model (four features, no file): served as then
    (copy / WORDING_FILE).unlink()
    rule = manifest["abstention"]
    manifest["abstention"] = {**rule, "features": list(FEATURES), "coef": rule["coef"][:4]}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    older = load_model(copy)
    assert older.wording is None and older.wording_agreement(["fix it"]) is None
    assert not older.abstention.reads_wording


def test_many_labels_keep_fewer_ngrams_so_the_model_stays_bounded():
    """labels x n-grams is at most MAX_WEIGHTS (float32): a table of many labels keeps
    its most frequent n-grams only, so the file, the memory and the fit stay bounded."""
    from siamese_search.core.wording import MAX_WEIGHTS

    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, 7)) for _ in range(3000)]
    labels = [f"label-{i // 2}" for i in range(1200)]  # 600 labels, 2 texts each
    texts = [" ".join(rng.choice(words, 6)) for _ in labels]
    model = fit_wording(texts, labels, "lower")
    assert len(model.vocabulary) == MAX_WEIGHTS // 600 < MAX_NGRAMS
    assert model.coef.size <= MAX_WEIGHTS and model.coef.dtype == np.float32
    (agreement,) = model.agreement([texts[0]])
    assert max(agreement, key=agreement.get) == "label-0"  # it still reads its texts
