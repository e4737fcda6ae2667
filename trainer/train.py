"""Fitting the siamese head on frozen sentence vectors, and what both trainers share.

The loss (`Objective`) is the normalised softmax over one learned proxy per class by
default (`--loss proxy`), or the design card's cosine triplet loss (`--loss triplet`,
mined batch-hard, semi-hard or at random). With the encoder frozen, every text is
encoded once up front and training runs on the cached vectors: a 100-example job
takes a few seconds on 2 cores. `trainer.finetune` trains the encoder too, with the
same objective and step loop (`run_steps`).

Batches: when the labelled set fits in a batch, every step sees all of it (mining then
finds the globally hardest triplets); otherwise each step draws P classes x K
examples for the triplet losses (every anchor has positives), or a uniform random
batch for the proxy loss (proxies stand for the classes a batch lacks).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from siamese_search.core.tf_runtime import configure_tensorflow_threads
from siamese_search.core.voting import knn_vote
from siamese_search.trainer.config import TrainingConfig

if TYPE_CHECKING:  # TensorFlow loads only when training starts
    import keras

    from siamese_search.trainer.use_network import UseNetwork


#: the proxy loss on frozen vectors sees every example each step up to this many
FULL_BATCH_LIMIT = 4096


@dataclass
class TrainResult:
    head: keras.Model
    weights: dict[str, Any]  # name -> float32 array (trainer.head.export_weights)
    losses: list[float]
    validation: list[tuple[int, float]] = field(default_factory=list)
    best_step: int = 0
    seconds: float = 0.0
    network: UseNetwork | None = None  # the tuned encoder (--fine-tune)


def stratified_split(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ~fraction of each class, always leaving 2 per class for training."""
    train: list[int] = []
    held: list[int] = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_held = min(int(round(fraction * len(members))), len(members) - 2)
        held.extend(members[:n_held])
        train.extend(members[n_held:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(held, dtype=np.int64))


class BatchSampler:
    """Which examples each step sees: all of them when they fit in `batch_size`;
    otherwise P classes x K examples for triplet losses (every anchor has positives),
    or a uniform random batch for the proxy loss (proxies stand for absent classes)."""

    def __init__(
        self,
        labels: np.ndarray,
        config: TrainingConfig,
        rng: np.random.Generator,
        batch_size: int | None = None,
    ):
        self.labels = labels
        self.rng = rng
        self.batch_size = batch_size or config.batch_size
        self.full = len(labels) <= self.batch_size
        self.uniform = config.loss == "proxy"
        self.by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        self.k = config.samples_per_class
        self.p = max(2, self.batch_size // self.k)

    def __call__(self) -> np.ndarray:
        if self.full:
            return np.arange(len(self.labels))
        if self.uniform:
            return np.sort(self.rng.choice(len(self.labels), self.batch_size, replace=False))
        chosen = self.rng.choice(len(self.by_class), min(self.p, len(self.by_class)), replace=False)
        picks = [
            self.rng.choice(self.by_class[c], self.k, replace=len(self.by_class[c]) < self.k)
            for c in chosen
        ]
        return np.concatenate(picks)


def random_triplets(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One (anchor, random positive, random negative) triplet per anchor: the original."""
    rows = []
    for anchor, label in enumerate(labels):
        positives = np.flatnonzero((labels == label) & (np.arange(len(labels)) != anchor))
        negatives = np.flatnonzero(labels != label)
        if len(positives) and len(negatives):
            rows.append((anchor, rng.choice(positives), rng.choice(negatives)))
    return np.array(rows, dtype=np.int32).reshape(-1, 3)


class Objective:
    """The training loss over the head's outputs (one per seed-head member).

    `proxy` (default): `losses.proxy_softmax_loss` with one trainable proxy per class,
    started at the class means of `initial` (the examples' embeddings before training),
    plus `contrastive_weight` x `losses.supervised_contrastive_loss` over the batch.
    `triplet`: the design card's cosine triplet loss, mined per `config.mining`.
    """

    def __init__(self, config: TrainingConfig, label_ids: np.ndarray, initial: np.ndarray):
        import tensorflow as tf

        from siamese_search.trainer import losses

        self.config = config
        self.proxies = None
        if config.loss == "proxy":
            n_classes = int(label_ids.max()) + 1
            means = np.stack([initial[label_ids == c].mean(axis=0) for c in range(n_classes)])
            means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
            self.proxies = tf.Variable(means.astype(np.float32), name="class_proxies")
        self._losses = losses
        self.mined = {
            "batch-hard": losses.batch_hard_triplet_loss,
            "semi-hard": losses.semi_hard_triplet_loss,
        }.get(config.mining)

    @property
    def variables(self) -> list:
        return [self.proxies] if self.proxies is not None else []

    @property
    def needs_triplets(self) -> bool:
        return self.config.loss == "triplet" and self.mined is None

    def __call__(self, outputs, y, triplets):
        """Mean loss over the members' outputs (a list, or one tensor)."""
        import tensorflow as tf

        outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
        config, losses = self.config, self._losses
        if self.proxies is not None:
            per_member = [self._proxy_loss(out, y) for out in outputs]
        elif self.mined is not None:
            per_member = [self.mined(out, y, config.margin) for out in outputs]
        else:
            per_member = [losses.triplet_loss(out, triplets, config.margin) for out in outputs]
        return tf.add_n(per_member) / len(per_member)

    def _proxy_loss(self, out, y):
        """The proxy loss of one member's output, plus the weighted contrastive term."""
        config, losses = self.config, self._losses
        loss = losses.proxy_softmax_loss(out, y, self.proxies, config.proxy_scale)
        if config.contrastive_weight:
            term = losses.supervised_contrastive_loss(out, y, config.contrastive_temperature)
            loss += config.contrastive_weight * term
        return loss


def knn_macro_f1(
    reference: np.ndarray,
    reference_labels: np.ndarray,
    queries: np.ndarray,
    query_labels: np.ndarray,
    k: int = 5,
) -> float:
    from siamese_search.trainer import metrics

    predicted = [v.label for v in knn_vote(reference, reference_labels, queries, k)]
    truth = list(query_labels)
    return metrics.macro_f1(truth, predicted, sorted(set(truth) | set(predicted)))


class EarlyStopping:
    """Validation-based early stopping on a held-out split (`--validation-fraction`).

    Every `eval_every` steps (and at the last step) it labels the held-out examples by
    kNN against the training examples in the current embedding, records macro-F1, keeps
    a copy of the best weights, and asks to stop after `patience` evaluations without a
    gain. `embed(indices)` returns unit vectors for those examples; `get_weights` /
    `set_weights` copy and restore whatever is being trained.
    """

    def __init__(
        self,
        config: TrainingConfig,
        labels: np.ndarray,
        train_idx: np.ndarray,
        held_idx: np.ndarray,
        embed,
        get_weights,
        set_weights,
    ):
        self.config = config
        self.labels = labels
        self.train_idx, self.held_idx = train_idx, held_idx
        self.embed, self.get_weights, self.set_weights = embed, get_weights, set_weights
        self.history: list[tuple[int, float]] = []
        self._best: tuple[float, int, object] = (-1.0, 0, None)
        self._without_gain = 0

    @property
    def active(self) -> bool:
        return len(self.held_idx) > 0

    def should_stop(self, step: int) -> bool:
        if not self.active or (step % self.config.eval_every and step != self.config.steps):
            return False
        score = knn_macro_f1(
            self.embed(self.train_idx),
            self.labels[self.train_idx],
            self.embed(self.held_idx),
            self.labels[self.held_idx],
        )
        self.history.append((step, score))
        if score > self._best[0]:
            self._best = (score, step, self.get_weights())
            self._without_gain = 0
            return False
        self._without_gain += 1
        return self._without_gain >= self.config.patience

    def restore_best(self, steps_run: int) -> int:
        """Put the best weights back; return the step they come from."""
        if self._best[2] is None:
            return steps_run
        self.set_weights(self._best[2])
        return self._best[1]


def split_for_validation(
    labels: np.ndarray, config: TrainingConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    if config.validation_fraction > 0:
        return stratified_split(labels, config.validation_fraction, rng)
    return np.arange(len(labels)), np.array([], dtype=np.int64)


@dataclass
class RunSetup:
    """What every training run starts from: seeded RNGs and the labels, split."""

    rng: np.random.Generator
    labels: np.ndarray  # the string labels, as an array
    label_ids: np.ndarray  # int32 class index per example
    train_idx: np.ndarray
    held_idx: np.ndarray  # empty unless --validation-fraction


def start_run(labels: list[str], config: TrainingConfig) -> RunSetup:
    """Pin TF threads, seed Python/numpy/TF (deterministic ops), split for validation."""
    configure_tensorflow_threads()
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(config.seed)
    label_array = np.asarray(labels)
    label_ids = np.unique(label_array, return_inverse=True)[1].astype(np.int32)
    train_idx, held_idx = split_for_validation(label_array, config, rng)
    return RunSetup(rng, label_array, label_ids, train_idx, held_idx)


def run_steps(
    train_step,
    config: TrainingConfig,
    stopping: EarlyStopping,
    description: str,
    show_progress: bool,
) -> tuple[list[float], int]:
    """The step loop both trainers share: progress bar, loss history, early stopping.

    `train_step()` runs one optimizer step and returns its loss. Returns the loss
    history and the step whose weights are in place at the end.
    """
    assert config.steps is not None, "resolve steps first (TrainingConfig.with_steps_for)"
    history: list[float] = []
    bar = tqdm(
        range(1, config.steps + 1),
        desc=description,
        unit="step",
        disable=not show_progress,
        mininterval=0.5,
    )
    for step_number in bar:
        history.append(train_step())
        if step_number % 10 == 0:
            bar.set_postfix(loss=f"{history[-1]:.4f}", refresh=False)
        if stopping.should_stop(step_number):
            break
    return history, stopping.restore_best(len(history))


def step_signature():
    """The (batch row indices, triplets) a training step takes, any batch size.

    A fixed signature, and optimizer slots built before the first call, trace a step
    once per training: with `reduce_retracing` and slots made on the first call it was
    traced three times (~1.2 s each here), most of a small training's time.
    """
    import tensorflow as tf

    return [tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, 3], tf.int32)]


def train_head(
    vectors: np.ndarray, labels: list[str], config: TrainingConfig, show_progress: bool = True
) -> TrainResult:
    """Train the head on (n, dim) unit sentence vectors with string labels."""
    config = config.resolved_for(len(labels), len(set(labels)))
    run = start_run(labels, config)  # imports TensorFlow (~3 s), not counted as training
    started = time.perf_counter()
    import keras
    import tensorflow as tf

    from siamese_search.trainer.head import build_head, export_weights

    rng, label_array, label_ids = run.rng, run.labels, run.label_ids
    train_idx, held_idx = run.train_idx, run.held_idx
    x_train = tf.constant(vectors[train_idx], dtype=tf.float32)
    y_train = tf.constant(label_ids[train_idx])

    head, members = build_head(vectors.shape[1], config.head)
    objective = Objective(config, label_ids[train_idx], head(x_train, training=False).numpy())
    trained = [*members.trainable_variables, *objective.variables]
    optimizer = keras.optimizers.Adam(config.learning_rate)
    optimizer.build(trained)  # its slots exist before tracing: see step_signature

    @tf.function(input_signature=step_signature())
    def step(indices, triplets):
        x, y = tf.gather(x_train, indices), tf.gather(y_train, indices)
        with tf.GradientTape() as tape:
            loss = objective(members(x, training=True), y, triplets)
            total = loss + tf.add_n(members.losses) if members.losses else loss
        gradients = tape.gradient(total, trained)
        optimizer.apply_gradients(zip(gradients, trained, strict=True))
        return loss

    # frozen vectors are cheap: the proxy loss sees every example each step up to
    # FULL_BATCH_LIMIT of them (the triplet losses keep their P x K batches)
    batch = FULL_BATCH_LIMIT if config.loss == "proxy" else None
    sampler = BatchSampler(label_array[train_idx], config, rng, batch_size=batch)
    empty_triplets = np.zeros((0, 3), dtype=np.int32)
    stopping = EarlyStopping(
        config,
        label_array,
        train_idx,
        held_idx,
        embed=lambda idx: head(vectors[idx], training=False).numpy(),
        get_weights=head.get_weights,
        set_weights=head.set_weights,
    )

    def train_step() -> float:
        chosen = sampler()
        triplets = (
            random_triplets(label_ids[train_idx][chosen], rng)
            if objective.needs_triplets
            else empty_triplets
        )
        return float(step(tf.constant(chosen, dtype=tf.int32), tf.constant(triplets)))

    history, best_step = run_steps(train_step, config, stopping, "training head", show_progress)
    return TrainResult(
        head=head,
        weights=export_weights(head, config.head),
        losses=history,
        validation=stopping.history,
        best_step=best_step,
        seconds=time.perf_counter() - started,
    )
