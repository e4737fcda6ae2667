"""What if the abstention rule were calibrated on fine-tuned folds? (issue 35)

A model trained without a validation table fits its rule on held-out folds voted by
frozen heads (trainer.calibrate.on_folds): cheap, but those folds vote less surely
than the fine-tuned final model does, by an amount that differs per dataset, so no
single quantile cut suits both the commit split and CLINC150. This bench measures
the way the issue names first, k-fold fine-tunes:
- per seed and dataset, each of calibrate.FOLDS folds (calibrate.fold_assignment,
  the folds the trainer uses) is a full siamese-train of the other folds' rows, with
  the final model's recipe;
- it votes on its held-out rows as the server would, in its own served space and
  with its own wording model (calibrate.vote_table), and a confidence model is
  fitted on those votes (core.abstention.fit_abstention);
- the final model (bench/coverage.py's, same work directory, same query samples)
  then abstains when that confidence is under a probability p, or when its own
  domain bar says "too far".
Reported per p: in-domain abstained and answered right, off-domain abstained; the
model's own rule on the same queries; the fold models' training time.

Usage: python bench/fine_tuned_folds.py [--seeds 0 1 2] [--work DIR] [--out FILE]
       [--datasets commits clinc] [--clinc-train-args="--contrastive-weight 0.5"]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

# bench/coverage.py (the script's own directory comes first on the path)
from coverage import (
    DATASETS,
    LABEL_COLUMNS,
    ROOT,
    K,
    add_recipe_flags,
    claim_work,
    embedded,
    queries,
    query_samples,
    recipes_of,
    train,
    training_paths,
)

#: the probabilities of a right vote under which the final model abstains
THRESHOLDS = (0.5, 0.6, 0.65, 0.7, 0.75)


def fold_rule(table: pd.DataFrame, label_column: str, folds_dir: Path, seed: int, extra):
    """The confidence model fitted on the fine-tuned folds' held-out votes, their vote
    accuracy, and the seconds their training took (None when reused)."""
    from siamese_search.core.abstention import fit_abstention
    from siamese_search.core.model_artifact import load_model
    from siamese_search.trainer.calibrate import FOLDS, fold_assignment, vote_table

    labels = table[label_column].astype(str).to_numpy()
    texts = np.asarray(table.text.astype(str).tolist(), dtype=object)
    fold_of = fold_assignment(labels.tolist(), seed)
    folds_dir.mkdir(parents=True, exist_ok=True)
    parts: list = []
    seconds: float | None = 0.0
    for fold in range(FOLDS):
        kept, held = fold_of != fold, fold_of == fold
        model_dir = folds_dir / f"fold{fold}"
        rows = folds_dir / f"fold{fold}.csv"
        table[kept].to_csv(rows, index=False)
        reused = (model_dir / "manifest.json").exists()
        started = time.perf_counter()
        model = load_model(train(rows, label_column, model_dir, seed, extra))
        if reused:
            seconds = None
        elif seconds is not None:
            seconds += time.perf_counter() - started
        parts.append(
            vote_table(
                model.embed_unique(texts[kept].tolist()),
                labels[kept].tolist(),
                model.embed_unique(texts[held].tolist()),
                labels[held].tolist(),
                set(labels[kept]),
                model.wording_agreement(texts[held].tolist()),
            )
        )
    features, correct, oos = (np.concatenate([p[i] for p in parts]) for i in range(3))
    rule = fit_abstention(features, correct, oos, f"{FOLDS} fine-tuned folds")
    return rule, float(correct.mean()), seconds


def final_queries(model, ref, ref_labels, sample: pd.DataFrame, truth, rule) -> dict:
    """The final model's queries: what its own rule decides, whether its vote is right,
    and the fold rule's confidence of it."""
    from siamese_search.trainer.calibrate import vote_table

    texts = sample.text.astype(str).tolist()
    vectors = model.embed_unique(texts)
    served = queries(model, ref, ref_labels, vectors, texts)
    features, correct, _ = vote_table(
        ref, ref_labels.tolist(), vectors, truth, set(ref_labels), model.wording_agreement(texts)
    )
    confidence = np.array([rule.confidence(row) for row in features])
    return {"served": served, "right": correct, "confidence": confidence}


def run_dataset(name: str, seed: int, work: Path, extra: list[str], samples: tuple) -> dict:
    """One dataset's model of one seed; `samples` is the seed's `query_samples`."""
    from siamese_search.core.model_artifact import load_model

    data = training_paths(seed)[name]
    table = pd.read_csv(data)
    commit_sample, clinc_sample, clinc_any = samples
    in_domain, off_domain = {
        "commits": (commit_sample, clinc_any),
        "clinc": (clinc_sample, commit_sample),
    }[name]
    label_column = LABEL_COLUMNS[name]
    rule, fold_vote, seconds = fold_rule(
        table, label_column, work / "fine-tuned-folds" / f"{name}-{seed}", seed, extra
    )
    model = load_model(train(data, label_column, work / f"{name}-{seed}", seed, extra))
    ref, ref_labels = embedded(model, table, label_column)
    truth = in_domain[label_column].astype(str).tolist()
    inside = final_queries(model, ref, ref_labels, in_domain, truth, rule)
    outside = final_queries(model, ref, ref_labels, off_domain, [""] * len(off_domain), rule)
    right, far, out_far = inside["right"], inside["served"]["far"], outside["served"]["far"]
    own = inside["served"]["abstained"]
    report = {
        "fold_vote_accuracy": fold_vote,
        "fold_training_seconds": seconds,
        "voted_accuracy": float(right.mean()),
        "fold_rule": {"coef": list(rule.coef), "intercept": rule.intercept, "ece": rule.ece},
        "own_rule": {
            "in_domain_abstained": float(own.mean()),
            "answered_accuracy": float(right[~own].mean()),
            "off_domain_abstained": float(outside["served"]["abstained"].mean()),
        },
    }
    for p in THRESHOLDS:
        abstain = far | (inside["confidence"] < p)
        report[f"p{p}"] = {
            "in_domain_abstained": float(abstain.mean()),
            "answered_accuracy": float(right[~abstain].mean()),
            "off_domain_abstained": float((out_far | (outside["confidence"] < p)).mean()),
        }
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "coverage")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--out", type=Path)
    add_recipe_flags(parser)
    args = parser.parse_args()
    recipes = recipes_of(args)
    claim_work(args.work, recipes)
    runs = []
    for seed in args.seeds:
        run = {"seed": seed}
        samples = query_samples(seed)
        for name in args.datasets:
            run[name] = run_dataset(name, seed, args.work, recipes[name], samples)
            print(json.dumps({"seed": seed, name: run[name]}), flush=True)
        runs.append(run)
    mean: dict = {}
    for name in args.datasets:
        mean[name] = {"voted_accuracy": float(np.mean([r[name]["voted_accuracy"] for r in runs]))}
        for rule in ("own_rule", *(f"p{p}" for p in THRESHOLDS)):
            mean[name][rule] = {
                figure: float(np.mean([r[name][rule][figure] for r in runs]))
                for figure in runs[0][name][rule]
            }
            figures = mean[name][rule]
            print(
                f"{name:<8} {rule:<9} in-domain abstained {figures['in_domain_abstained']:.3f}; "
                f"answered right {figures['answered_accuracy']:.3f}; off-domain abstained "
                f"{figures['off_domain_abstained']:.3f}"
            )
    if args.out:
        report = {"k": K, "train_args": recipes, "runs": runs, "mean": mean}
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
