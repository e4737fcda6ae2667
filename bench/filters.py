"""Filtered search (issue 36): p50 latency and recall at several selectivities against
unfiltered search, on one index, in one run.

The index: N rows (default 1,000,000), HNSW, of embedded pairs of real CLINC150 texts
(`--vectors pairs`, the default) or noisy copies of commit texts' vectors (`noisy`),
written through the version writer,
each with a keyword field `kw` of 100 values and a numeric field `num` (uniform, 0 ..
999,999). Two query sets, each measured on the same index: `pairs`, new pairs of
CLINC150 texts (not in the index: what a user of such a corpus asks), and `commits`,
commit test texts (another domain: their nearest rows are near-ties, the hardest case
for a graph walk). For each filter: the p50 of one-query searches (k 10) once the
filter's plan is cached (the first use pays for reading the rows that pass:
reported), timed interleaved (each turn runs every filter once, in a new order, each
on its own order of the queries: load on the machine moves all of them alike, and no
search is timed right after the same one), and recall@10 against brute force over the
rows that pass.

Usage: python bench/filters.py [--model artifacts/model] [--rows 1000000] [--out FILE]
           [--index-param ef_search=256] [--index-metadata]   (declare kw and num indexed)
           [--query-sets pairs commits] [--queries 200] [--between]   (5% and 2% too)
           [--float32-rows 0]   (each filter's subsets from the half-precision copy too)
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from writes import commit_texts  # noqa: E402

CLINC = ROOT.parent / "shared" / "data" / "clinc150"

FILTERS = {
    "none (100%)": None,
    "50%": {"must": [{"key": "num", "range": {"lt": 500_000}}]},
    "10%": {"must": [{"key": "kw", "match": {"any": [f"k{i}" for i in range(10)]}}]},
    "1%": {"must": [{"key": "kw", "match": {"value": "k42"}}]},
    "0.1%": {
        "must": [{"key": "kw", "match": {"value": "k7"}}, {"key": "num", "range": {"lt": 100_000}}]
    },
}
#: `--between`: shares under the walked 10% but over the 20,000 rows scored exactly
#: (at 1M rows), where the walk's beam widens
BETWEEN = {
    "5%": {"must": [{"key": "kw", "match": {"any": [f"k{i}" for i in range(5)]}}]},
    "2%": {"must": [{"key": "kw", "match": {"any": ["k0", "k1"]}}]},
}


def clinc_texts() -> list[str]:
    texts = []
    for part in ("train-full", "val", "test"):
        with open(CLINC / f"{part}.csv", newline="", encoding="utf-8") as handle:
            texts += [row["text"] for row in csv.DictReader(handle)]
    return texts


def pair_texts(count: int, seed: int) -> list[str]:
    """`count` pairs of random CLINC150 utterances, "A. B" (seed 1: the index's)."""
    texts = clinc_texts()
    chosen = np.random.default_rng(seed).integers(0, len(texts), (count, 2))
    return [f"{texts[a]}. {texts[b]}" for a, b in chosen]


def pair_vectors(model, rows: int) -> np.ndarray:
    """`rows` vectors of real-looking texts: two random CLINC150 utterances joined
    ("A. B"), embedded by the model; a continuous spread like a real corpus's (the
    noisy copies of `noisy` put ~500 near-ties around each of 2,000 points, which
    graph indexes walk poorly). Embedding 1M takes ~18 min here: cached in build/."""
    from tqdm.auto import tqdm

    cache = ROOT / "build" / f"filters-pairs-{rows}-{model.fingerprint}.npy"
    if cache.is_file():
        return np.load(cache, mmap_mode="r")
    texts = clinc_texts()
    rng = np.random.default_rng(1)
    out = np.zeros((rows, model.dim), dtype=np.float32)
    with tqdm(total=rows, desc="embedding pairs", unit="text", mininterval=5) as bar:
        for start in range(0, rows, 10_000):
            n = min(10_000, rows - start)
            chosen = rng.integers(0, len(texts), (n, 2))
            out[start : start + n] = model.embed([f"{texts[a]}. {texts[b]}" for a, b in chosen])
            bar.update(n)
    cache.parent.mkdir(exist_ok=True)
    np.save(cache, out)
    return out


def noisy_vectors(model, rows: int) -> np.ndarray:
    """Noisy copies of 2,000 commit texts' vectors (the first runs' data)."""
    rng = np.random.default_rng(0)
    centres = model.embed(commit_texts()[:2000])
    vectors = rng.standard_normal((rows, model.dim)).astype(np.float32)
    vectors *= 0.6 / np.sqrt(model.dim)
    vectors += centres[rng.integers(0, len(centres), rows)]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def build(
    index_dir: Path,
    model,
    vectors: np.ndarray,
    kind: str,
    params: dict | None,
    indexed: list[str],
) -> None:
    from siamese_search.indexer import layout
    from siamese_search.indexer.metadata import encode
    from siamese_search.indexer.version_writer import VersionWriter

    rng = np.random.default_rng(0)
    rows = len(vectors)
    index_dir.mkdir(parents=True)
    staging = layout.new_staging(index_dir)
    writer = VersionWriter(
        staging, model.dim, with_labels=True, segment_name="000001", indexed_keys=indexed
    )
    for start in range(0, rows, 50_000):
        n = min(50_000, rows - start)
        chunk = np.asarray(vectors[start : start + n])
        keywords = rng.integers(0, 100, n)
        numbers = rng.integers(0, 1_000_000, n)
        writer.append(
            [f"doc-{start + i}" for i in range(n)],
            ["a"] * n,
            [f"synthetic text {start + i}" for i in range(n)],
            chunk,
            [
                encode({"kw": f"k{k}", "num": int(v)})
                for k, v in zip(keywords, numbers, strict=True)
            ],
        )
    extra = {"operation": {"kind": "build", "data": "synthetic (bench/filters.py)"}}
    writer.finish(kind, params, model, extra)
    layout.publish(index_dir, staging)


def measure(
    index_dir: Path,
    query_sets: dict[str, np.ndarray],
    beams: list[float] | None,
    float32_rows: list[int] | None = None,
) -> dict:
    """Per query set and filter (and filtered beam, when several are given; and
    FLOAT32_SUBSET_ROWS, when given): p50 (timed interleaved), recall@10, first use.

    A FLOAT32_SUBSET_ROWS variant searches the same rows under a filter written another
    way (nested in a `must`), so that its plan, made with that setting, is cached
    beside the default one's and both are timed in the same turns."""
    from siamese_search.indexer import segments
    from siamese_search.indexer.backends import faiss_backend
    from siamese_search.indexer.store import open_index

    caps = beams or [faiss_backend.HNSW_FILTERED_BEAM]
    runs = {
        name if len(caps) == 1 or spec is None else f"{name} b{cap:g}": (name, spec, cap, None)
        for name, spec in FILTERS.items()
        for cap in (caps if spec is not None else caps[:1])
    }
    for rows in float32_rows or []:
        for name, spec in FILTERS.items():
            if spec is not None:
                runs[f"{name} f32<={rows}"] = (name, {"must": [spec]}, caps[0], rows)
    default_rows = segments.FLOAT32_SUBSET_ROWS

    out: dict[str, dict] = {name: {} for name in query_sets}
    with open_index(index_dir) as version:
        vectors = np.asarray(version.vectors())
        stored = [row for rows in version.records().iter_all(with_metadata=True) for row in rows]
        fields = [json.loads(row[4]) for row in stored]
        wheres, subsets, first = {}, {}, {}
        for run, (name, spec, _, rows) in runs.items():
            wheres[run] = version.parse_filter(spec)
            segments.FLOAT32_SUBSET_ROWS = default_rows if rows is None else rows
            started = time.perf_counter()
            version.search(next(iter(query_sets.values()))[:1], k=10, where=wheres[run])
            first[run] = time.perf_counter() - started
            segments.FLOAT32_SUBSET_ROWS = default_rows
            if name not in subsets:  # a filter's variants pass the same rows
                passing = np.ones(len(stored), bool) if spec is None else _passing(fields, name)
                subsets[name] = np.flatnonzero(passing)
        for set_name, queries in query_sets.items():
            timings: dict[str, list[float]] = {run: [] for run in runs}
            found: dict[str, list[set[int]]] = {run: [set() for _ in queries] for run in runs}
            # each turn runs every filter once, in a new order, each on a query of its
            # own (its own permutation): load moves them alike, and no run is timed
            # right after the same search (its nodes in the caches)
            rng = np.random.default_rng(3)
            order = list(runs)
            which = {run: rng.permutation(len(queries)) for run in runs}
            for turn in range(len(queries)):
                for index in rng.permutation(len(order)):
                    run = order[index]
                    name, _, cap, _ = runs[run]
                    faiss_backend.HNSW_FILTERED_BEAM = cap
                    query = which[run][turn]
                    started = time.perf_counter()
                    hits = version.search(queries[query][None, :], k=10, where=wheres[run])[0]
                    timings[run].append(time.perf_counter() - started)
                    found[run][query] = {h.position for h in hits}
            all_scores = vectors @ np.asarray(queries, dtype=np.float32).T  # one pass
            for run, (name, _, _, _) in runs.items():
                subset = subsets[name]
                scores = all_scores[subset]
                top = np.argpartition(-scores, min(10, len(subset)) - 1, axis=0)[:10]
                recalls = []
                for column, hits in enumerate(found[run]):
                    truth = set(subset[top[:, column]].tolist())
                    recalls.append(len(truth & hits) / max(len(truth), 1))
                out[set_name][run] = {
                    "rows_passing": len(subset),
                    "p50_ms": 1000 * statistics.median(timings[run]),
                    "recall_at_10": float(np.mean(recalls)),
                    "first_use_ms": 1000 * first[run],
                }
    return out


def _passing(fields: list[dict], name: str) -> np.ndarray:
    kw = np.array([int(f["kw"][1:]) for f in fields])
    num = np.array([f["num"] for f in fields])
    return {
        "50%": num < 500_000,
        "10%": kw < 10,
        "1%": kw == 42,
        "0.1%": (kw == 7) & (num < 100_000),
        "5%": kw < 5,
        "2%": kw < 2,
    }[name]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "artifacts" / "model")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--index-type", default="hnsw")
    parser.add_argument("--queries", type=int, default=200, help="per query set")
    parser.add_argument(
        "--query-sets",
        nargs="+",
        choices=["pairs", "commits"],
        default=["pairs", "commits"],
        help="pairs: new pairs of CLINC150 texts (the index's kind of text); commits: "
        "commit test texts (another domain)",
    )
    parser.add_argument(
        "--vectors",
        choices=["pairs", "noisy"],
        default="pairs",
        help="pairs: embedded pairs of CLINC150 texts (cached in build/); noisy: noisy "
        "copies of 2,000 commit texts' vectors",
    )
    parser.add_argument(
        "--index-param", action="append", default=[], metavar="KEY=N", help="e.g. ef_search=256"
    )
    parser.add_argument(
        "--index-metadata", action="store_true", help="declare kw and num indexed fields"
    )
    parser.add_argument(
        "--beam",
        type=float,
        nargs="+",
        help="filtered HNSW beams (times efSearch) to measure, interleaved on one index "
        "(default: the backend's HNSW_FILTERED_BEAM)",
    )
    parser.add_argument(
        "--index-dir",
        type=Path,
        help="build the index here and keep it; an index already there is measured as it is "
        "(its build parameters, not --index-param's)",
    )
    parser.add_argument(
        "--between",
        action="store_true",
        help="also measure 5%% and 2%% of the rows (between the walked and the scored plans)",
    )
    parser.add_argument(
        "--beam-max",
        type=float,
        help="the most the beam widens below 10%% of the rows (default: the backend's "
        "HNSW_FILTERED_BEAM_MAX; 2.5 measures a beam that does not widen)",
    )
    parser.add_argument(
        "--float32-rows",
        type=int,
        nargs="+",
        help="also measure each filter with these FLOAT32_SUBSET_ROWS (subsets up to it "
        "scored in float32, larger ones from their half-precision copy), interleaved",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.between:
        FILTERS.update(BETWEEN)
    if args.beam_max is not None:
        from siamese_search.indexer.backends import faiss_backend

        faiss_backend.HNSW_FILTERED_BEAM_MAX = args.beam_max
    from siamese_search.core.model_artifact import load_model

    model = load_model(args.model)
    query_sets = {
        "pairs": lambda: model.embed(pair_texts(args.queries, seed=2)),
        "commits": lambda: model.embed(commit_texts()[-args.queries :]),
    }
    queries = {name: query_sets[name]() for name in args.query_sets}
    params = {k: int(v) for k, _, v in (p.partition("=") for p in args.index_param)}
    indexed = ["kw", "num"] if args.index_metadata else []
    with tempfile.TemporaryDirectory() as scratch:
        index_dir = args.index_dir or Path(scratch) / "index"
        started = time.perf_counter()
        if not index_dir.exists():
            made = pair_vectors if args.vectors == "pairs" else noisy_vectors
            vectors = made(model, args.rows)
            build(index_dir, model, vectors, args.index_type, params or None, indexed)
        built = time.perf_counter() - started
        result = measure(index_dir, queries, args.beam, args.float32_rows)
    print(
        f"{args.rows} rows ({args.vectors}), {args.index_type} {args.index_param or ''} "
        f"(made and built in {built:.0f} s); k 10, {args.queries} queries a set, timed "
        f"interleaved; fields indexed: {args.index_metadata}; filtered beam "
        f"{args.beam or 'default'}"
    )
    for set_name, rows in result.items():
        base = rows["none (100%)"]["p50_ms"]
        print(f"queries: {set_name}")
        for name, row in rows.items():
            print(
                f"  {name:<16} {row['rows_passing']:>8} rows  p50 {row['p50_ms']:6.2f} ms "
                f"({row['p50_ms'] / base:.2f}x unfiltered)  recall@10 "
                f"{row['recall_at_10']:.3f}  first use {row['first_use_ms']:.0f} ms"
            )
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "rows": args.rows,
                    "index_type": args.index_type,
                    "index_params": params,
                    "index_metadata": indexed,
                    "vectors": args.vectors,
                    "filtered_beam": args.beam,
                    "filtered_beam_max": args.beam_max,
                    "float32_rows": args.float32_rows,
                    "queries_per_set": args.queries,
                    "query_sets": result,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
