"""Retrieval quality as a client sees it: a running siamese-serve, over gRPC and REST.

For each seed: `siamese-train` on the commit split (the recipe's flags after `--`),
`siamese-index build` over the commit test texts minus 300 query rows, `siamese-serve`
on 127.0.0.1 with REST, then:

- STS-B dev Spearman x 100 of the cosine between `Embed` vectors of each pair
  (`../shared/data/stsb/dev.csv`): does the served space still rank by meaning?
- same-label precision@10 of `Search` for the 300 commit queries, and the share of
  their top-10 scores >= 0.999 (saturated scores say nothing);
- abstention by `Predict`: share of 300 CLINC150 test texts (off-domain for a commit
  model) abstained on, and of the 300 commit queries (in-domain);
- the new-label round trip over REST: 5 "billing" examples upserted with `wait`,
  Predict of a billing question must say "billing"; deleted (`wait`), it must not.

Usage:
    python bench/retrieval.py --seeds 0 1 2 --out bench/results/retrieval-default.json
    python bench/retrieval.py --seeds 0 --out bench/results/retrieval-labels.json \
        -- --served-space labels
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATA = ROOT.parent / "shared" / "data"
QUERIES = 300
BILLING = [
    "refund the duplicate invoice charge",
    "my invoice shows the wrong amount",
    "I was billed twice this month",
    "please cancel the charge on my credit card",
    "how do I get a refund for my subscription",
]
BILLING_QUERY = "the invoice total is wrong, please refund"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(*command: str) -> None:
    subprocess.run([str(BIN / command[0]), *command[1:]], check=True, cwd=ROOT)


def rest(port: int, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def measure_seed(seed: int, recipe: list[str], work: Path) -> dict:
    from siamese_search.client import SearchClient

    commits = pd.read_csv(DATA / "commit-messages" / "test.csv")
    rng = np.random.default_rng(seed)
    query_rows = np.sort(rng.choice(len(commits), QUERIES, replace=False))
    queries = commits.iloc[query_rows]
    reference = commits.drop(commits.index[query_rows])
    reference_csv = work / "reference.csv"
    reference.to_csv(reference_csv, index=False)
    clinc = pd.read_csv(DATA / "clinc150" / "test.csv")
    off_domain = clinc.text.iloc[rng.choice(len(clinc), QUERIES, replace=False)].tolist()
    sts = pd.read_csv(DATA / "stsb" / "dev.csv")

    model, index = work / "model", work / "index"
    started = time.perf_counter()
    run(
        "siamese-train",
        "--data",
        str(DATA / "commit-messages" / "train.csv"),
        "--label-column",
        "class",
        "--out",
        str(model),
        "--seed",
        str(seed),
        "--quiet",
        *recipe,
    )
    train_seconds = time.perf_counter() - started
    run(
        "siamese-index",
        "build",
        "--model",
        str(model),
        "--data",
        str(reference_csv),
        "--label-column",
        "class",
        "--out",
        str(index),
        "--quiet",
    )
    http_port = free_port()
    server = subprocess.Popen(
        [
            str(BIN / "siamese-serve"),
            "--index",
            str(index),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--http-port",
            str(http_port),
            "--max-k",
            "100",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "SIAMESE_THREADS": "2"},
    )
    try:
        line = server.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"siamese-serve did not start: {line!r}")
        target = line.strip().rsplit(" ", 1)[-1]
        with SearchClient(target) as client:
            # Embed: the vectors Search compares
            first = client.embed(sts.sentence1.tolist())
            second = client.embed(sts.sentence2.tolist())
            sts_spearman = 100 * spearmanr((first * second).sum(1), sts.score).statistic
            # Search: neighbours and scores
            labels = queries["class"].astype(str).tolist()
            found = client.search_many(queries.text.tolist(), k=10)
            same = [
                [h.label == lab for h in r.neighbors] for r, lab in zip(found, labels, strict=True)
            ]
            scores = np.array([[h.score for h in r.neighbors] for r in found])
            # Predict: abstention in and off the domain
            in_domain = client.predict_many(queries.text.tolist())
            off = client.predict_many(off_domain)
            in_correct = np.mean([p.label == lab for p, lab in zip(in_domain, labels, strict=True)])
        # the new-label round trip, over REST
        examples = [
            {"id": f"billing-{i}", "text": t, "label": "billing"} for i, t in enumerate(BILLING)
        ]
        rest(http_port, "/v1/examples:upsert", {"examples": examples, "wait": True})
        with_billing = rest(http_port, "/v1/predict", {"text": BILLING_QUERY, "k": 10})
        rest(http_port, "/v1/examples:delete", {"label": "billing", "wait": True})
        without_billing = rest(http_port, "/v1/predict", {"text": BILLING_QUERY, "k": 10})
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "seed": seed,
        "training_seconds": round(train_seconds, 1),
        "sts_spearman": round(float(sts_spearman), 2),
        "precision_at_10": round(float(np.mean(same)), 4),
        "top10_share_ge_0999": round(float(np.mean(scores >= 0.999)), 4),
        "median_top1_score": round(float(np.median(scores[:, 0])), 4),
        "median_10th_score": round(float(np.median(scores[:, -1])), 4),
        "off_domain_abstained": round(float(np.mean([p.abstained for p in off])), 4),
        "in_domain_abstained": round(float(np.mean([p.abstained for p in in_domain])), 4),
        "in_domain_accuracy_answered_as_wrong_when_abstaining": round(float(in_correct), 4),
        "billing_predicted_after_upsert": with_billing.get("label", ""),
        "billing_predicted_after_delete": without_billing.get("label", ""),
        "billing_round_trip_ok": with_billing.get("label") == "billing"
        and without_billing.get("label") != "billing",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("recipe", nargs="*", help="siamese-train flags (after --)")
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="siamese-retrieval-") as tmp:
            print(f"== seed {seed}, recipe {args.recipe or 'default'}", file=sys.stderr, flush=True)
            rows.append(measure_seed(seed, args.recipe, Path(tmp)))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    numeric = [k for k, v in rows[0].items() if isinstance(v, float) and k != "seed"]
    summary = {
        "command": "python bench/retrieval.py " + " ".join(sys.argv[1:]),
        "recipe": args.recipe,
        "mean": {k: round(float(np.mean([r[k] for r in rows])), 4) for k in numeric},
        "billing_round_trips_ok": sum(r["billing_round_trip_ok"] for r in rows),
        "seeds": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["mean"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
