"""Calibrated confidence and the abstention rule (`core.abstention`)."""

from __future__ import annotations

import numpy as np
import pytest

from siamese_search.core.abstention import (
    NO_OOS_THRESHOLD,
    Abstention,
    expected_calibration_error,
    fit_abstention,
    predict,
    vote_features,
)


def _held_out(rng, n_in=400, n_oos=100):
    """In-scope rows: near neighbours, mostly right; out-of-scope: far, always wrong."""
    top = np.concatenate([rng.uniform(0.6, 1.0, n_in), rng.uniform(0.2, 0.6, n_oos)])
    share = np.concatenate([rng.uniform(0.5, 1.0, n_in), rng.uniform(0.2, 0.7, n_oos)])
    features = np.column_stack([top, share, top - 0.05, top])
    correct = np.concatenate([rng.uniform(size=n_in) < top[:n_in], np.zeros(n_oos, bool)])
    oos = np.concatenate([np.zeros(n_in, bool), np.ones(n_oos, bool)])
    return features, correct, oos


def test_vote_features_describe_the_winner():
    decision, features = vote_features(["A", "B", "A"], [0.9, 0.8, 0.5])
    assert decision.label == "A"
    np.testing.assert_allclose(features, [0.9, 1.4 / 2.2, 0.7, 0.9])


def test_fit_abstention_is_calibrated_and_separates_out_of_scope():
    features, correct, oos = _held_out(np.random.default_rng(0))
    rule = fit_abstention(features, correct, oos, source="synthetic")
    confidence = np.array([rule.confidence(row) for row in features])
    assert rule.ece < 0.08 and rule.ece == pytest.approx(
        expected_calibration_error(confidence, correct)
    )
    assert confidence[oos].mean() < 0.3 < 0.6 < confidence[~oos].mean()
    answered = confidence >= rule.threshold
    assert answered[~oos].mean() > 0.8 and (~answered)[oos].mean() > 0.8
    # more out-of-scope traffic expected: a threshold at least as strict
    stricter = fit_abstention(features, correct, oos, "synthetic", oos_share=0.6)
    assert stricter.threshold >= rule.threshold


def test_without_out_of_scope_rows_the_threshold_is_one_half():
    features, correct, oos = _held_out(np.random.default_rng(1), n_oos=0)
    assert fit_abstention(features, correct, oos, "synthetic").threshold == NO_OOS_THRESHOLD


def test_predict_abstains_below_the_threshold_unless_the_caller_sets_min_score():
    rule = Abstention((10.0, 0.0, 0.0, 0.0), -6.0, 0.5, 0.2, "test", 1, 0.0)
    sure = predict(["A", "A"], [0.9, 0.8], rule)  # sigmoid(10 * 0.9 - 6) ~ 0.95
    assert (sure.label, sure.abstained) == ("A", False) and sure.confidence > 0.9
    unsure = predict(["A", "B"], [0.4, 0.3], rule)  # sigmoid(-2) ~ 0.12
    assert (unsure.label, unsure.voted, unsure.abstained) == ("", "A", True)
    assert unsure.confidence == pytest.approx(1 / (1 + np.exp(2.0)))
    chosen = predict(["A", "B"], [0.4, 0.3], rule, min_score=0.35)  # the caller's own rule
    assert (chosen.label, chosen.abstained) == ("A", False)
    nothing = predict(["A", "B"], [0.4, 0.3], rule, min_score=0.5)
    assert (nothing.label, nothing.voted, nothing.abstained) == ("", "", True)
    share = predict(["A", "B"], [0.6, 0.2], None)  # no fitted rule: the vote share
    assert share.confidence == pytest.approx(0.75) and not share.abstained


def test_expected_calibration_error():
    confidence = np.array([0.9] * 10 + [0.2] * 10)
    right = np.array([True] * 9 + [False] + [True] * 2 + [False] * 8)
    assert expected_calibration_error(confidence, right) == pytest.approx(0.0)
    assert expected_calibration_error(np.full(10, 0.9), np.zeros(10, bool)) == pytest.approx(0.9)


def test_round_trip_through_the_manifest():
    rule = Abstention((1.0, 2.0, 3.0, 4.0), -1.0, 0.4, 0.2, "test", 10, 0.05)
    assert Abstention.from_dict(rule.to_dict()) == rule
    with pytest.raises(ValueError, match="features"):
        Abstention.from_dict({**rule.to_dict(), "features": ["other"]})


