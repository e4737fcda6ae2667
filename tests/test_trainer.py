"""Training the head for real (small, seeded): losses, reproducibility, numpy/Keras parity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from siamese_search.core.errors import UserError
from siamese_search.core.model_artifact import (
    HEAD_KERAS,
    HEAD_WEIGHTS,
    LOSS_CURVE,
    MANIFEST,
    load_model,
)
from siamese_search.trainer import losses
from siamese_search.trainer.config import HeadConfig, TrainingConfig
from siamese_search.trainer.train import random_triplets, train_head


def _clusters(seed=0, n_per_class=8, dim=32):
    """Three noisy clusters on the unit sphere."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, dim))
    x = np.concatenate([c + 0.8 * rng.normal(size=(n_per_class, dim)) for c in centres])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = [str(i) for i in range(3) for _ in range(n_per_class)]
    return x.astype(np.float32), labels


def test_batch_hard_loss_matches_hand_computation():
    e = tf.math.l2_normalize(tf.constant([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]]), 1)
    y = tf.constant([0, 0, 1, 1])
    # cosine distances: d(0,1)=0.2, d(0,2)=1, d(0,3)=2, d(1,2)=0.4, d(1,3)=1.8, d(2,3)=1
    # anchors: 0: relu(0.2-1+0.4)=0; 1: relu(0.2-0.4+0.4)=0.2; 2: relu(1-0.4+0.4)=1.0;
    # 3: relu(1-1.8+0.4)=0  -> mean 0.3
    assert float(losses.batch_hard_triplet_loss(e, y, 0.4)) == pytest.approx(0.3, abs=1e-5)
    triplets = tf.constant([[0, 1, 2], [2, 3, 1]])
    # (0,1,2): relu(0.2-1+0.4)=0 ; (2,3,1): relu(1-0.4+0.4)=1.0 -> mean 0.5
    assert float(losses.triplet_loss(e, triplets, 0.4)) == pytest.approx(0.5, abs=1e-5)
    # semi-hard, per (anchor, positive): (0,1) closest negative farther than 0.2 is 2 at 1
    # -> 0; (1,0) -> 2 at 0.4 -> 0.2; (2,3) none farther than 1, hardest 1 at 0.4 -> 1.0;
    # (3,2) -> 1 at 1.8 -> 0  -> mean 0.3
    assert float(losses.semi_hard_triplet_loss(e, y, 0.4)) == pytest.approx(0.3, abs=1e-5)


def test_random_triplets_are_valid():
    labels = np.array([0, 0, 1, 1, 2, 2])
    for a, p, n in random_triplets(labels, np.random.default_rng(0)):
        assert a != p and labels[a] == labels[p] and labels[a] != labels[n]


@pytest.mark.parametrize("mining", ["batch-hard", "semi-hard", "random"])
def test_training_lowers_the_loss_and_separates_classes(mining):
    x, labels = _clusters()
    config = TrainingConfig(mining=mining, steps=60, head=HeadConfig(ensemble=1), seed=0)
    result = train_head(x, labels, config, show_progress=False)
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])
    out = result.head(x, training=False).numpy()
    same = out[:8] @ out[:8].T
    other = out[:8] @ out[8:].T
    assert same.mean() > other.mean() + 0.2


@pytest.mark.parametrize("kind", ["residual", "seed"])
def test_proxy_loss_trains_either_head_and_numpy_runs_it(kind):
    from siamese_search.core.numpy_head import NumpyHead

    x, labels = _clusters()
    config = TrainingConfig(loss="proxy", head=HeadConfig(kind=kind, ensemble=1), steps=60)
    result = train_head(x, labels, config, show_progress=False)
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])
    out = result.head(x, training=False).numpy()
    assert (out[:8] @ out[:8].T).mean() > (out[:8] @ out[8:].T).mean() + 0.2
    numpy_head = NumpyHead(result.weights)
    assert numpy_head.kind == kind
    np.testing.assert_allclose(numpy_head(x), out, atol=1e-5)
    if kind == "residual":  # keeps the encoder's dimension
        assert out.shape[1] == x.shape[1]


def test_residual_head_starts_as_the_identity():
    from siamese_search.trainer.head import build_head

    x, _ = _clusters()
    head, members = build_head(x.shape[1], HeadConfig(kind="residual"))
    assert members is head
    np.testing.assert_allclose(head(x, training=False).numpy(), x, atol=1e-6)


