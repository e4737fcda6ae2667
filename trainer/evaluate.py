"""`siamese-evaluate`: how well nearest-neighbour labelling works with a trained model.

Reference and test texts go through the model; each test text is labelled by the
similarity-weighted vote of its k nearest reference texts, found by the same FAISS
inner-product search on normalised vectors that the server runs. Prints per-class
precision / recall / F1, accuracy and macro-F1; writes them as JSON, a confusion
matrix and a t-SNE map of the test vectors.

The reference is a table, or an index directory: its current version as a server
serves it, rows written over the API included (the learning loop's question: how
well does what the index holds now label these texts?). An index built with another
model is refused, as the server refuses it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from siamese_search.core.abstention import expected_calibration_error
from siamese_search.core.atomic import write_json_atomic
from siamese_search.core.cli_help import DefaultsHelpFormatter
from siamese_search.core.encoders.base import add_runtime_flag, apply_runtime_flag
from siamese_search.core.errors import UserError, run_cli
from siamese_search.core.model_artifact import EmbeddingModel
from siamese_search.core.tables import Columns, Table, read_table
from siamese_search.trainer import metrics
from siamese_search.trainer.cli import add_column_flags, without_out_of_scope

DEFAULT_K = 5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="siamese-evaluate",
        formatter_class=DefaultsHelpFormatter,
        description="Label test texts by their nearest reference texts and score the result.",
    )
    parser.add_argument("--model", required=True, type=Path, help="model directory")
    add_runtime_flag(parser)
    parser.add_argument(
        "--reference",
        required=True,
        type=Path,
        help="labelled texts to search (usually the training table), or an index "
        "directory: its current version, as siamese-serve serves it (rows added over the "
        "API included)",
    )
    parser.add_argument("--test", required=True, type=Path, help="labelled texts to predict")
    parser.add_argument("--k", type=int, default=DEFAULT_K, help="neighbours that vote")
    parser.add_argument(
        "--oos-label",
        help="label of out-of-scope test rows (e.g. oos): abstaining on them is right; "
        "adds in-scope / out-of-scope / overall scores",
    )
    parser.add_argument("--report-json", type=Path, help="write the scores here as JSON")
    parser.add_argument(
        "--plots-dir",
        type=Path,
        help="where the PNGs go (default: beside --report-json, else ./evaluation)",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNGs (t-SNE takes ~20 s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_column_flags(parser)
    return parser


@dataclass
class Evaluation:
    report: dict  # what --report-json holds
    test_vectors: np.ndarray  # the test texts in the model's space (for the t-SNE map)
    confidence: np.ndarray  # per test row: the calibrated probability the vote is right
    correct: np.ndarray  # per test row: whether the vote was right


@contextmanager
def reference_index(
    model: EmbeddingModel, columns: Columns, reference: Table | Path, progress: bool
) -> Iterator:
    """The index the test texts are searched in: an index directory's current version
    (`reference` a Path), or the reference table built into a temporary exact (flat)
    index with `indexer.build.build_index`; either read through
    `indexer.store.open_index`, the reader `siamese-serve` uses."""
    from siamese_search.indexer.build import BuildOptions, build_index
    from siamese_search.indexer.store import open_index

    if isinstance(reference, Path):
        with open_index(reference, model=model) as index:
            if not index.has_labels:
                raise UserError(
                    f"{reference}: the index holds no labels, so nothing can be predicted "
                    "from it; give a labelled index or table"
                )
            yield index
        return
    with tempfile.TemporaryDirectory(prefix="siamese-evaluate-") as tmp:
        index_dir = Path(tmp) / "reference-index"
        build_index(
            index_dir,
            model,
            reference,
            columns,
            BuildOptions(index_type="flat", strict=True, show_progress=progress),
        )
        with open_index(index_dir, model=model) as index:
            yield index


def evaluate(
    model: EmbeddingModel,
    columns: Columns,
    reference: Table | Path,
    test: Table,
    k: int,
    progress: bool = True,
    oos_label: str | None = None,
) -> Evaluation:
    """Score kNN labelling of the `test` table against the `reference` table, or
    against an index directory's current version (`reference_index`): the same
    artifact, reader, search and vote that `siamese-serve` uses."""
    from siamese_search.core.abstention import predict_queries

    with reference_index(model, columns, reference, progress) as index:
        test_vectors = model.embed_unique(test.texts, progress="test" if progress else None)
        neighbours = index.search(test_vectors, k)
        reference_rows = index.count
        reference_labels = set(index.label_names)
    votes = [([h.label for h in hits], [h.score for h in hits]) for hits in neighbours]
    predictions = predict_queries(model, votes, test_vectors, test.texts)
    truth = test.label_list
    voted = [p.voted for p in predictions]
    if oos_label is not None:  # abstaining means "out of scope"
        predicted = [oos_label if p.abstained else p.label for p in predictions]
    else:  # no out-of-scope rows to score abstention on: the vote, as before
        predicted = voted
    open_set, confidence, correct = _open_set_scores(predictions, truth, oos_label)
    labels = sorted(reference_labels | set(truth))
    # test labels no reference text carries: no vote can name them, so they score as
    # wrong whatever the model does (a typo, or a label left out of the reference set)
    unreachable = Counter(t for t in truth if t not in reference_labels and t != oos_label)
    scores = {
        "accuracy": metrics.accuracy(truth, predicted),
        "macro_f1": metrics.macro_f1(truth, predicted, labels),
        "k": k,
        "labels": labels,
        "per_class": metrics.per_class(truth, predicted, labels),
        "confusion_matrix": metrics.confusion(truth, predicted, labels).tolist(),
        "report_text": metrics.report_text(truth, predicted, labels),
        "reference_rows": reference_rows,
        "test_rows": len(test.texts),
        "test_labels_not_in_reference": dict(sorted(unreachable.items())),
        "model_fingerprint": model.fingerprint,
        # what ran the encoder (usem3_runtime): scores on another runtime may differ a little
        "encoder_runtime": model.encoder_runtime,
        **open_set,
    }
    return Evaluation(scores, test_vectors, confidence, correct)


def _share(hits: np.ndarray, among: np.ndarray) -> float:
    """The share of `hits` among the rows in `among` (0 when there are none)."""
    return float(hits[among].mean()) if among.any() else 0.0


def _open_set_scores(
    predictions: list, truth: list[str], oos_label: str | None
) -> tuple[dict, np.ndarray, np.ndarray]:
    """CLINC-style scores (Larson et al., 2019) and the calibration of `confidence`;
    also each row's confidence and whether its vote was right (for the diagram).

    closed_set_accuracy: the vote, no abstention, over in-scope rows. With an
    out-of-scope label: in_scope_accuracy (abstaining on an in-scope row is wrong),
    oos_recall / oos_precision (of abstaining), overall_accuracy (abstaining on an
    out-of-scope row is right). ece: expected calibration error of `confidence` as the
    probability that the vote is right.
    """
    voted = np.array([p.voted for p in predictions])
    abstained = np.array([p.abstained for p in predictions], dtype=bool)
    confidence = np.array([p.confidence for p in predictions])
    truth_array = np.array(truth)
    out_of_scope = truth_array == oos_label if oos_label is not None else np.zeros(len(truth), bool)
    correct = voted == truth_array
    in_scope = ~out_of_scope
    scores: dict = {
        "closed_set_accuracy": _share(correct, in_scope),
        "abstained_share": float(abstained.mean()),
        "ece": expected_calibration_error(confidence, correct),
    }
    if oos_label is not None:
        answered_right = correct & ~abstained
        scores.update(
            {
                "oos_label": oos_label,
                "in_scope_accuracy": _share(answered_right, in_scope),
                "oos_recall": _share(abstained, out_of_scope),
                "oos_precision": _share(out_of_scope, abstained),
                "overall_accuracy": float((answered_right | (abstained & out_of_scope)).mean()),
            }
        )
    return scores, confidence, correct


@run_cli
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_runtime_flag(args)
    if args.k < 1:
        raise UserError(f"--k must be at least 1, got {args.k}")
    columns = Columns(text=args.text_column, label=args.label_column)
    reference: Table | Path = args.reference
    if not args.reference.is_dir():
        reference = without_out_of_scope(
            read_table(args.reference, columns), args.oos_label, args.reference
        )
    test = read_table(args.test, columns)

    from siamese_search.core.model_artifact import load_model
    from siamese_search.trainer import plots

    model = load_model(args.model)
    evaluation = evaluate(
        model, columns, reference, test, args.k, progress=not args.quiet, oos_label=args.oos_label
    )
    result = evaluation.report
    print(result["report_text"])
    print(
        f"accuracy {result['accuracy']:.4f}   macro-F1 {result['macro_f1']:.4f}   "
        f"({result['test_rows']} test texts, {result['reference_rows']} reference texts, "
        f"k={args.k})"
    )
    print(
        f"closed-set accuracy {result['closed_set_accuracy']:.4f}   "
        f"abstained {result['abstained_share']:.1%}   ECE {result['ece']:.4f}"
    )
    unreachable = result["test_labels_not_in_reference"]
    if unreachable:
        shown = ", ".join(f"{label!r} ({count})" for label, count in list(unreachable.items())[:10])
        print(
            f"note: {sum(unreachable.values())} test text(s) carry labels no reference text "
            f"has: {shown}{', ...' if len(unreachable) > 10 else ''}. No vote can name them, "
            "so they score as wrong: check the label column, or add such examples to the "
            "reference set" + ("" if args.oos_label else " (or give --oos-label)"),
            file=sys.stderr,
        )
    if args.oos_label is not None:
        print(
            f"in-scope accuracy {result['in_scope_accuracy']:.4f}   "
            f"out-of-scope recall {result['oos_recall']:.4f}   "
            f"precision {result['oos_precision']:.4f}   "
            f"overall accuracy {result['overall_accuracy']:.4f}"
        )
    result["model"] = str(args.model)
    # the rule that decided the abstentions, and how it was fitted (issue 35)
    result["abstention"] = model.abstention.to_dict() if model.abstention is not None else None
    if model.abstention is not None:
        rule = model.abstention
        print(
            f"abstention: under confidence {rule.threshold:.3f} "
            f"({rule.threshold_rule or rule.source}"
            + ("; the confidence reads the wording too" if rule.reads_wording else "")
            + "); out of domain under "
            + (
                f"{rule.domain_meaning:.3f} ({rule.domain_rule or 'served-space bars'})"
                if rule.domain_meaning is not None
                else "no bar"
            )
        )
    if args.report_json:
        write_json_atomic(args.report_json, result)
    if not args.no_plots and not plots.available():
        print(
            "plots skipped: they need matplotlib and scikit-learn, the plots extra "
            "(pip install 'siamese-search[plots]'); --no-plots says you do not want them",
            file=sys.stderr,
        )
    elif not args.no_plots:
        plots_dir = args.plots_dir or (
            args.report_json.parent if args.report_json else Path("evaluation")
        )
        plots_dir.mkdir(parents=True, exist_ok=True)
        plots.confusion_matrix(
            np.array(result["confusion_matrix"]),
            result["labels"],
            plots_dir / "confusion_matrix.png",
            title=f"kNN (k={args.k}) on {args.test.name}",
        )
        plots.reliability_diagram(
            evaluation.confidence,
            evaluation.correct,
            plots_dir / "reliability.png",
            title=f"confidence vs. accuracy on {args.test.name} (ECE {result['ece']:.3f})",
        )
        plots.vector_map(
            evaluation.test_vectors,
            test.label_list,
            plots_dir / "test_map.png",
            title=f"t-SNE of {args.test.name} in the head's space",
        )
        print(f"plots written to {plots_dir}")
    if args.report_json:
        print(f"report written to {args.report_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