def test_the_domain_bar_refuses_a_sure_vote_whose_neighbours_are_too_far():
    """Out of domain: a vote the confidence model is sure of (all neighbours agree)
    still abstains when the nearest neighbour is under the bar for the query's label
    share (meaning bar at share 0, served bar at the full share, linear between)."""
    sure = Abstention((0.0, 0.0, 0.0, 0.0), 10.0, 0.5, 0.2, "test", 10, 0.0)
    rule = sure.with_domain(meaning=0.30, served=0.70, max_label_share=0.5)
    assert rule.domain_bar(0.0) == pytest.approx(0.30)
    assert rule.domain_bar(0.25) == pytest.approx(0.50)
    assert rule.domain_bar(0.5) == pytest.approx(0.70)
    labels = ["a", "a", "a"]

    def decide(top: float, share: float):
        return predict(labels, [top, top - 0.01, top - 0.02], rule, None, share)

    far = decide(0.29, 0.0)
    assert far.abstained and far.out_of_domain and far.label == "" and far.voted == "a"
    assert not decide(0.31, 0.0).abstained  # close enough by meaning
    assert decide(0.60, 0.5).out_of_domain  # inside the domain the served bar applies
    assert not decide(0.71, 0.5).abstained
    # without a label share (head-only models) or with the caller's min_score: no bar
    assert not predict(labels, [0.1, 0.1, 0.1], rule, None, None).abstained
    assert not predict(labels, [0.1, 0.1, 0.1], rule, 0.05, 0.0).abstained
    assert sure.domain_bar(0.0) is None  # a model fitted without the rule has none


def _predictions(model, reference, texts):
    """Whether each text abstained, as the server's Predict decides."""
    return np.array([d.abstained for d in _decisions(model, reference, texts)])


def _decisions(model, reference, texts):
    """Each text's Prediction, as the server's Predict decides."""
    from siamese_search.core.abstention import predict_queries
    from siamese_search.core.voting import nearest

    ref = model.embed(reference.text.tolist())
    labels = reference["class"].astype(str).to_numpy()
    vectors = model.embed(texts)
    scores, positions = nearest(ref, vectors, 5)
    votes = [(labels[p].tolist(), s.tolist()) for p, s in zip(positions, scores, strict=True)]
    return predict_queries(model, votes, vectors, texts)


def test_without_a_validation_table_in_domain_queries_are_answered_and_others_refused(
    tuned_model,
):
    """Issue 35: the served-space bar fitted on the training texts' leave-one-out
    similarity (biased upwards for a tuned model) abstained on many in-domain queries.
    The rule now: one bar from the untuned meaning space and a confidence cut at the
    held-out folds' IN_DOMAIN_ABSTAIN quantile, each saying how it was fitted. On the
    same model it abstains on fewer commit test texts than the old bar, on the likelier
    wrong ones, and still on nearly every CLINC150 text (another domain)."""
    from dataclasses import replace

    import pandas as pd

    from siamese_search.core.abstention import IN_DOMAIN_ABSTAIN
    from siamese_search.core.model_artifact import load_model
    from siamese_search.core.served_space import nearest_other
    from tests.conftest import ROOT

    model = load_model(tuned_model)
    rule = model.abstention
    assert rule.domain_served == rule.domain_meaning
    assert "untuned encoder's space" in rule.domain_rule
    assert f"{IN_DOMAIN_ABSTAIN:.0%} quantile" in rule.threshold_rule
    reference = pd.read_csv(ROOT / "data" / "commit-messages" / "train.csv")
    test = pd.read_csv(ROOT / "data" / "commit-messages" / "test.csv")[:400]
    inside = test.text.tolist()
    clinc = ROOT.parent / "shared" / "data" / "clinc150" / "test.csv"
    outside = pd.read_csv(clinc).text.tolist()[:400]
    now_in = _predictions(model, reference, inside).mean()
    now_out = _predictions(model, reference, outside).mean()
    served = nearest_other(model.embed(sorted(set(reference.text))))
    old_rule = replace(rule, domain_served=float(np.quantile(served, 0.05)), threshold=0.5)
    old = replace(model, abstention=old_rule)
    assert now_in < _predictions(old, reference, inside).mean()
    # this model is a 3-step fine-tune whose vote is right on ~83% of these texts, so
    # the rule rightly leaves more unanswered than a trained model's 4-5% (bench/
    # coverage.py): the wording agreement doubts its wrong votes (checked below)
    assert now_in <= 0.15 and now_out >= 0.90, (now_in, now_out)
    # the in-domain queries left unanswered are the likelier wrong ones: the confidence
    # cut takes some (not only the domain bar), and answering fewer raises accuracy
    decided = _decisions(model, reference, inside)
    truths = test["class"].astype(str)
    right = np.array([d.voted == truth for d, truth in zip(decided, truths, strict=True)])
    abstained = np.array([d.abstained for d in decided])
    unsure = abstained & ~np.array([d.out_of_domain for d in decided])
    assert unsure.any()
    assert right[~abstained].mean() > right.mean() > right[abstained].mean()
    assert right[abstained].mean() < 0.5  # those left unanswered were mostly wrong


def test_getinfo_and_the_evaluation_report_say_how_the_rule_was_fitted(
    tuned_model, tmp_path, sample_train
):
    from siamese_search.core.model_artifact import load_model
    from siamese_search.trainer.evaluate import main as evaluate_main

    report = tmp_path / "report.json"
    argv = ["--model", str(tuned_model), "--reference", str(sample_train)]
    argv += ["--test", str(sample_train), "--label-column", "class", "--no-plots", "--quiet"]
    assert evaluate_main([*argv, "--report-json", str(report)]) == 0
    import json

    said = json.loads(report.read_text())["abstention"]
    rule = load_model(tuned_model).abstention
    assert said["threshold"] == rule.threshold and said["domain_rule"] == rule.domain_rule
