"""What one write costs as the index grows (issue 23): `siamese-index add` of the same
new texts to indexes of several sizes (its bar: at most 1.5x from 20k to 200k rows),
and with --served, a served `Upsert` of 10 texts with `wait` on HNSW indexes of
100k and 1M rows, search latency with one segment and with the most a version holds,
and what `siamese-index compact` takes; with --milvus-uri, the same served from and
written to Milvus.

Each base index is written through the project's own version writer from synthetic
unit vectors (random, with the model's dimension, texts and labels made up), so the
bench does not spend an hour encoding; the timed `add_to_index` then encodes its new
texts with the model like any add (the same texts at every size), copies the base,
rebuilds the FAISS index and publishes. One process; sizes and index types in turn.

With --profile, one more add per size runs under cProfile and its costliest calls
(cumulative time) are printed: where a write's time goes.

Usage: python bench/writes.py --model artifacts/model [--sizes 20000 200000]
       [--index-types flat hnsw] [--add 100] [--profile] [--cache DIR] [--milvus-uri URI]
       [--out bench/results/writes.json]
       python bench/writes.py --model artifacts/model --served [--sizes 100000 1000000]
       [--upserts 10] [--clustered] [--cache DIR] [--milvus-uri URI]
       [--out bench/results/writes-served.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def synthetic_index(
    index_dir: Path, model, size: int, index_type: str, seed: int = 0, centres=None
) -> None:
    """A one-version index of `size` synthetic unit vectors, written by VersionWriter
    (its FAISS index built with every core: the base is setting, not what is timed):
    random ones, or with `centres` (real texts' vectors) noisy copies of those, so
    the index has the clusters real corpora have. Random vectors are HNSW's worst
    case: real queries are far from all of them, and a graph of them is searched
    2.5x slower than one with the queries' neighbours in it (measured)."""
    import numpy as np

    from siamese_search.indexer import layout
    from siamese_search.indexer.version_writer import VersionWriter

    rng = np.random.default_rng(seed)
    labels = sorted(model.manifest.get("labels") or ["a", "b", "c", "d", "e"])
    index_dir.mkdir(parents=True)
    staging = layout.new_staging(index_dir)
    writer = VersionWriter(staging, model.dim, with_labels=True, segment_name="000001")
    for start in range(0, size, 50_000):
        n = min(50_000, size - start)
        vectors = rng.standard_normal((n, model.dim)).astype(np.float32)
        if centres is not None:  # noise of norm ~0.6: cosine ~0.85 to its centre
            vectors *= 0.6 / np.sqrt(model.dim)
            vectors += centres[(start + np.arange(n)) % len(centres)]
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids = [f"doc-{start + i}" for i in range(n)]
        writer.append(
            ids,
            [str(labels[(start + i) % len(labels)]) for i in range(n)],
            [f"synthetic text {start + i}" for i in range(n)],
            vectors,
        )
    extra = {
        "operation": {"kind": "build", "data": "synthetic (bench/writes.py)", "base_version": None},
        "source": {"text_column": "text", "label_column": "class", "id_column": "id"},
    }
    writer.finish(index_type, None, model, extra)
    layout.publish(index_dir, staging)


def commit_texts() -> list[str]:
    with open(ROOT / "data/commit-messages/test.csv", newline="", encoding="utf-8") as handle:
        return [row["text"] for row in csv.DictReader(handle)]


def new_rows(path: Path, count: int, label: str, offset: int = 0, prefix: str = "new") -> None:
    texts = commit_texts()[offset : offset + count]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["id", "text", "class"])
        for i, text in enumerate(texts):
            out.writerow([f"{prefix}-{i}", text, label])


def base_index(
    index_dir: Path, model, size: int, index_type: str, cache: Path | None, clustered=False
) -> float:
    """The synthetic base at `index_dir` (hard links from `cache` when it holds one,
    kept there otherwise); the seconds it took."""
    import shutil

    started = time.perf_counter()
    cached = cache / f"{index_type}-{size}{'-clustered' if clustered else ''}" if cache else None
    if cached is not None and cached.is_dir():
        shutil.copytree(cached, index_dir, copy_function=os.link)  # links: no copy
    else:
        centres = model.embed(commit_texts()[:2000]) if clustered else None
        synthetic_index(index_dir, model, size, index_type, centres=centres)
        if cached is not None:
            shutil.copytree(index_dir, cached, copy_function=os.link)
    return time.perf_counter() - started


