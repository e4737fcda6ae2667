"""Accuracy benchmark: train + evaluate on the bundled commit-message split over seeds.

Runs the real console scripts (siamese-train, siamese-evaluate) so the numbers are
what a user gets. Usage:
    python bench/accuracy.py [--seeds 0 1 2] [--out bench/results/accuracy.json] [-- TRAIN FLAGS]
Anything after `--` is passed to siamese-train (e.g. `-- --mining random --ensemble 1`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "commit-messages"


def run(seed: int, train_flags: list[str], k: int, workdir: Path) -> dict:
    model = workdir / f"model-{seed}"
    report = workdir / f"report-{seed}.json"
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "siamese_search.trainer.cli",
            "--data",
            str(DATA / "train.csv"),
            "--label-column",
            "class",
            "--out",
            str(model),
            "--seed",
            str(seed),
            "--quiet",
            *train_flags,
        ],
        check=True,
    )
    wall = time.perf_counter() - started
    subprocess.run(
        [
            sys.executable,
            "-m",
            "siamese_search.trainer.evaluate",
            "--model",
            str(model),
            "--reference",
            str(DATA / "train.csv"),
            "--test",
            str(DATA / "test.csv"),
            "--label-column",
            "class",
            "--k",
            str(k),
            "--report-json",
            str(report),
            "--no-plots",
            "--quiet",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    scores = json.loads(report.read_text())
    manifest = json.loads((model / "manifest.json").read_text())
    return {
        "seed": seed,
        "accuracy": scores["accuracy"],
        "macro_f1": scores["macro_f1"],
        "train_seconds": manifest["training"]["seconds"],
        "train_wall_seconds": wall,
    }


def main() -> int:
    argv = sys.argv[1:]
    train_flags: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, train_flags = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        runs = [run(seed, train_flags, args.k, Path(tmp)) for seed in args.seeds]
    for r in runs:
        print(
            f"seed {r['seed']}: accuracy {r['accuracy']:.4f}  macro-F1 {r['macro_f1']:.4f}  "
            f"training {r['train_seconds']:.1f} s (process {r['train_wall_seconds']:.1f} s)"
        )
    mean = {
        key: sum(r[key] for r in runs) / len(runs)
        for key in ("accuracy", "macro_f1", "train_seconds", "train_wall_seconds")
    }
    print(
        f"mean: accuracy {mean['accuracy']:.4f}  macro-F1 {mean['macro_f1']:.4f}  "
        f"training {mean['train_seconds']:.1f} s   "
        f"flags: {' '.join(train_flags) or '(defaults)'}"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {"train_flags": train_flags, "k": args.k, "runs": runs, "mean": mean}, indent=2
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
