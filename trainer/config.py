"""Every training knob in one place, with defaults that work.

The defaults are the ones measured best (README.md, "Results"; `bash bench/ablation.sh`).

The trainer reads only from `TrainingConfig`; the CLI fills it, the manifest records it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from siamese_search.core.encoders import DEFAULT_ENCODER, DEFAULT_MODE
from siamese_search.core.errors import UserError

MINING_STRATEGIES = ("batch-hard", "semi-hard", "random")
FINE_TUNE_LAYERS = ("all", "dan")  # every layer but the embedding table, or the top DAN only
DEFAULT_STEPS = 400
DEFAULT_FINE_TUNE_STEPS = 150


@dataclass(frozen=True)
class HeadConfig:
    """The siamese head of the design card, `ensemble` times in parallel.

    Each member is Dense(256, relu) -> Dropout -> BatchNorm -> Dense(64, relu, L2)
    -> Dropout -> Dense(embedding_dim) -> L2-normalise; the head's output is the
    L2-normalised mean of the members. With 100 examples one head's test score
    swings by +-1.5 points with the seed; averaging 5 independently initialised
    members removes most of that and adds ~2 points of macro-F1 (README.md, "Results").
    """

    hidden_units: int = 256
    bottleneck_units: int = 64
    embedding_dim: int = 128
    dropout: float = 0.2
    l2: float = 1e-3
    ensemble: int = 5


@dataclass(frozen=True)
class TrainingConfig:
    encoder: str = DEFAULT_ENCODER
    preprocess: str = DEFAULT_MODE
    head: HeadConfig = HeadConfig()
    margin: float = 0.4
    mining: str = "batch-hard"
    learning_rate: float = 1e-3
    steps: int = DEFAULT_STEPS
    batch_size: int = 128
    samples_per_class: int = 8
    validation_fraction: float = 0.0
    eval_every: int = 25
    patience: int = 4
    seed: int = 0
    #: train the encoder's own layers jointly with the head (trainer/finetune.py)
    fine_tune: bool = False
    fine_tune_layers: str = "all"
    encoder_learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        checks = [
            (self.mining in MINING_STRATEGIES, f"--mining must be one of {MINING_STRATEGIES}"),
            (0.0 < self.margin <= 2.0, "--margin must be in (0, 2], the range of cosine distance"),
            (self.learning_rate > 0, "--learning-rate must be positive"),
            (self.steps >= 1, "--steps must be at least 1"),
            (self.batch_size >= 4, "--batch-size must be at least 4"),
            (self.samples_per_class >= 2, "--samples-per-class must be at least 2"),
            (0.0 <= self.validation_fraction < 0.5, "--validation-fraction must be in [0, 0.5)"),
            (self.head.ensemble >= 1, "--ensemble must be at least 1"),
            (0.0 <= self.head.dropout < 1.0, "--dropout must be in [0, 1)"),
            (
                self.fine_tune_layers in FINE_TUNE_LAYERS,
                f"--fine-tune-layers must be one of {FINE_TUNE_LAYERS}",
            ),
            (self.encoder_learning_rate > 0, "--encoder-learning-rate must be positive"),
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
