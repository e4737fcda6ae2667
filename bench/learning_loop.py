"""The learning loop on CLINC150 10-shot (issue 33): does retraining on what the
index holds close the gap that labels added by Upsert leave?

Per seed: a model trained on half of the 150 intents (75, their 10-shot rows) and an
index of those rows; the other 75 intents' 10-shot rows added as a server's Upsert
commits them (indexer.build.apply_changes, the committer's own call); Predict (k 5,
the server's rule: core.abstention.predict with the model's abstention and the
served space's label share) on every in-scope test text, per half: **before**; and
the same before the Upsert, the index holding the trained intents' rows alone:
**trained_only** (the added intents' queries have no right answer there; the trained
half's abstention tells what the added intents' rows cost it).
Then the cycle (`siamese-index retrain`: siamese-train --from-index, then reembed):
**after**. And a model trained from scratch on all 150 intents' rows, with an index
of them: **scratch**. No validation table anywhere (the loop retrains from what the
index holds). Reported per half: the voted label's accuracy (abstention aside) and
the abstention rate.

Usage: python bench/learning_loop.py [--seeds 0 1 2] [--out bench/results/learning-loop.json]
       [-- extra siamese-train flags]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CLINC = ROOT.parent / "shared" / "data" / "clinc150"
K = 5
STAGES = ("trained_only", "before", "after", "scratch")


def predict_all(model, index_dir: Path, texts: list[str]) -> tuple[list[str], np.ndarray]:
    """(voted labels, abstained) as the server's Predict gives them."""
    from siamese_search.core.abstention import predict_queries
    from siamese_search.indexer.store import open_index

    vectors = model.embed(texts)
    with open_index(index_dir, model=model) as version:
        found = version.search(vectors, k=K)
    votes = [([h.label for h in hits], [h.score for h in hits]) for hits in found]
    decisions = predict_queries(model, votes, vectors, texts)
    return [d.voted for d in decisions], np.array([d.abstained for d in decisions])


def scores(model, index_dir, test: pd.DataFrame, halves: dict[str, set[str]]) -> dict:
    voted, abstained = predict_all(model, index_dir, test.text.tolist())
    right = np.array(voted) == test.intent.to_numpy()
    out = {}
    for name, intents in halves.items():
        rows = test.intent.isin(intents).to_numpy()
        out[name] = {
            "voted_accuracy": float(right[rows].mean()),
            "abstained": float(abstained[rows].mean()),
            "answered_accuracy": float(right[rows & ~abstained].mean()),
            "texts": int(rows.sum()),
        }
    return out


def train(data: Path, out: Path, seed: int, flags: list[str], extra: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "siamese_search.trainer.cli", *flags]
        + ["--out", str(out), "--seed", str(seed), "--quiet", *extra],
        check=True,
    )
    return time.perf_counter() - started


def run_seed(seed: int, work: Path, extra: list[str]) -> dict:
    from siamese_search.core.model_artifact import load_model
    from siamese_search.core.tables import Columns
    from siamese_search.indexer.build import BuildOptions, apply_changes, build_index
    from siamese_search.indexer.changes import Change

    quiet = BuildOptions(show_progress=False)
    shots = pd.read_csv(CLINC / f"train-10shot-seed{seed}.csv")
    test = pd.read_csv(CLINC / "test.csv")
    test = test[test.intent != "oos"].reset_index(drop=True)
    intents = sorted(shots.intent.unique())
    rng = np.random.default_rng(seed)
    first = set(rng.choice(intents, size=len(intents) // 2, replace=False).tolist())
    halves = {"trained": first, "added": set(intents) - first}
    shots["id"] = [f"r{i}" for i in range(len(shots))]
    first_rows = shots[shots.intent.isin(first)]
    added_rows = shots[~shots.intent.isin(first)]
    first_csv, all_csv = work / "first.csv", work / "all.csv"
    first_rows.to_csv(first_csv, index=False)
    shots.to_csv(all_csv, index=False)
    columns = Columns(text="text", label="intent", id="id")
    train_flags = ["--label-column", "intent"]
    seconds = {}

    seconds["train_first"] = train(
        first_csv, work / "first-model", seed, ["--data", str(first_csv), *train_flags], extra
    )
    index_dir = work / "index"
    model = load_model(work / "first-model")
    build_index(index_dir, model, first_csv, columns, quiet)
    trained_only = scores(model, index_dir, test, halves)
    upsert = Change(
        "upsert",
        tuple(added_rows.id),
        tuple(added_rows.text),
        tuple(added_rows.intent),
    )
    apply_changes(index_dir, model, [upsert], quiet)
    before = scores(model, index_dir, test, halves)

    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "siamese_search.indexer.cli", "retrain", "--index", str(index_dir)]
        + ["--out", str(work / "retrained"), "--quiet", "--", "--seed", str(seed), "--quiet"]
        + extra,
        check=True,
    )
    seconds["retrain_cycle"] = time.perf_counter() - started
    after = scores(load_model(work / "retrained"), index_dir, test, halves)

    seconds["train_scratch"] = train(
        all_csv, work / "scratch-model", seed, ["--data", str(all_csv), *train_flags], extra
    )
    scratch_model = load_model(work / "scratch-model")
    build_index(work / "scratch-index", scratch_model, all_csv, columns, quiet)
    scratch = scores(scratch_model, work / "scratch-index", test, halves)
    return {
        "seed": seed,
        "trained_only": trained_only,
        "before": before,
        "after": after,
        "scratch": scratch,
        "seconds": seconds,
    }


def main() -> int:
    argv = sys.argv[1:]
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    runs = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as work:
            run = run_seed(seed, Path(work), extra)
        runs.append(run)
        print(json.dumps(run), flush=True)
    mean = {
        stage: {
            half: {
                key: float(np.mean([r[stage][half][key] for r in runs]))
                for key in ("voted_accuracy", "abstained", "answered_accuracy")
            }
            for half in ("trained", "added")
        }
        for stage in STAGES
    }
    for stage, halves in mean.items():
        print(
            f"{stage:<8}"
            + "".join(
                f"  {half}: voted {v['voted_accuracy']:.3f}, abstained {v['abstained']:.3f}, "
                f"answered right {v['answered_accuracy']:.3f}"
                for half, v in halves.items()
            )
        )
    if args.out:
        args.out.write_text(json.dumps({"k": K, "runs": runs, "mean": mean}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