def test_proxy_loss_matches_hand_computation():
    e = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    proxies = tf.Variable([[2.0, 0.0], [0.0, 3.0]])  # normalised inside: unit axes
    y = tf.constant([0, 0])
    # logits (scale 2): row 0 -> [2, 0], row 1 -> [0, 2]; labels both 0
    expected = (np.log(1 + np.exp(-2.0)) + np.log(1 + np.exp(2.0))) / 2
    got = float(losses.proxy_softmax_loss(e, y, proxies, scale=2.0))
    assert got == pytest.approx(expected, abs=1e-5)


def test_contrastive_loss_matches_hand_computation():
    e = tf.constant([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # anchors 0 and 1: their one positive at similarity 1 against the other row at 0,
    # -log(e / (e + 1)); anchor 2 has no positive and is left out of the mean
    expected = np.log(1 + np.exp(-1.0))
    got = float(losses.supervised_contrastive_loss(e, tf.constant([0, 0, 1]), temperature=1.0))
    assert got == pytest.approx(expected, abs=1e-5)
    alone = losses.supervised_contrastive_loss(e, tf.constant([0, 1, 2]), temperature=1.0)
    assert float(alone) == 0.0


def test_proxy_objective_adds_the_weighted_contrastive_term():
    from siamese_search.trainer.train import Objective

    x, labels = _clusters()
    y = np.unique(labels, return_inverse=True)[1].astype(np.int32)
    plain = TrainingConfig(loss="proxy", contrastive_weight=0.0)
    weighted = TrainingConfig(loss="proxy", contrastive_weight=0.5, contrastive_temperature=0.2)
    out, ids = tf.constant(x), tf.constant(y)
    without = float(Objective(plain, y, x)(out, ids, None))
    contrastive = float(losses.supervised_contrastive_loss(out, ids, 0.2))
    assert contrastive > 0.1
    with_term = float(Objective(weighted, y, x)(out, ids, None))
    assert with_term == pytest.approx(without + 0.5 * contrastive, rel=1e-5)


def test_proxy_training_with_the_contrastive_term_separates_classes():
    x, labels = _clusters()
    config = TrainingConfig(loss="proxy", contrastive_weight=0.5, steps=60, seed=0)
    result = train_head(x, labels, config, show_progress=False)  # the traced step
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])
    out = result.head(x, training=False).numpy()
    assert (out[:8] @ out[:8].T).mean() > (out[:8] @ out[8:].T).mean() + 0.2


def test_auto_recipe_follows_the_data():
    few = TrainingConfig().resolved_for(examples=100, classes=5)
    assert (few.loss, few.head.kind, few.fine_tune) == ("triplet", "seed", True)
    assert (few.steps, few.encoder_learning_rate) == (100, 1e-3)
    assert few.label_share == 0.5 and few.served_space == "meaning+labels"
    many = TrainingConfig().resolved_for(examples=1500, classes=150)
    assert (many.loss, many.head.kind, many.fine_tune) == ("proxy", "residual", True)
    assert (many.steps, many.encoder_learning_rate) == (60, 3e-4)
    assert many.label_share == 0.8 and many.contrastive_weight == 0.0  # opt-in
    frozen = TrainingConfig(fine_tune=False).resolved_for(examples=1500, classes=150)
    assert (frozen.fine_tune, frozen.steps) == (False, 300)
    hub = TrainingConfig(encoder="/models/use-large").resolved_for(examples=100, classes=5)
    assert hub.fine_tune is False  # only the embedded encoder can be fine-tuned
    original = TrainingConfig(mining="random").resolved_for(examples=100, classes=5)
    assert (original.fine_tune, original.steps) == (False, 400)
    chosen = TrainingConfig(loss="proxy", steps=7).resolved_for(examples=100, classes=5)
    assert (chosen.loss, chosen.head.kind, chosen.steps) == ("proxy", "residual", 7)


@pytest.mark.slow
def test_same_seed_same_weights_other_seed_other_weights():
    x, labels = _clusters()
    config = TrainingConfig(steps=20, head=HeadConfig(ensemble=2), seed=3)
    first = train_head(x, labels, config, show_progress=False).weights
    second = train_head(x, labels, config, show_progress=False).weights
    third = train_head(
        x,
        labels,
        TrainingConfig(steps=20, head=HeadConfig(ensemble=2), seed=4),
        show_progress=False,
    ).weights
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    assert any(not np.array_equal(first[n], third[n]) for n in first)