def seed_milvus(index_dir: Path, model, target) -> float:
    """The base into Milvus (the first Milvus write copies it): a delete of one row,
    which adds no segment; the seconds it took."""
    from siamese_search.indexer.build import delete_from_index
    from siamese_search.indexer.options import BuildOptions

    _drop_alias_and_collections(target)
    started = time.perf_counter()
    delete_from_index(index_dir, model, ["doc-0"], BuildOptions(milvus=target))
    return time.perf_counter() - started


def measure(
    model,
    size: int,
    index_type: str,
    add: int,
    repeats: int,
    profile: bool,
    cache: Path | None = None,
    milvus_uri: str | None = None,
) -> dict:
    from siamese_search.core.tables import Columns
    from siamese_search.indexer.backends.milvus_backend import MilvusTarget
    from siamese_search.indexer.build import add_to_index
    from siamese_search.indexer.options import BuildOptions

    milvus = MilvusTarget(milvus_uri, f"bench_adds_{index_type}_{size}") if milvus_uri else None
    with tempfile.TemporaryDirectory(prefix="bench-writes-") as tmp:
        index_dir = Path(tmp) / "index"
        base_seconds = base_index(index_dir, model, size, index_type, cache)
        seed_seconds = seed_milvus(index_dir, model, milvus) if milvus is not None else None
        seeded = -1 if milvus is not None else 0
        label = str(sorted(model.manifest.get("labels") or ["a"])[0])
        data = Path(tmp) / "new.csv"
        new_rows(data, add, label)
        columns = Columns(text="text", label="class", id="id")
        times = []
        for _ in range(repeats):  # each add replaces the same rows (upsert): same size
            options = BuildOptions(show_progress=False, keep_versions=2, milvus=milvus)
            started = time.perf_counter()
            report = add_to_index(index_dir, model, data, columns, options, upsert=True)
            times.append(time.perf_counter() - started)
            assert report.count == size + seeded + add, report
        if profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.runcall(add_to_index, index_dir, model, data, columns, options, upsert=True)
            print(f"{index_type} {size:,} rows: one add under cProfile")
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(20)
    return {
        "size": size,
        "index_type": index_type,
        "added": add,
        "served_from": "milvus" if milvus is not None else "faiss",
        "base_build_seconds": base_seconds,
        "milvus_seed_seconds": seed_seconds,
        "add_seconds": times,
        "add_seconds_median": statistics.median(times),
    }


def _start_server(index_dir: Path, milvus=None):
    """`siamese-serve` on the index (writes on: loopback), its address once SERVING;
    with `milvus` (a MilvusTarget), serving the Milvus alias and writing to it."""
    import subprocess

    backend = (
        ["--backend", "milvus", "--milvus-uri", milvus.uri, "--milvus-collection", milvus.name]
        if milvus is not None
        else []
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "siamese_search.server.cli", "--index", str(index_dir)]
        + ["--port", "0", "--log-level", "warning", *backend],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = process.stdout.readline()
    if "listening on" not in line:
        process.kill()
        raise RuntimeError(f"siamese-serve did not start: {line!r}")
    return process, line.strip().rsplit(" ", 1)[-1]


