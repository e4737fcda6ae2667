"""Server memory under bursts of maximum-size calls, against the stated bound.

For each burst (N calls over C connections, sent at once by a helper process), a fresh
`siamese-serve` on the given index is warmed with one maximum-size call, then the burst
arrives; reported: RSS before, the peak (sampled, and the kernel's VmHWM),
the growth beside `ServerConfig.request_memory_bound` (the README's bound above the idle
size), and the statuses the calls got. Calls beyond admission are refused at once
(RESOURCE_EXHAUSTED): what they cost is what arrived before they were refused.

Usage: python bench/burst_memory.py [--index artifacts/index]
       [--bursts 500x1 2000x1 1000x8 4000x128] [--out bench/results/burst_memory.json]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from serving import _burst, _helper, _server_command, _start  # noqa: E402


def measure(index_dir: Path, requests: int, connections: int) -> dict:
    """One fresh server, warmed with one maximum-size call, then the burst."""
    process, target, _ = _start(_server_command(index_dir, []))
    try:
        _helper("--burst", "1", "--target", target)  # warm: the idle size includes one call
        result = _burst(process, target, requests, connections)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    return {**result, "growth_mb": result["rss_peak_mb"] - result["rss_before_mb"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=ROOT / "artifacts" / "index")
    parser.add_argument("--bursts", nargs="+", default=["500x1", "2000x1", "1000x8", "4000x128"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from siamese_search.server.config import ServerConfig

    bound = ServerConfig(index_dir=args.index).request_memory_bound / 2**20
    rows = []
    for burst in args.bursts:
        requests, connections = (int(part) for part in burst.split("x"))
        row = measure(args.index, requests, connections)
        row["bound_mb"] = bound
        rows.append(row)
        print(
            f"{requests:>5} calls over {connections:>3} connections: RSS {row['rss_before_mb']:.0f}"
            f" -> peak {row['rss_peak_mb']:.0f} MB (+{row['growth_mb']:.0f}, bound +{bound:.0f})"
            f"; {row['codes']}",
            flush=True,
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
