"""Saying "none of these": a calibrated confidence for a neighbour vote, and when to abstain.

A prediction is the neighbour vote (`core.voting`). Its *confidence* is the
probability that the voted label is right, estimated by a logistic regression on
four features of the vote (`FEATURES`) and, for models calibrated without a
validation table since issue 35, the voted label's agreement with the query's
wording (`core.wording`: the wrong votes are mostly unanimous, so the vote alone
cannot tell them), fitted at training time on held-out examples
(`--validation-data`, or held-out folds of the training set): calibrated, so a
confidence of 0.8 is right about 80% of the time on data like the held-out set.
Rows labelled with the out-of-scope label (`--oos-label`, e.g. `oos`), or with a
label the model does not know, count as "should abstain": their vote is always wrong.

The *threshold* is chosen on the same held-out set: the one that maximises accuracy
(abstaining on an out-of-scope row is right, on an in-scope row wrong) when
out-of-scope rows make up `oos_share` of the traffic (default 0.2), whatever their
share in the held-out set. A model without held-out out-of-scope rows gets threshold
0.5: abstain when the vote is more likely wrong than right.

The trainer fits it (`fit_abstention`) and stores it in the model manifest; the
server and `siamese-evaluate` apply it with `predict`. Not for: searching.

*Out of domain.* The vote's shape alone cannot tell "none of these" for a query unlike
anything the model knows: its nearest neighbours still vote. With a served space
(`core.served_space`) the rule also abstains when the query's best neighbour is less
similar than all but `MEANING_DOMAIN_QUANTILE` (1%) of the training texts are to their
nearest other training text: `domain_meaning` is that similarity in the untuned encoder's space (for
queries outside the trained domain, whose served vector is all meaning) and
`domain_served` in the served space (for queries inside it); a query's bar is
interpolated by its label share, so a label added by writes, far from the training
texts, is answered when its examples are close by meaning.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from siamese_search.core.voting import Vote, vote

if TYPE_CHECKING:
    from siamese_search.core.model_artifact import EmbeddingModel

FEATURES = ("top_score", "vote_share", "winner_mean_score", "winner_top_score")
#: the features of a model with a wording model (`core.wording`): the voted label's
#: agreement with it as a fifth
WORDING_FEATURES = (*FEATURES, "wording_agreement")
#: the agreement read for a label the wording model does not know (added by writes),
#: or when no wording was given, unless the rule says otherwise (`unknown_wording`)
NO_WORDING = 1.0
DEFAULT_OOS_SHARE = 0.2
NO_OOS_THRESHOLD = 0.5
#: without a validation table, the confidence cut is this quantile of the held-out
#: folds' vote confidence. The folds' frozen heads, trained on two thirds of the
#: texts, vote less surely than the final model does on new texts, so the cut takes
#: fewer new in-domain queries than this (4% was 0.1-0.3%, no selecting at all). With
#: the wording feature, 10% of the folds' votes leaves 2.3-2.7% of the commit split's
#: in-domain queries unanswered and 2.5-4.3% of CLINC150's (4.3% and 6.4% with the
#: domain bar, against the issue's 5% and 8%); measured in bench/coverage.py, 3 seeds
#: (docs/benchmarks.md, issue 35)
IN_DOMAIN_ABSTAIN = 0.10
#: the cut of a rule that reads the vote alone (`siamese-train --no-wording`): 15% of
#: the folds' votes left 4.1% of the commit split's in-domain queries unanswered and
#: 7.3% of CLINC150's, the domain bar included (bench/coverage.py, `coverage-v3.json`
#: and `coverage-no-wording.json`)
VOTE_ONLY_IN_DOMAIN_ABSTAIN = 0.15
#: with a validation table: the quantile of its in-scope rows' top similarity that
#: sets the served-space domain bar
DOMAIN_QUANTILE = 0.05
#: without one: the quantile of the training texts' similarity to their nearest other
#: (untuned encoder) under which a query is out of domain. Low, because the bar only
#: has to catch what the confidence cut misses (with it, 99.6% of the commit texts
#: abstain against a CLINC150 model: bench/coverage.py), and the in-domain queries it
#: takes are hardly likelier wrong than others (issue 35)
MEANING_DOMAIN_QUANTILE = 0.01


def vote_features(labels: Sequence[str], scores: Sequence[float]) -> tuple[Vote, np.ndarray]:
    """The vote of one query's neighbours (nearest first) and its FEATURES."""
    decision = vote(labels, scores)
    if not decision.label:
        return decision, np.zeros(len(FEATURES), dtype=np.float64)
    winner = [float(s) for lab, s in zip(labels, scores, strict=True) if lab == decision.label]
    features = [float(scores[0]), decision.confidence, sum(winner) / len(winner), max(winner)]
    return decision, np.asarray(features, dtype=np.float64)


