"""Fitting the model's abstention rule (`core.abstention`) on held-out examples.

With `--validation-data FILE`: the trained model labels every validation row by the
vote of its k nearest training examples, exactly as siamese-evaluate and the server
would with the training set as reference; rows labelled `--oos-label` (or with a
label the training set lacks) should be abstained on.

Without it: held-out folds of the training set. The frozen head is trained on the
other folds (cheap: seconds) and votes on the held-out fold. When the final model
fine-tunes its encoder this is an approximation (the folds do not fine-tune, which
would cost a fine-tuning per fold): give --validation-data for a calibration of the
model itself. Each fold also fits a wording model (`core.wording`) on its training
part, and the rule reads the voted label's agreement with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from siamese_search.core.abstention import (
    DEFAULT_OOS_SHARE,
    DOMAIN_QUANTILE,
    FEATURES,
    IN_DOMAIN_ABSTAIN,
    MEANING_DOMAIN_QUANTILE,
    VOTE_ONLY_IN_DOMAIN_ABSTAIN,
    WORDING_FEATURES,
    Abstention,
    fit_abstention,
    vote_features,
    with_wording,
)
from siamese_search.core.served_space import fit_space, nearest_other
from siamese_search.core.voting import nearest
from siamese_search.core.wording import fit_wording
from siamese_search.trainer.config import TrainingConfig

DEFAULT_K = 5
FOLDS = 3


def vote_table(
    reference: np.ndarray,
    reference_labels: Sequence[str],
    queries: np.ndarray,
    query_labels: Sequence[str],
    known: set[str],
    wording: Sequence[dict[str, float]] | None = None,
    k: int = DEFAULT_K,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, vote correct, out of scope) of each query against the reference rows;
    with each query's `wording` agreement (`core.wording`), WORDING_FEATURES."""
    scores, positions = nearest(reference, queries, k)
    labels = np.asarray(reference_labels)
    width = len(FEATURES) if wording is None else len(WORDING_FEATURES)
    features = np.zeros((len(queries), width))
    correct = np.zeros(len(queries), dtype=bool)
    for i, (row, row_scores) in enumerate(zip(positions, scores, strict=True)):
        decision, vote_row = vote_features(labels[row].tolist(), row_scores.tolist())
        if wording is not None:
            vote_row = with_wording(vote_row, decision.label, wording[i])
        features[i] = vote_row
        correct[i] = decision.label == query_labels[i]
    out_of_scope = np.array([label not in known for label in query_labels], dtype=bool)
    return features, correct, out_of_scope


def on_validation(
    model,
    train: tuple[Sequence[str], Sequence[str]],
    validation: tuple[Sequence[str], Sequence[str]],
    source: str,
    oos_share: float = DEFAULT_OOS_SHARE,
) -> Abstention:
    """Fit on a validation table, (texts, labels) each, with the trained model as it
    is served: the confidence model and threshold, then (served space only) the
    out-of-domain bars from the same vote (`with_domain`).

    The vote's features only: with a validation table the rule's hard part is the
    out-of-scope rows, and reading the wording agreement (`core.wording`) as well cost
    CLINC150 0.8 point of overall accuracy (0.865 to 0.857; out-of-scope recall 0.83 to
    0.78; bench/accuracy.py --dataset clinc, 3 seeds). Without one (`on_folds`) it is
    what tells the in-domain votes that would be wrong (issue 35)."""
    queries = model.embed_unique(list(validation[0]))
    features, correct, oos = vote_table(
        model.embed_unique(list(train[0])),
        list(train[1]),
        queries,
        list(validation[1]),
        set(train[1]),
    )
    rule = fit_abstention(features, correct, oos, source, oos_share)
    if model.space is None or not (~oos).any():
        return rule
    return _validation_domain(rule, model, features, correct, oos, queries, oos_share)


def fold_assignment(labels: Sequence[str], seed: int) -> np.ndarray:
    """Each row's held-out fold (0 to FOLDS - 1), stratified: each label's rows are
    spread over the folds in a seeded random order (bench/fine_tuned_folds.py trains
    full models on the same folds)."""
    label_array = np.asarray(labels)
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(label_array), dtype=np.int64)
    for label in np.unique(label_array):
        members = rng.permutation(np.flatnonzero(label_array == label))
        fold_of[members] = np.arange(len(members)) % FOLDS
    return fold_of


