"""Abstention without a validation table (issue 35): in-domain coverage against
off-domain abstention, per abstention rule, over seeds.

Per seed, two models trained as most users train them (the default recipe, no
`--validation-data`): the commit split's (data/commit-messages/train.csv, 100
texts, which are also the reference set) and CLINC150 10-shot's (all 150 intents;
the reference set is its training texts). Each predicts with k 5 as the server
does (core.abstention.predict, the model's rule and the served space's label share):
- in-domain: the commit test texts against the commit model; CLINC150's in-scope
  test texts against the CLINC model (abstaining on them is the error measured);
- off-domain: CLINC150 test texts (in-scope and oos) against the commit model, and
  the commit test texts against the CLINC model (abstaining is right).
Reported: abstention in each, the answered in-domain accuracy, and why in-domain
queries abstained (too far from the reference texts, or the vote too unsure), and
the answered accuracy had the least confident 5% (commits) or 8% (CLINC150) of the
in-domain queries abstained, chosen in hindsight: the ceiling of any cut on this
confidence at the issue's coverage bars. `--alternatives` also measures other labelling
rules on the same vectors, and other sureness measures for the server's vote (`sureness`).
`--train-args` trains both models with a recipe variant (extra siamese-train flags);
`--commit-train-args` and `--clinc-train-args` add flags for one model only (a flag
one recipe refuses, e.g. `--contrastive-weight`, which goes with CLINC150's proxy loss
and not the commit split's triplets).

Models are trained once into --work and reused; the work directory records the flags
its models were trained with (RECIPE_FILE) and refuses others.

Usage: python bench/coverage.py [--seeds 0 1 2] [--work DIR] [--out FILE] [--alternatives]
       [--train-args="--steps 120"] [--clinc-train-args="--contrastive-weight 0.5"]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CLINC = ROOT.parent / "shared" / "data" / "clinc150"
COMMITS = ROOT / "data" / "commit-messages"
K = 5
#: off-domain and in-domain samples (seeded): every commit test text is ~3,300
SAMPLE = 1500
#: in --work: the extra siamese-train flags its models were trained with, by dataset
#: (JSON; a list in work directories made before the flags were per dataset: both's)
RECIPE_FILE = "train-args.json"
DATASETS = ("commits", "clinc")
#: each dataset's label column in its tables
LABEL_COLUMNS = {"commits": "class", "clinc": "intent"}


def train(data: Path, label_column: str, out: Path, seed: int, extra: list[str] = ()) -> Path:
    """The model trained on `data` into `out` (default recipe, plus `extra` flags),
    trained once and reused."""
    if not (out / "manifest.json").exists():
        subprocess.run(
            [sys.executable, "-m", "siamese_search.trainer.cli", "--data", str(data)]
            + ["--label-column", label_column, "--out", str(out), "--overwrite"]
            + ["--seed", str(seed), "--quiet", *extra],
            check=True,
        )
    return out


def add_recipe_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that choose the models' recipes (`recipes_of` reads them)."""
    parser.add_argument(
        "--train-args",
        default="",
        help="extra siamese-train flags for both models (a recipe variant), given with '=' "
        "(--train-args=--no-wording): argparse takes a lone value starting with - for a flag",
    )
    for name, data in (("commit", "the commit split's"), ("clinc", "CLINC150's")):
        parser.add_argument(
            f"--{name}-train-args",
            default="",
            help=f"extra siamese-train flags for {data} model only, after --train-args's",
        )


def recipes_of(args: argparse.Namespace) -> dict[str, list[str]]:
    """Each dataset's extra siamese-train flags: --train-args's, then its own."""
    both = shlex.split(args.train_args)
    return {
        "commits": both + shlex.split(args.commit_train_args),
        "clinc": both + shlex.split(args.clinc_train_args),
    }


