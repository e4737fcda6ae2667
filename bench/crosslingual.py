"""Spanish queries against models trained on English texts: are they labelled, and is
the English text they translate found?

USE multilingual v3 maps a text and its translation close together, which the served
space keeps for Search; the wording agreement (core.wording, a character n-gram model
of the English training texts) reads a Spanish query's wording, which its labels were
never written in. This bench measures what that costs, on hand-written translations
(bench/data/spanish.csv: 60 CLINC150 in-scope test texts, one each of 60 intents, and 30
commit test texts, 6 per class), with the coverage bench's models (no validation table;
trained once into --work, shared with bench/coverage.py):
- labelling, per language: the vote's accuracy, the share abstained and the answered
  accuracy, as the server's Predict decides (core.abstention.predict_queries), and with
  the wording agreement left out (the value the rule reads for a label the wording does
  not know, `unknown_wording`);
- retrieval: the share of Spanish queries whose English original is their nearest
  text, among the training texts and all the originals, in the served space and in the
  untuned encoder's (the served vector's meaning part).

Small sets: one query is 1.7 points (CLINC150) or 3.3 points (commits) of a seed's figure.

`--train-args` (both models), `--commit-train-args` and `--clinc-train-args` measure a
recipe variant's models (bench/coverage.py's flags, the same work directory), e.g.
`--train-args=--no-wording`.

Usage: python bench/crosslingual.py [--seeds 0 1 2] [--work DIR] [--out FILE]
       [--train-args=--no-wording] [--clinc-train-args="--contrastive-weight 0.5"]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

# bench/coverage.py (the script's own directory comes first on the path)
from coverage import (
    LABEL_COLUMNS,
    ROOT,
    K,
    add_recipe_flags,
    claim_work,
    embedded,
    parts,
    recipes_of,
    train,
    training_paths,
)

TRANSLATIONS = ROOT / "bench" / "data" / "spanish.csv"


def labelling(model, ref: np.ndarray, labels: np.ndarray, texts: list[str], truth) -> dict:
    """Voted accuracy, abstained share and answered accuracy of `texts`, as served and
    with the wording agreement left out."""
    from siamese_search.core.abstention import predict, predict_queries
    from siamese_search.core.voting import nearest

    vectors = model.embed_unique(texts)
    scores, positions = nearest(ref, vectors, K)
    votes = [(labels[p].tolist(), s.tolist()) for p, s in zip(positions, scores, strict=True)]
    served = predict_queries(model, votes, vectors, texts)
    shares = model.label_shares(vectors)
    vote_alone = [
        predict(lab, sc, model.abstention, None, float(shares[row]))
        for row, (lab, sc) in enumerate(votes)
    ]
    truth = np.asarray(truth)
    voted = np.array([p.voted for p in served]) == truth
    out = {"voted_accuracy": float(voted.mean())}
    for name, decisions in (("served", served), ("vote_alone", vote_alone)):
        answered = ~np.array([p.abstained for p in decisions])
        out[f"{name}_abstained"] = float(1.0 - answered.mean())
        out[f"{name}_answered_accuracy"] = float(voted[answered].mean()) if answered.any() else None
    return out


def found_first(model, ref: np.ndarray, originals: list[str], spanish: list[str]) -> dict:
    """Share of Spanish queries whose English original is the nearest of the reference
    texts (their served vectors, `ref`) and the originals, in the served space and the
    untuned encoder's."""
    corpus = parts(model, np.vstack([ref, model.embed_unique(originals)]))
    queries = parts(model, model.embed_unique(spanish))
    wanted = np.arange(len(ref), len(ref) + len(originals))
    return {
        space: float(((queries[space] @ corpus[space].T).argmax(axis=1) == wanted).mean())
        for space in ("served", "meaning")
    }


def run_seed(
    seed: int, work: Path, translations: pd.DataFrame, recipes: dict[str, list[str]]
) -> dict:
    from siamese_search.core.model_artifact import load_model

    out: dict = {"seed": seed}
    for name, data in training_paths(seed).items():
        label_column = LABEL_COLUMNS[name]
        model_dir = work / f"{name}-{seed}"
        model = load_model(train(data, label_column, model_dir, seed, recipes[name]))
        table = pd.read_csv(data)
        ref, labels = embedded(model, table, label_column)
        rows = translations[translations["set"] == name]
        truth = rows["label"].astype(str).to_numpy()
        out[name] = {
            language: labelling(model, ref, labels, rows[language].tolist(), truth)
            for language in ("english", "spanish")
        }
        out[name]["spanish_finds_its_original_first"] = found_first(
            model, ref, rows.english.tolist(), rows.spanish.tolist()
        )
        print(json.dumps({"seed": seed, name: out[name]}), flush=True)
    return out


def mean(runs: list[dict]) -> dict:
    """The runs' mean of every figure, by set, language and figure name."""
    out: dict = {}
    for name in ("commits", "clinc"):
        out[name] = {}
        for part, figures in runs[0][name].items():
            out[name][part] = {}
            for figure in figures:
                values = [run[name][part][figure] for run in runs]
                known = [v for v in values if v is not None]
                out[name][part][figure] = float(np.mean(known)) if known else None
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "coverage")
    parser.add_argument("--out", type=Path)
    add_recipe_flags(parser)
    args = parser.parse_args()
    translations = pd.read_csv(TRANSLATIONS)
    recipes = recipes_of(args)
    claim_work(args.work, recipes)
    runs = [run_seed(seed, args.work, translations, recipes) for seed in args.seeds]
    report = {"k": K, "train_args": recipes, "runs": runs}
    report["queries"] = translations.groupby("set").size().to_dict()
    report["mean"] = mean(runs)
    print(json.dumps(report["mean"], indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
