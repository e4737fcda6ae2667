"""Memory of many collections in one server against as many single-collection servers
(issue 37), same models, same indexes, measured in one run.

Five served-space models are fine-tuned on the commit split (3 steps, seeds 0-4: five
different fine-tuned encoders; every one also holds the untuned meaning encoder), each
indexes the commit test texts. For N in 1, 2, 5: one `siamese-serve --collections`
serving N of them, then N `siamese-serve --index` servers, each measured after every
collection answered a Search and a Predict (so every model is loaded in the server and
its encoding processes). Reported: resident memory (RSS) and proportional set size
(PSS: shared pages split between the processes sharing them) of each server with its
encoding processes, summed over the servers.

Usage: SIAMESE_THREADS=2 python bench/collections_memory.py [--counts 1 2 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from serving import _children, _rss_mb, _start  # noqa: E402

WORK = ROOT / "build" / "collections-bench"
SAMPLE = ROOT / "data" / "commit-messages"


def _pss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tree_memory(pid: int) -> tuple[float, float]:
    """(RSS, PSS) in MB of a server and its encoding processes."""
    pids = [pid, *_children(pid)]
    return sum(_rss_mb(p) for p in pids), sum(_pss_mb(p) for p in pids)


def prepare(count: int) -> Path:
    """`count` models and indexes under WORK (made once; kept for later runs)."""
    from siamese_search.core.model_artifact import load_model
    from siamese_search.core.tables import Columns
    from siamese_search.indexer.build import BuildOptions, build_index
    from siamese_search.trainer.cli import main as train

    root = WORK / "collections"
    for i in range(count):
        model = WORK / "models" / f"m{i}"
        if not (model / "manifest.json").is_file():
            print(f"training model {i} (fine-tuned, 3 steps, seed {i})", flush=True)
            flags = ["--fine-tune", "--steps", "3", "--ensemble", "1", "--seed", str(i)]
            data = ["--data", str(SAMPLE / "train.csv"), "--label-column", "class"]
            assert train([*data, "--out", str(model), *flags, "--quiet"]) == 0
        index = root / f"c{i}"
        if not (index / "CURRENT").is_file():
            build_index(
                index,
                load_model(model),
                SAMPLE / "test.csv",
                Columns(text="text", label="class"),
                BuildOptions(show_progress=False),
            )
    return root


def _serve(arguments: list[str]) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "siamese_search.server.cli", "--port", "0"]
    command += ["--reload-interval", "0", "--no-writes", *arguments]
    process, target, _ = _start(command, env={"SIAMESE_THREADS": "2"})
    return process, target


def _touch(target: str, collections: list[str]) -> None:
    """A Search and a Predict on every collection, twice (both encoding processes)."""
    from siamese_search.client import SearchClient

    for name in collections:
        with SearchClient(target, collection=name) as client:
            for _ in range(4):
                client.search("Fix crash when saving a file", k=5)
                client.predict("Improve performance of the parser", k=5)


def measure(root: Path, count: int) -> dict:
    names = [f"c{i}" for i in range(count)]
    shared_root = WORK / f"served-{count}"
    shared_root.mkdir(parents=True, exist_ok=True)
    for name in names:  # the --collections directory holds exactly these
        link = shared_root / name
        if not link.exists():
            link.symlink_to(root / name, target_is_directory=True)
    for extra in shared_root.iterdir():
        if extra.name not in names:
            extra.unlink()
    process, target = _serve(["--collections", str(shared_root), "--default-collection", "c0"])
    try:
        _touch(target, names)
        time.sleep(1)
        one = tree_memory(process.pid)
    finally:
        process.terminate()
        process.wait(30)
    servers = []
    try:
        for name in names:
            servers.append(_serve(["--index", str(root / name)]))
        for _, target in servers:
            _touch(target, [""])
        time.sleep(1)
        many = [tree_memory(process.pid) for process, _ in servers]
    finally:
        for process, _ in servers:
            process.terminate()
        for process, _ in servers:
            process.wait(30)
    return {
        "collections": count,
        "one_server": {"rss_mb": one[0], "pss_mb": one[1]},
        "separate_servers": {
            "rss_mb": sum(m[0] for m in many),
            "pss_mb": sum(m[1] for m in many),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 5])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    root = prepare(max(args.counts))
    rows = []
    for count in args.counts:
        row = measure(root, count)
        rows.append(row)
        one, many = row["one_server"], row["separate_servers"]
        print(
            f"{count} collections: one server RSS {one['rss_mb']:7.0f} MB, PSS "
            f"{one['pss_mb']:7.0f} MB | {count} servers RSS {many['rss_mb']:7.0f} MB, PSS "
            f"{many['pss_mb']:7.0f} MB | one/many PSS {one['pss_mb'] / many['pss_mb']:.2f}",
            flush=True,
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