def claim_work(work: Path, recipes: dict[str, list[str]]) -> None:
    """Record the recipes of --work's models, or refuse a work directory whose models
    were trained with other flags (they would be reused as if they were these)."""
    work.mkdir(parents=True, exist_ok=True)
    recorded = work / RECIPE_FILE
    if recorded.exists():
        before = json.loads(recorded.read_text())
        if isinstance(before, list):
            before = dict.fromkeys(DATASETS, before)
        if before != recipes:
            raise SystemExit(
                f"{work} holds models trained with {described(before)}, not "
                f"{described(recipes)}: give another --work"
            )
    elif any(work.iterdir()) and any(recipes.values()):
        raise SystemExit(
            f"{work} holds models of the default recipe (no {RECIPE_FILE}): give another "
            "--work for other flags"
        )
    else:
        recorded.write_text(json.dumps(recipes) + "\n")


def described(recipes: dict[str, list[str]]) -> str:
    """The recipes in words, for a refusal."""
    return "; ".join(f"{name} {shlex.join(flags)!r}" for name, flags in recipes.items())


def embedded(model, reference: pd.DataFrame, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    """The reference set as the model serves it: (vectors, labels), embedded once for
    every query set and rule measured against it."""
    labels = reference[label_column].astype(str).to_numpy()
    return model.embed_unique(reference.text.tolist()), labels


def queries(
    model, ref: np.ndarray, labels: np.ndarray, vectors: np.ndarray, texts: list[str]
) -> dict:
    """Per query (its served vector and text): voted label, confidence, top score, label
    share, out-of-domain bar (the model's rule), as the server's Predict computes them."""
    from siamese_search.core.abstention import predict_queries
    from siamese_search.core.voting import nearest

    shares = model.label_shares(vectors)
    scores, positions = nearest(ref, vectors, K)
    votes = [(labels[p].tolist(), s.tolist()) for p, s in zip(positions, scores, strict=True)]
    decisions = predict_queries(model, votes, vectors, texts)
    out: dict[str, list] = {"voted": [], "confidence": [], "top": [], "share": [], "abstained": []}
    out["far"], out["unanimous"] = [], []
    for row, decision in enumerate(decisions):
        out["voted"].append(decision.voted)
        out["confidence"].append(decision.confidence)
        out["top"].append(float(scores[row][0]))
        out["share"].append(float(shares[row]) if shares is not None else 0.0)
        out["abstained"].append(decision.abstained)
        out["far"].append(decision.out_of_domain)
        out["unanimous"].append(len(set(labels[positions[row]])) == 1)
    return {key: np.array(values) for key, values in out.items()}


#: the issue's bars on in-domain abstention: the hindsight figure abstains on exactly this
BUDGET = {"commits": 0.05, "clinc": 0.08}


def hindsight_accuracy(confidence: np.ndarray, right: np.ndarray, budget: float) -> float:
    """Answered accuracy when exactly `budget` of the queries, the least confident,
    abstain: the best any cut on this confidence can do at that coverage (it is chosen
    knowing the queries), to tell a badly placed cut from a confidence that cannot
    separate right from wrong votes."""
    keep = np.ones(len(right), dtype=bool)
    keep[np.argsort(confidence, kind="stable")[: int(round(budget * len(right)))]] = False
    return float(right[keep].mean())


def label_totals(rule: str, similarity: np.ndarray, onehot: np.ndarray) -> np.ndarray:
    """(queries, labels) totals of one labelling rule from the query x reference
    similarities; the largest is the label."""
    if rule == "centroid":
        return similarity @ onehot / onehot.sum(axis=0)
    if rule == "mean of 3 nearest per label":
        return np.stack(
            [
                -np.sort(-similarity[:, onehot[:, c] > 0], axis=1)[:, :3].mean(axis=1)
                for c in range(onehot.shape[1])
            ],
            axis=1,
        )
    k, weight = {
        "vote of 5": (5, None),
        "vote of 10": (10, None),
        "softmax vote of 20, T 0.05": (20, 0.05),
    }[rule]
    nearest_rows = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    scores = np.take_along_axis(similarity, nearest_rows, axis=1)
    weights = np.maximum(scores, 0) if weight is None else np.exp((scores - scores[:, :1]) / weight)
    return np.einsum("qk,qkc->qc", weights, onehot[nearest_rows])


def label_onehot(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference labels' distinct names (sorted) and each row's one-hot (rows,
    names) matrix, what label_totals sums similarities with."""
    names = np.unique(labels)
    return names, (labels[:, None] == names[None, :]).astype(np.float64)


ALTERNATIVES = (
    "vote of 5",
    "vote of 10",
    "softmax vote of 20, T 0.05",
    "centroid",
    "mean of 3 nearest per label",
    "logistic regression",
)


def alternatives(
    ref: np.ndarray, labels: np.ndarray, vectors: np.ndarray, truth, budget: float
) -> dict:
    """Per labelling rule: the vote's accuracy and the hindsight answered accuracy at
    `budget` (sureness: the margin of the best label's total over the runner-up's)."""
    from sklearn.linear_model import LogisticRegression

    names, onehot = label_onehot(labels)
    similarity = vectors @ ref.T
    out = {}
    for rule in ALTERNATIVES:
        if rule == "logistic regression":
            fitted = LogisticRegression(C=10.0, max_iter=3000).fit(ref, labels)
            totals = fitted.predict_proba(vectors)  # its classes_ are sorted: names
        else:
            totals = label_totals(rule, similarity, onehot)
        ranked = np.sort(totals, axis=1)
        right = names[totals.argmax(axis=1)] == truth
        out[rule] = {
            "voted_accuracy": float(right.mean()),
            "hindsight_answered_accuracy": hindsight_accuracy(
                ranked[:, -1] - ranked[:, -2], right, budget
            ),
        }
    return out


def parts(model, vectors: np.ndarray) -> dict[str, np.ndarray]:
    """A served vector's two unit parts beside it (core.served_space): the untuned
    encoder's meaning and the head's labels, each rescaled out of its share."""
    share = model.label_shares(vectors)[:, None]
    cut = model.space.meaning_dim
    return {
        "served": vectors,
        "meaning": vectors[:, :cut] / np.sqrt(np.maximum(1.0 - share, 1e-6)),
        "labels": vectors[:, cut:] / np.sqrt(np.maximum(share, 1e-6)),
    }


SURENESS_RULES = ("vote of 5", "centroid", "mean of 3 nearest per label")


def per_label_hindsight(confidence: np.ndarray, right: np.ndarray, voted, budget: float) -> float:
    """Answered accuracy with a confidence cut of its own per voted label (the issue's
    "separate bars per label"), the cuts chosen in hindsight: the `budget` abstentions
    shared out among the labels to leave the fewest wrong answers (a knapsack over the
    labels, each giving its least confident votes first)."""
    budget_rows = int(round(budget * len(right)))
    best = np.full(budget_rows + 1, -np.inf)
    best[0] = 0.0
    for label in np.unique(voted):
        members = np.flatnonzero(voted == label)
        order = members[np.argsort(confidence[members], kind="stable")]
        removed = np.concatenate([[0], np.cumsum(~right[order])])  # wrong among the j first
        shared = np.full_like(best, -np.inf)
        for taken in range(min(len(removed), budget_rows + 1)):
            shared[taken:] = np.maximum(shared[taken:], best[: len(best) - taken] + removed[taken])
        best = shared
    return float(1.0 - ((~right).sum() - best[budget_rows]) / (len(right) - budget_rows))


def sureness(
    model, ref: np.ndarray, labels: np.ndarray, vectors: np.ndarray, inside: dict, truth, budget
) -> dict:
    """Other sureness measures for the server's vote (its label kept), as hindsight
    answered accuracy at `budget`: its confidence cut per voted label
    (per_label_hindsight), the label part's own vote margin (a signal the
    server could read without labelled data), and every signal at once (the vote's
    confidence, top score and label share; in each of the served, meaning and label
    spaces, each SURENESS_RULES rule's margin, best total and agreement with the vote)
    combined by a logistic regression fitted on the labelled in-domain queries
    themselves, 5-fold cross-fitted: what a confidence learned with a validation
    table drawn from the very queries measured could at best do."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    names, onehot = label_onehot(labels)
    voted = np.searchsorted(names, inside["voted"])
    right = inside["voted"] == truth
    reference, query = parts(model, ref), parts(model, vectors)
    signals = {"confidence": inside["confidence"], "top": inside["top"], "share": inside["share"]}
    for space in ("served", "meaning", "labels"):
        similarity = query[space] @ reference[space].T
        for rule in SURENESS_RULES:
            ranked = label_totals(rule, similarity, onehot)
            top_two = np.sort(ranked, axis=1)[:, -2:]
            signals[f"{space} {rule} margin"] = top_two[:, 1] - top_two[:, 0]
            signals[f"{space} {rule} best"] = top_two[:, 1]
            signals[f"{space} {rule} agrees"] = (ranked.argmax(axis=1) == voted).astype(float)
    table = np.column_stack(list(signals.values()))
    learned = cross_val_predict(
        LogisticRegression(max_iter=5000), table, right, cv=5, method="predict_proba"
    )[:, 1]
    return {
        "a cut per voted label, chosen in hindsight": per_label_hindsight(
            inside["confidence"], right, inside["voted"], budget
        ),
        "label part's vote of 5 margin": hindsight_accuracy(
            signals["labels vote of 5 margin"], right, budget
        ),
        "all signals, fitted on the labelled queries": hindsight_accuracy(learned, right, budget),
    }


def summary(inside: dict, truth: np.ndarray, outside: dict, budget: float) -> dict:
    abstained, right = inside["abstained"], inside["voted"] == truth
    return {
        "hindsight_answered_accuracy": hindsight_accuracy(inside["confidence"], right, budget),
        # the ceiling at the rule's own coverage: how far its cut is from the best cut
        # that leaves as many queries unanswered
        "hindsight_at_own_abstention": hindsight_accuracy(
            inside["confidence"], right, float(abstained.mean())
        ),
        "in_domain_abstained": float(abstained.mean()),
        "in_domain_far": float(inside["far"].mean()),
        "in_domain_unsure": float((abstained & ~inside["far"]).mean()),
        "answered_accuracy": float(right[~abstained].mean()),
        "voted_accuracy": float(right.mean()),
        "wrong_votes_unanimous": float(inside["unanimous"][~right].mean()),
        "right_votes_unanimous": float(inside["unanimous"][right].mean()),
        "off_domain_abstained": float(outside["abstained"].mean()),
    }


def training_paths(seed: int) -> dict[str, Path]:
    """The seed's training tables by dataset: the commit split, CLINC150 10-shot."""
    return {"commits": COMMITS / "train.csv", "clinc": CLINC / f"train-10shot-seed{seed}.csv"}


def query_samples(seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The seed's query samples: (commit test texts, CLINC150 in-scope test texts,
    CLINC150 test texts of any intent, oos included), SAMPLE each."""
    rng = np.random.default_rng(seed)
    commit_test = pd.read_csv(COMMITS / "test.csv")
    clinc_test = pd.read_csv(CLINC / "test.csv")
    commit_sample = commit_test.iloc[rng.choice(len(commit_test), SAMPLE, replace=False)]
    in_scope = clinc_test[clinc_test.intent != "oos"]
    clinc_sample = in_scope.iloc[rng.choice(len(in_scope), SAMPLE, replace=False)]
    clinc_any = clinc_test.iloc[rng.choice(len(clinc_test), SAMPLE, replace=False)]
    return commit_sample, clinc_sample, clinc_any


def run_seed(seed: int, work: Path, recipes: dict[str, list[str]], compare: bool = False) -> dict:
    from siamese_search.core.model_artifact import load_model

    paths = training_paths(seed)
    commit_train, clinc_train = pd.read_csv(paths["commits"]), pd.read_csv(paths["clinc"])
    commit_sample, clinc_sample, clinc_any = query_samples(seed)

    commit_label, clinc_label = LABEL_COLUMNS["commits"], LABEL_COLUMNS["clinc"]
    commit_model = load_model(
        train(paths["commits"], commit_label, work / f"commits-{seed}", seed, recipes["commits"])
    )
    clinc_model = load_model(
        train(paths["clinc"], clinc_label, work / f"clinc-{seed}", seed, recipes["clinc"])
    )
    commit_ref = embedded(commit_model, commit_train, commit_label)
    clinc_ref = embedded(clinc_model, clinc_train, clinc_label)
    commit_vectors = commit_model.embed_unique(commit_sample.text.tolist())
    clinc_vectors = clinc_model.embed_unique(clinc_sample.text.tolist())
    commit_truth = commit_sample[commit_label].astype(str).to_numpy()
    clinc_truth = clinc_sample[clinc_label].to_numpy()
    commit_texts, clinc_texts = commit_sample.text.tolist(), clinc_sample.text.tolist()
    clinc_any_texts = clinc_any.text.tolist()
    commit_in = queries(commit_model, *commit_ref, commit_vectors, commit_texts)
    commit_out = queries(
        commit_model, *commit_ref, commit_model.embed_unique(clinc_any_texts), clinc_any_texts
    )
    clinc_in = queries(clinc_model, *clinc_ref, clinc_vectors, clinc_texts)
    clinc_out = queries(
        clinc_model, *clinc_ref, clinc_model.embed_unique(commit_texts), commit_texts
    )
    extra = {}
    if compare:
        extra["alternatives"] = {
            "commits": alternatives(*commit_ref, commit_vectors, commit_truth, BUDGET["commits"]),
            "clinc": alternatives(*clinc_ref, clinc_vectors, clinc_truth, BUDGET["clinc"]),
        }
        extra["sureness"] = {
            "commits": sureness(
                commit_model,
                *commit_ref,
                commit_vectors,
                commit_in,
                commit_truth,
                BUDGET["commits"],
            ),
            "clinc": sureness(
                clinc_model, *clinc_ref, clinc_vectors, clinc_in, clinc_truth, BUDGET["clinc"]
            ),
        }
    return {
        **extra,
        "seed": seed,
        "commits": summary(commit_in, commit_truth, commit_out, BUDGET["commits"]),
        "clinc": summary(clinc_in, clinc_truth, clinc_out, BUDGET["clinc"]),
        "rules": {
            "commits": commit_model.abstention.to_dict() if commit_model.abstention else None,
            "clinc": clinc_model.abstention.to_dict() if clinc_model.abstention else None,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "coverage")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--alternatives", action="store_true", help="also measure other labelling rules"
    )
    add_recipe_flags(parser)
    args = parser.parse_args()
    recipes = recipes_of(args)
    claim_work(args.work, recipes)
    runs = [run_seed(seed, args.work, recipes, args.alternatives) for seed in args.seeds]
    mean = {
        data: {key: float(np.mean([r[data][key] for r in runs])) for key in runs[0][data]}
        for data in DATASETS
    }
    for data, figures in mean.items():
        print(
            f"{data:<8} in-domain abstained {figures['in_domain_abstained']:.3f} "
            f"(far {figures['in_domain_far']:.3f}, unsure {figures['in_domain_unsure']:.3f}); "
            f"answered right {figures['answered_accuracy']:.3f}; "
            f"off-domain abstained {figures['off_domain_abstained']:.3f}; "
            f"least sure {BUDGET[data]:.0%} abstained in hindsight: answered right "
            f"{figures['hindsight_answered_accuracy']:.3f}, at the rule's own abstention "
            f"{figures['hindsight_at_own_abstention']:.3f}; wrong votes unanimous "
            f"{figures['wrong_votes_unanimous']:.3f} (right ones "
            f"{figures['right_votes_unanimous']:.3f})"
        )
    if args.alternatives:
        for data in ("commits", "clinc"):
            for rule in ALTERNATIVES:
                figures = [r["alternatives"][data][rule] for r in runs]
                print(
                    f"{data:<8} {rule:<28} voted right "
                    f"{np.mean([f['voted_accuracy'] for f in figures]):.3f}; least sure "
                    f"{BUDGET[data]:.0%} abstained in hindsight: answered right "
                    f"{np.mean([f['hindsight_answered_accuracy'] for f in figures]):.3f}"
                )
            for measure in runs[0]["sureness"][data]:
                print(
                    f"{data:<8} the vote, sureness: {measure}: least sure {BUDGET[data]:.0%} "
                    f"abstained in hindsight: answered right "
                    f"{np.mean([r['sureness'][data][measure] for r in runs]):.3f}"
                )
    if args.out:
        report = {"k": K, "train_args": recipes, "runs": runs, "mean": mean}
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