def on_folds(
    vectors: np.ndarray,
    labels: list[str],
    config: TrainingConfig,
    train_head: Callable,
    oos_share: float = DEFAULT_OOS_SHARE,
    label_share: float | None = None,
    texts: Sequence[str] | None = None,
    show_progress: bool = False,
) -> Abstention:
    """Fit on held-out folds of the training set (encoder vectors in, frozen heads).

    With `label_share`, each fold votes in its own served space (`core.served_space`,
    gated by the fold's training texts), as the model will; without, in the head's.
    With the training `texts`, each fold also fits its own wording model
    (`core.wording`) and the rule reads the voted label's agreement with it.
    `show_progress`: a bar over the folds (~5 s each for CLINC150's 1,500 texts,
    mostly the wording model's fit).
    """
    from tqdm.auto import tqdm

    from siamese_search.core.numpy_head import NumpyHead

    label_array = np.asarray(labels)
    text_array = None if texts is None else np.asarray(texts, dtype=object)
    fold_of = fold_assignment(labels, config.seed)
    fold_config = replace(config, fine_tune=False, validation_fraction=0.0)
    parts = []
    folds = tqdm(
        range(FOLDS), desc="calibrating on held-out folds", unit="fold", disable=not show_progress
    )
    for fold in folds:
        held, kept = fold_of == fold, fold_of != fold
        if not held.any() or len(set(label_array[kept])) < 2:
            continue
        result = train_head(vectors[kept], label_array[kept].tolist(), fold_config, False)
        head = NumpyHead(result.weights)
        space = fit_space(vectors[kept], head.output_dim, label_share) if label_share else None

        def embed(rows: np.ndarray, head=head, space=space) -> np.ndarray:
            return head(rows) if space is None else space.project(rows, head(rows))

        wording = None
        if text_array is not None:
            fold_wording = fit_wording(
                text_array[kept].tolist(), label_array[kept].tolist(), config.preprocess
            )
            if fold_wording is not None:
                wording = fold_wording.agreement(text_array[held].tolist())
        parts.append(
            vote_table(
                embed(vectors[kept]),
                label_array[kept].tolist(),
                embed(vectors[held]),
                label_array[held].tolist(),
                set(label_array[kept]),
                wording,
            )
        )
    features = np.concatenate([p[0] for p in parts])
    correct = np.concatenate([p[1] for p in parts])
    oos = np.concatenate([p[2] for p in parts])
    rule = fit_abstention(
        features, correct, oos, f"{FOLDS} held-out folds of the training set", oos_share
    )
    if rule.reads_wording:  # a label the wording never saw: what a held-out vote gets
        rule = replace(rule, unknown_wording=float(features[:, -1].mean()))
    if oos.any():
        return rule
    # no out-of-scope rows to weigh: the cut is where IN_DOMAIN_ABSTAIN of the held-out
    # in-domain votes fall, VOTE_ONLY_IN_DOMAIN_ABSTAIN for a rule without the wording
    # (NO_OOS_THRESHOLD, 0.5, abstained on ~0.2% of CLINC150's in-scope queries while
    # the domain bar took 20%; the confidence, not the distance, tells the queries that
    # would be answered wrong: issue 35)
    confidence = np.array([rule.confidence(row) for row in features])
    quantile = IN_DOMAIN_ABSTAIN if rule.reads_wording else VOTE_ONLY_IN_DOMAIN_ABSTAIN
    threshold = float(np.quantile(confidence, quantile))
    said = (
        f"the {quantile:.0%} quantile of the confidence of {len(features)} held-out "
        f"votes ({FOLDS} folds of the training set)"
    )
    return replace(rule, threshold=threshold, threshold_rule=said)


def with_domain(rule: Abstention, model) -> Abstention:
    """`rule` plus the out-of-domain bars of `core.abstention` when no validation table
    was given (unchanged for a model without a served space).

    One bar for every query: the MEANING_DOMAIN_QUANTILE quantile of each training text's
    similarity to its nearest other one in the untuned encoder's space (not trained,
    so unbiased: a new in-domain text is about as close to the training texts as they
    are to each other). The served-space bar used before, the same quantile of the
    training texts' leave-one-out similarity in the served space, is biased upwards
    for a fine-tuned model, whose training texts sit closer together than new ones: it
    abstained on 20% of CLINC150's in-scope queries and 8.5% of the commit split's
    (bench/coverage.py, 3 seeds; issue 35). The bar reads the space's anchors: the
    training texts' meaning vectors.
    """
    if model.space is None:
        return rule
    meaning = _meaning_bar(model, MEANING_DOMAIN_QUANTILE)
    said = (
        f"the {MEANING_DOMAIN_QUANTILE:.0%} quantile of the training texts' similarity to their "
        "nearest other in the untuned encoder's space, for every query"
    )
    return rule.with_domain(meaning, meaning, model.space.max_label_share, said)


def _meaning_bar(model, quantile: float) -> float:
    return float(np.quantile(nearest_other(model.space.anchors), quantile))


def _validation_domain(
    rule: Abstention,
    model,
    features: np.ndarray,
    correct: np.ndarray,
    oos: np.ndarray,
    queries: np.ndarray,
    oos_share: float,
) -> Abstention:
    """The out-of-domain bars from a validation table's vote: the served bar is the
    DOMAIN_QUANTILE quantile of its in-scope rows' top similarity to the training
    texts. With out-of-scope rows, the bars are kept only if they raise its
    `oos_share`-weighted accuracy."""
    top = features[:, FEATURES.index("top_score")]
    candidate = rule.with_domain(
        _meaning_bar(model, DOMAIN_QUANTILE),
        float(np.quantile(top[~oos], DOMAIN_QUANTILE)),
        model.space.max_label_share,
    )
    if not oos.any():
        return candidate
    confidence = np.array([rule.confidence(row) for row in features])
    unsure = confidence < rule.threshold
    bars = np.array([candidate.domain_bar(float(w)) for w in model.label_shares(queries)])
    far = top < bars

    def weighted_accuracy(abstain: np.ndarray) -> float:
        in_scope = (correct & ~abstain)[~oos].mean()
        return (1.0 - oos_share) * in_scope + oos_share * abstain[oos].mean()

    return candidate if weighted_accuracy(unsure | far) >= weighted_accuracy(unsure) else rule
