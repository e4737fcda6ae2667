"""`siamese-index build` end to end on each encoder runtime: the whole command timed
(process start, imports, model load, the runtime's compile, the build), in interleaved
rounds so drift on the machine weighs on every runtime alike.

A synthetic corpus (bench/indexing.py's generator: unique commit-message-like texts),
flat index, no labels. Reported per round and runtime: wall seconds, and the ratio of
each runtime's total over the rounds to the first runtime's. The first round after a
change of the graph code, weights or OpenVINO also pays the runtime's one-time
fidelity check (remembered after).

Usage: python bench/index_cli.py --model artifacts/model [--size 10000] [--rounds 4]
       [--runtimes numpy openvino] [--out bench/results/index-cli-runtimes.json]
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
sys.path.insert(0, str(ROOT / "bench"))

from indexing import make_corpus  # noqa: E402


def build_seconds(model: Path, corpus: Path, out: Path, runtime: str) -> float:
    command = [str(Path(sys.executable).parent / "siamese-index"), "build", "--model", str(model)]
    command += ["--data", str(corpus), "--id-column", "id", "--no-labels", "--out", str(out)]
    command += ["--encoder-runtime", runtime]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "artifacts" / "model")
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--runtimes", nargs="+", default=["numpy", "openvino"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {runtime: [] for runtime in args.runtimes}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.csv"
        make_corpus(corpus, args.size)
        for round_number in range(1, args.rounds + 1):
            for runtime in args.runtimes:
                out = Path(tmp) / f"index-{runtime}-{round_number}"
                seconds[runtime].append(build_seconds(args.model, corpus, out, runtime))
                print(
                    f"round {round_number}  {runtime:<13} {seconds[runtime][-1]:6.2f} s", flush=True
                )
    base = args.runtimes[0]
    ratios = {runtime: sum(seconds[base]) / sum(seconds[runtime]) for runtime in args.runtimes}
    for runtime in args.runtimes:
        print(
            f"{runtime:<13} total {sum(seconds[runtime]):7.2f} s  x{ratios[runtime]:.2f} of {base}"
        )
    if args.out:
        result = {"size": args.size, "seconds": seconds, "speedup_over_first": ratios}
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