def with_wording(
    features: np.ndarray,
    voted: str,
    wording: Mapping[str, float] | None,
    unknown: float = NO_WORDING,
) -> np.ndarray:
    """A vote's FEATURES and its label's wording agreement (WORDING_FEATURES);
    `unknown` for a label the wording does not know, or no wording."""
    agreement = unknown if wording is None else float(wording.get(voted, unknown))
    return np.append(features, agreement)


@dataclass(frozen=True)
class Abstention:
    """A fitted confidence model and abstention threshold (stored in the model manifest)."""

    coef: tuple[float, ...]
    intercept: float
    threshold: float
    oos_share: float
    source: str  # what it was fitted on, for the manifest reader
    held_out_rows: int
    ece: float  # expected calibration error on the held-out rows
    features: tuple[str, ...] = FEATURES
    #: the out-of-domain bars (module docstring); None: no domain rule (older models)
    domain_meaning: float | None = None
    domain_served: float | None = None
    max_label_share: float = 0.5
    #: how the threshold and the domain bars were fitted, in words (manifest, GetInfo,
    #: siamese-evaluate's report); "" for models made before they said
    threshold_rule: str = ""
    domain_rule: str = ""
    #: the wording agreement read for a label the wording model does not know (added
    #: by writes): the mean agreement of the held-out votes, what the rule expects of
    #: a vote when the wording has nothing to say (bench/learning_loop.py measures it
    #: against agreement 1, full backing; issue 35)
    unknown_wording: float = NO_WORDING

    def domain_bar(self, label_share: float) -> float | None:
        """The least top similarity a query with this label share must reach."""
        if self.domain_meaning is None or self.domain_served is None:
            return None
        if self.max_label_share <= 0:
            return self.domain_meaning
        full = min(max(label_share / self.max_label_share, 0.0), 1.0)
        return self.domain_meaning + full * (self.domain_served - self.domain_meaning)

    def with_domain(
        self, meaning: float, served: float, max_label_share: float, rule: str = ""
    ) -> Abstention:
        return replace(
            self,
            domain_meaning=meaning,
            domain_served=served,
            max_label_share=max_label_share,
            domain_rule=rule,
        )

    @property
    def reads_wording(self) -> bool:
        """Whether the voted label's wording agreement is a feature (`core.wording`)."""
        return self.features == WORDING_FEATURES

    def confidence(self, features: np.ndarray) -> float:
        z = float(np.dot(self.coef, features)) + self.intercept
        return 1.0 / (1.0 + math.exp(-max(min(z, 60.0), -60.0)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict) -> Abstention:
        values = dict(payload)
        values["features"] = tuple(values.get("features", FEATURES))
        if values["features"] not in (FEATURES, WORDING_FEATURES):
            raise ValueError(
                f"abstention features {values['features']} are neither {FEATURES} "
                f"nor {WORDING_FEATURES}"
            )
        values["coef"] = tuple(values["coef"])
        if len(values["coef"]) != len(values["features"]):
            raise ValueError(f"{len(values['coef'])} coefficients for {values['features']}")
        return cls(**values)


@dataclass(frozen=True)
class Prediction:
    label: str  # "" when abstaining
    confidence: float  # calibrated probability that `voted` is right (vote share without a model)
    voted: str  # the vote's label, even when abstaining
    scores: dict[str, float]  # label -> share of the vote
    abstained: bool
    out_of_domain: bool = False  # abstained because nothing known is close enough


def predict(
    labels: Sequence[str],
    scores: Sequence[float],
    abstention: Abstention | None,
    min_score: float | None = None,
    label_share: float | None = None,
    wording: Mapping[str, float] | None = None,
) -> Prediction:
    """Label one query from its neighbours (nearest first).

    With `min_score`, neighbours under it do not vote and the model's threshold is
    not applied (the caller chose its own rule); otherwise the model's abstention rule
    decides, its domain bar included when the query's `label_share` is given (the
    served space's, `ServedSpace.label_share_of`), and the voted label's agreement
    with the query's wording when `wording` (`WordingModel.agreement`) is given and
    the rule reads it. Without a fitted `abstention`, confidence is the vote share.
    """
    if min_score is not None:
        kept = [(lab, s) for lab, s in zip(labels, scores, strict=True) if s >= min_score]
        labels, scores = [lab for lab, _ in kept], [s for _, s in kept]
    decision, features = vote_features(labels, scores)
    if not decision.label:
        return Prediction("", 0.0, "", {}, True)
    if abstention is None:
        return Prediction(
            decision.label, decision.confidence, decision.label, decision.scores, False
        )
    if abstention.reads_wording:
        features = with_wording(features, decision.label, wording, abstention.unknown_wording)
    confidence = abstention.confidence(features)
    bar = abstention.domain_bar(label_share) if label_share is not None else None
    far = min_score is None and bar is not None and float(scores[0]) < bar
    abstain = far or (min_score is None and confidence < abstention.threshold)
    label = "" if abstain else decision.label
    return Prediction(label, confidence, decision.label, decision.scores, abstain, far)


def predict_queries(
    model: EmbeddingModel,
    votes: Iterable[tuple[Sequence[str], Sequence[float]]],
    vectors: np.ndarray,
    texts: Sequence[str],
    min_score: float | None = None,
) -> list[Prediction]:
    """`predict` for a batch of queries, as the server's Predict decides: each query's
    neighbours (labels, scores; nearest first) with what the model's rule reads of the
    query itself, its label share (from its served vector) and its wording agreement
    (from its text). The server, siamese-evaluate and the benches all call this, so
    what the rule reads is derived in one place."""
    shares = model.label_shares(vectors)
    wording = model.wording_agreement(texts)
    return [
        predict(
            labels,
            scores,
            model.abstention,
            min_score,
            None if shares is None else float(shares[row]),
            None if wording is None else wording[row],
        )
        for row, (labels, scores) in enumerate(votes)
    ]


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = 10
) -> float:
    """Mean |confidence - accuracy| over equal-width confidence bins, weighted by size."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if len(confidence) == 0:
        return 0.0
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.mean() * abs(confidence[members].mean() - correct[members].mean())
    return float(total)


def fit_abstention(
    features: np.ndarray,
    correct: np.ndarray,
    out_of_scope: np.ndarray,
    source: str,
    oos_share: float = DEFAULT_OOS_SHARE,
) -> Abstention:
    """Fit confidence and threshold on held-out rows.

    `features` of each row's vote (n, len(FEATURES)), or with its label's wording
    agreement (n, len(WORDING_FEATURES)); `correct` whether the vote was right,
    `out_of_scope` whether the row should be abstained on (never correct).
    """
    from sklearn.linear_model import LogisticRegression

    names = {len(FEATURES): FEATURES, len(WORDING_FEATURES): WORDING_FEATURES}[features.shape[1]]
    correct = np.asarray(correct, dtype=bool)
    out_of_scope = np.asarray(out_of_scope, dtype=bool)
    if correct.all() or not correct.any():  # one outcome only: a constant confidence
        rate = float(correct.mean()) if len(correct) else 1.0
        logit = math.log(max(rate, 1e-6) / max(1.0 - rate, 1e-6))
        coef, intercept = (0.0,) * len(names), logit
    else:
        fitted = LogisticRegression(C=10.0, max_iter=2000).fit(features, correct)
        coef = tuple(float(c) for c in fitted.coef_[0])
        intercept = float(fitted.intercept_[0])
    draft = Abstention(
        coef, intercept, NO_OOS_THRESHOLD, oos_share, source, len(correct), 0.0, names
    )
    confidence = np.array([draft.confidence(row) for row in features])
    ece = expected_calibration_error(confidence, correct)
    threshold = NO_OOS_THRESHOLD
    if out_of_scope.any() and (~out_of_scope).any():
        threshold = _best_threshold(confidence, correct, out_of_scope, oos_share)
    return Abstention(coef, intercept, threshold, oos_share, source, len(correct), ece, names)


def _best_threshold(
    confidence: np.ndarray, correct: np.ndarray, out_of_scope: np.ndarray, oos_share: float
) -> float:
    """The threshold with the best accuracy when out-of-scope rows are `oos_share` of all."""
    best_score, best = -1.0, NO_OOS_THRESHOLD
    for threshold in np.unique(np.concatenate([[0.0], confidence])):
        answered = confidence >= threshold
        in_scope_accuracy = (answered & correct)[~out_of_scope].mean()
        oos_recall = (~answered)[out_of_scope].mean()
        score = (1.0 - oos_share) * in_scope_accuracy + oos_share * oos_recall
        if score > best_score:
            best_score, best = score, float(threshold)
    return best
