"""Accuracy benchmark: train + evaluate over seeds, on the commit split or CLINC150 10-shot.

Runs the real console scripts (siamese-train, siamese-evaluate) so the numbers are
what a user gets. Usage:
    python bench/accuracy.py [--dataset commits|clinc] [--seeds 0 1 2] [--out FILE]
        [--runtimes numpy openvino] [-- TRAIN FLAGS]
Anything after `--` is passed to siamese-train (e.g. `-- --mining random --ensemble 1`).
With --runtimes, each seed's model is trained once and evaluated on each encoder
runtime (siamese-evaluate --encoder-runtime), so the runtimes are compared on the
same models; a run then names its runtime and the means are per runtime.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMITS = ROOT / "data" / "commit-messages"
CLINC = ROOT.parent / "shared" / "data" / "clinc150"


@dataclass(frozen=True)
class Dataset:
    """Where a benchmark's tables are and how to read them."""

    train: Callable[[int], Path]  # the training (and reference) table for a seed
    test: Path
    columns: list[str]
    train_flags: list[str] = field(default_factory=list)
    evaluate_flags: list[str] = field(default_factory=list)


def dataset(name: str, clinc_dir: Path) -> Dataset:
    if name == "commits":
        return Dataset(
            lambda seed: COMMITS / "train.csv", COMMITS / "test.csv", ["--label-column", "class"]
        )
    # CLINC150 10-shot (clinc_dir/README.md): abstention threshold chosen on val.csv only
    return Dataset(
        lambda seed: clinc_dir / f"train-10shot-seed{seed}.csv",
        clinc_dir / "test.csv",
        ["--text-column", "text", "--label-column", "intent"],
        ["--validation-data", str(clinc_dir / "val.csv"), "--oos-label", "oos"],
        ["--oos-label", "oos"],
    )


SCORES = (
    "accuracy",
    "macro_f1",
    "closed_set_accuracy",
    "in_scope_accuracy",
    "oos_recall",
    "oos_precision",
    "overall_accuracy",
    "ece",
)


def run(
    seed: int,
    data: Dataset,
    train_flags: list[str],
    k: int,
    workdir: Path,
    runtimes: list[str | None],
) -> list[dict]:
    """One seed: train, then evaluate on each runtime (None: the default)."""
    model = workdir / f"model-{seed}"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "siamese_search.trainer.cli", "--data", str(data.train(seed))]
        + data.columns
        + ["--out", str(model), "--seed", str(seed), "--quiet"]
        + data.train_flags
        + train_flags,
        check=True,
    )
    wall = time.perf_counter() - started
    manifest = json.loads((model / "manifest.json").read_text())
    runs = []
    for runtime in runtimes:
        report = workdir / f"report-{seed}-{runtime}.json"
        subprocess.run(
            [sys.executable, "-m", "siamese_search.trainer.evaluate", "--model", str(model)]
            + ["--reference", str(data.train(seed)), "--test", str(data.test)]
            + data.columns
            + ["--k", str(k), "--report-json", str(report), "--no-plots", "--quiet"]
            + (["--encoder-runtime", runtime] if runtime else [])
            + data.evaluate_flags,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        scores = json.loads(report.read_text())
        runs.append(
            {
                "seed": seed,
                **({"runtime": runtime} if runtime else {}),
                **{key: scores[key] for key in SCORES if key in scores},
                "train_seconds": manifest["training"]["seconds"],
                "train_wall_seconds": wall,
                "resolved_config": manifest["training"]["config"],
            }
        )
    return runs


def main() -> int:
    argv = sys.argv[1:]
    train_flags: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, train_flags = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["commits", "clinc"], default="commits")
    parser.add_argument("--clinc-dir", type=Path, default=CLINC, help="CLINC150 files")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--runtimes", nargs="+", default=[None], help="evaluate each model on these runtimes"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = dataset(args.dataset, args.clinc_dir)
        runs = [
            r
            for seed in args.seeds
            for r in run(seed, data, train_flags, args.k, Path(tmp), args.runtimes)
        ]
    keys = [key for key in (*SCORES, "train_seconds", "train_wall_seconds") if key in runs[0]]

    def line(values: dict) -> str:
        return "  ".join(f"{key} {values[key]:.4f}" for key in keys)

    def label(runtime: str | None) -> str:
        return f" [{runtime}]" if runtime else ""

    for r in runs:
        print(f"seed {r['seed']}{label(r.get('runtime'))}: {line(r)}")
    means = {}
    for runtime in args.runtimes:
        mine = [r for r in runs if r.get("runtime") == runtime]
        means[runtime] = {key: sum(r[key] for r in mine) / len(mine) for key in keys}
        flags = " ".join(train_flags) or "(defaults)"
        print(f"mean{label(runtime)}: {line(means[runtime])}   flags: {flags}")
    mean = means[args.runtimes[0]] if len(args.runtimes) == 1 else means
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "dataset": args.dataset,
                    "train_flags": train_flags,
                    "k": args.k,
                    "runs": runs,
                    "mean": mean,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