def test_large_sets_train_on_class_balanced_batches():
    x, labels = _clusters(n_per_class=40)
    config = TrainingConfig(
        steps=15, batch_size=16, samples_per_class=4, head=HeadConfig(ensemble=1)
    )
    result = train_head(x, labels, config, show_progress=False)
    assert len(result.losses) == 15 and np.isfinite(result.losses).all()


def test_validation_early_stopping_restores_the_best_step():
    x, labels = _clusters(n_per_class=12)
    config = TrainingConfig(
        steps=200, eval_every=10, patience=2, validation_fraction=0.25, head=HeadConfig(ensemble=1)
    )
    result = train_head(x, labels, config, show_progress=False)
    assert result.validation
    best_score = max(score for _, score in result.validation)
    assert dict(result.validation)[result.best_step] == best_score


def test_config_rejects_nonsense():
    with pytest.raises(UserError, match="--mining"):
        TrainingConfig(mining="hardest")
    with pytest.raises(UserError, match="--margin"):
        TrainingConfig(margin=0.0)
    with pytest.raises(UserError, match="--contrastive-weight"):
        TrainingConfig(contrastive_weight=-1.0)
    with pytest.raises(UserError, match="--contrastive-weight goes with --loss proxy"):
        TrainingConfig(contrastive_weight=0.5).resolved_for(examples=100, classes=5)
    with pytest.raises(UserError, match="--contrastive-temperature"):
        TrainingConfig(contrastive_temperature=0.0)


def test_model_directory_contents_and_numpy_keras_parity(trained_model, sample_train):
    import keras

    for name in (MANIFEST, HEAD_KERAS, HEAD_WEIGHTS, LOSS_CURVE):
        assert (trained_model / name).is_file()
    manifest = json.loads((trained_model / MANIFEST).read_text())
    assert manifest["data"]["label_counts"] == {str(c): 20 for c in range(1, 6)}
    assert manifest["training"]["config"]["margin"] == 0.4
    assert manifest["encoder"]["fingerprint"]["dim"] == 512
    assert manifest["versions"]["tensorflow"] != "not installed"
    assert np.isfinite(manifest["training"]["final_loss"])

    model = load_model(trained_model)
    keras_head = keras.models.load_model(trained_model / HEAD_KERAS)
    sentence_vectors = model.encoder.encode(["Fix the build", "Improve query performance"])
    np.testing.assert_allclose(
        model.head(sentence_vectors),
        keras_head(sentence_vectors, training=False).numpy(),
        atol=1e-5,
    )
    embedded = model.embed(["Fix the build"])
    assert embedded.shape == (1, 512 + 128)  # the served space: meaning beside labels
    assert (trained_model / "space.npz").is_file() and manifest["space"]["label_dim"] == 128
    np.testing.assert_allclose(np.linalg.norm(embedded), 1.0, atol=1e-5)


def test_auto_head_and_loss_are_accepted_as_documented():
    from siamese_search.trainer.cli import build_parser, config_from_args

    args = build_parser().parse_args(
        ["--data", "x.csv", "--out", "m", "--head", "auto", "--loss", "auto"]
    )
    config = config_from_args(args)
    assert config.head.kind == "auto" and config.loss == "auto"


def test_contrastive_flags_reach_the_config():
    from siamese_search.trainer.cli import build_parser, config_from_args

    given = ["--contrastive-weight", "0.5", "--contrastive-temperature", "0.3"]
    args = build_parser().parse_args(["--data", "x.csv", "--out", "m", *given])
    config = config_from_args(args).resolved_for(examples=1500, classes=150)
    assert (config.loss, config.contrastive_weight) == ("proxy", 0.5)
    assert config.contrastive_temperature == 0.3
    default = config_from_args(build_parser().parse_args(["--data", "x.csv", "--out", "m"]))
    assert default.resolved_for(examples=1500, classes=150).contrastive_weight == 0.0


def test_the_fine_tune_reads_a_long_texts_first_tokens_and_its_end():
    """Batches are padded to their longest text: one huge row would take the whole
    table's padded array with it (trainer.finetune.FINE_TUNE_MAX_TOKENS)."""
    from siamese_search.trainer.finetune import FINE_TUNE_MAX_TOKENS, tokenize

    short, long = tokenize(["fix crash", "fix crash " * 5000], "none")
    assert len(long) == FINE_TUNE_MAX_TOKENS and long[-1] == short[-1]  # EOS
    assert long[:3] == short[:3] and len(short) == 4