def _search_p50(version, queries, repeats: int = 3) -> float:
    """Median seconds of one single-query search of the open version (k=10)."""
    times = []
    for _ in range(repeats):
        for query in queries:
            started = time.perf_counter()
            version.search(query[None, :], 10)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure_served(
    model,
    size: int,
    upserts: int,
    cache: Path | None,
    compact: bool,
    clustered: bool,
    milvus_uri: str | None = None,
    index_type: str = "hnsw",
) -> dict:
    """On an index of `size` rows (HNSW unless `index_type`): served Upserts of 10
    texts with wait (each new ids), then search p50 in-process with the most segments
    a version holds, and with `compact`, against the same rows compacted, and the
    compaction's time (for HNSW a build of every row: minutes at 1M on two cores).

    With `milvus_uri`, the index is served from and written to Milvus: the base is
    first copied there by one add (its time is `milvus_seed_seconds`), and searches
    are Milvus searches of the current version (one RPC each)."""
    from siamese_search.client import Example, SearchClient
    from siamese_search.core.tables import Columns
    from siamese_search.indexer import segments
    from siamese_search.indexer.backends.milvus_backend import MilvusSource, MilvusTarget
    from siamese_search.indexer.build import add_to_index
    from siamese_search.indexer.compaction import compact_index
    from siamese_search.indexer.options import BuildOptions
    from siamese_search.indexer.store import open_index

    milvus = MilvusTarget(milvus_uri, f"bench_writes_{index_type}_{size}") if milvus_uri else None

    def open_served(index_dir: Path):
        if milvus is None:
            return open_index(index_dir)
        return MilvusSource(milvus).open_current()

    with tempfile.TemporaryDirectory(prefix="bench-writes-") as tmp:
        index_dir = Path(tmp) / "index"
        base_seconds = base_index(index_dir, model, size, index_type, cache, clustered)
        seed_seconds = seed_milvus(index_dir, model, milvus) if milvus is not None else None
        label = str(sorted(model.manifest.get("labels") or ["a"])[0])
        texts = commit_texts()
        quiet = BuildOptions(show_progress=False, keep_versions=2, milvus=milvus)
        columns = Columns(text="text", label="class", id="id")
        process, target = _start_server(index_dir, milvus)
        commit_times = []
        try:
            with SearchClient(target, timeout=600) as client:
                for round_ in range(upserts + 1):  # the first one warms up
                    batch = [
                        Example(texts[(round_ * 10 + i) % len(texts)], label, f"up-{round_}-{i}")
                        for i in range(10)
                    ]
                    started = time.perf_counter()
                    result = client.upsert(batch, wait=True)
                    if round_:
                        commit_times.append(time.perf_counter() - started)
                    assert result.committed, result
                served_count = client.info().count
        finally:
            process.terminate()
            process.wait(30)
        seeded = -1 if milvus is not None else 0
        assert served_count == size + seeded + 10 * (upserts + 1), served_count

        # the most segments a version holds: adds of falling sizes (each kept, not merged)
        add = 400
        while True:
            with open_index(index_dir, load_indexes=False) as version:
                if len(version.segments) >= segments.MAX_SEGMENTS:
                    break
                smallest = version.segments[-1].live
            add = max(1, min(add, smallest - 1))
            data = Path(tmp) / f"seg-{add}.csv"
            new_rows(data, add, label, offset=1000, prefix=f"seg{add}")
            add_to_index(index_dir, model, data, columns, quiet)
            add = max(1, add // 2)
        queries = model.embed(texts[2000:2200])
        with open_index(index_dir, load_indexes=False) as version:
            many = len(version.segments)
        with open_served(index_dir) as version:
            many_p50 = _search_p50(version, queries)
            before = [[h.id for h in hits] for hits in version.search(queries, 10)]
        row = {
            "size": size,
            "index_type": index_type,
            "base": "clustered" if clustered else "random",
            "served_from": "milvus" if milvus is not None else "faiss",
            "milvus_seed_seconds": seed_seconds,
            "base_build_seconds": base_seconds,
            "upsert_10_wait_seconds": commit_times,
            "upsert_10_wait_median": statistics.median(commit_times),
            "segments_before_compaction": many,
            "search_p50_ms_most_segments": many_p50 * 1e3,
        }
        if not compact:
            return row
        started = time.perf_counter()
        compact_index(index_dir, model, quiet)
        compact_seconds = time.perf_counter() - started
        with open_index(index_dir, load_indexes=False) as version:
            assert len(version.segments) == 1
        with open_served(index_dir) as version:
            one_p50 = _search_p50(version, queries)
            after = [[h.id for h in hits] for hits in version.search(queries, 10)]
        overlap = statistics.mean(
            len(set(a) & set(b)) / max(len(a), 1) for a, b in zip(before, after, strict=True)
        )
    return {
        **row,
        "search_p50_ms_compacted": one_p50 * 1e3,
        "top10_overlap_before_after_compaction": overlap,
        "compact_seconds": compact_seconds,
    }


def _drop_alias_and_collections(target) -> None:
    """A clean start in Milvus for the bench's alias (an earlier run's collections)."""
    from siamese_search.indexer.backends.milvus_backend import connect

    client = connect(target)
    try:
        if target.name in client.list_aliases().get("aliases", []):
            client.drop_alias(target.name)
        for collection in client.list_collections():
            if collection.startswith(target.name + "_"):
                client.drop_collection(collection)
    finally:
        client.close()


def served_main(args, model) -> int:
    rows = []
    for size in args.sizes:
        compact = size <= args.compact_up_to
        row = measure_served(
            model,
            size,
            args.upserts,
            args.cache,
            compact,
            args.clustered,
            args.milvus_uri,
            args.index_types[0] if args.index_types else "hnsw",
        )
        rows.append(row)
        compacted = (
            f", {row['search_p50_ms_compacted']:.2f} ms compacted (top-10 overlap "
            f"{row['top10_overlap_before_after_compaction']:.3f}); compact "
            f"{row['compact_seconds']:.1f} s"
            if compact
            else ""
        )
        print(
            f"{row['index_type']} {size:>9,} rows  Upsert 10 texts (wait): "
            f"{row['upsert_10_wait_median']:.3f} s "
            f"median of {args.upserts}; search p50 {row['search_p50_ms_most_segments']:.2f} ms "
            f"with {row['segments_before_compaction']} segments{compacted} (base written in "
            f"{row['base_build_seconds']:.0f} s"
            + (
                f"; copied to Milvus in {row['milvus_seed_seconds']:.0f} s)"
                if row["milvus_seed_seconds"] is not None
                else ")"
            ),
            flush=True,
        )
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(
            f"{last['index_type']} {last['size'] // first['size']}x the rows: "
            f"{last['upsert_10_wait_median'] / first['upsert_10_wait_median']:.2f}x the time "
            "per Upsert"
        )
    if args.out:
        payload = {"encoder_runtime": model.encoder_runtime, "served": rows}
        args.out.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="+")
    parser.add_argument(
        "--index-types",
        nargs="+",
        help="default flat hnsw; with --served, the first one (default hnsw)",
    )
    parser.add_argument("--add", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="profile one more add per size")
    parser.add_argument(
        "--served",
        action="store_true",
        help="served Upserts, segment search and compaction on HNSW indexes of --sizes "
        "(default 100000 1000000) instead of adds",
    )
    parser.add_argument("--upserts", type=int, default=10, help="timed Upserts per size")
    parser.add_argument(
        "--clustered",
        action="store_true",
        help="--served: bases of noisy copies of real texts' vectors, not random ones",
    )
    parser.add_argument(
        "--compact-up-to",
        type=int,
        default=200_000,
        help="--served: compact (and compare search with one segment) up to this size",
    )
    parser.add_argument(
        "--cache", type=Path, help="keep the synthetic bases here (hard links) for later runs"
    )
    parser.add_argument(
        "--milvus-uri",
        help="write the index through this Milvus, and with --served serve it from there (e.g. "
        "http://127.0.0.1:19530; `python tests/milvus_service.py` runs one)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from siamese_search.core.model_artifact import load_model

    model = load_model(args.model)
    model.embed(["warm-up"])  # the encoder's first call is not a write's cost
    if args.served:
        args.sizes = args.sizes or [100_000, 1_000_000]
        return served_main(args, model)
    args.sizes = args.sizes or [20_000, 200_000]
    args.index_types = args.index_types or ["flat", "hnsw"]
    rows = []
    for index_type in args.index_types:
        for size in args.sizes:
            row = measure(
                model,
                size,
                index_type,
                args.add,
                args.repeats,
                args.profile,
                args.cache,
                args.milvus_uri,
            )
            rows.append(row)
            print(
                f"{index_type:5} {size:>9,} rows  add {args.add} texts: "
                f"{row['add_seconds_median']:.2f} s median of {args.repeats} "
                f"(base written in {row['base_build_seconds']:.1f} s"
                + (
                    f"; copied to Milvus in {row['milvus_seed_seconds']:.0f} s)"
                    if row["milvus_seed_seconds"] is not None
                    else ")"
                ),
                flush=True,
            )
        first, last = rows[-len(args.sizes)], rows[-1]
        print(
            f"{index_type:5} {last['size'] // first['size']}x the rows: "
            f"{last['add_seconds_median'] / first['add_seconds_median']:.1f}x the time per add"
        )
    if args.out:
        args.out.write_text(
            json.dumps({"encoder_runtime": model.encoder_runtime, "rows": rows}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
