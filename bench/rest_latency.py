"""REST call latency over one kept-alive connection against a new connection per call.

Starts `siamese-serve` (the product, `--no-writes`) on an index with its REST gateway,
then from this process, one call at a time, `--calls` calls of each kind:
  - `GET /v1/info` (no model work: what the gateway and gRPC hop cost),
  - `POST /v1/search` with k 10 (a commit-message-like text, cycled from a few),
each over one kept-alive HTTP/1.1 connection (what `requests.Session`, browsers and
Node's fetch do) and over a new connection per call. Reported: p50 / p99 in ms.
Before the gateway sent an answer's head and body in one write with TCP_NODELAY, the
kept-alive calls waited ~40 ms each for the client's delayed acknowledgement.

Usage: python bench/rest_latency.py [--index artifacts/index] [--calls 300]
       [--out bench/results/rest-latency.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from retrieval import free_port

ROOT = Path(__file__).resolve().parents[1]
TEXTS = (
    "Fix crash when the session expires",
    "Speed up parsing of large files",
    "Add a button to export the report",
    "Update the README with install steps",
)


def start_server(index: Path, http_port: int) -> subprocess.Popen:
    """The product server, serving once its REST port answers GET /v1/info."""
    command = [sys.executable, "-m", "siamese_search.server.cli", "--index", str(index)]
    command += ["--port", "0", "--http-port", str(http_port), "--no-writes"]
    command += ["--reload-interval", "0"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "SIAMESE_THREADS": "1"},
    )
    until = time.monotonic() + 120
    while time.monotonic() < until:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
            connection.request("GET", "/v1/info")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"siamese-serve did not answer on port {http_port} within 120 s")


def timed_calls(port: int, calls: int, kept_alive: bool, search: bool) -> list[float]:
    """Seconds per call, one call at a time."""
    times = []
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for call in range(calls):
        if not kept_alive:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        started = time.perf_counter()
        if search:
            body = json.dumps({"text": TEXTS[call % len(TEXTS)], "k": 10})
            headers = {"Content-Type": "application/json"}
            connection.request("POST", "/v1/search", body=body, headers=headers)
        else:
            connection.request("GET", "/v1/info")
        response = connection.getresponse()
        response.read()
        times.append(time.perf_counter() - started)
        if response.status != 200:
            raise SystemExit(f"the server answered {response.status}")
        if not kept_alive:
            connection.close()
    connection.close()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=ROOT / "artifacts" / "index")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    port = free_port()
    server = start_server(args.index, port)
    rows = []
    try:
        for search in (False, True):
            timed_calls(port, 20, True, search)  # warm-up: first searches load the encoder
            for kept_alive in (True, False):
                times = np.array(timed_calls(port, args.calls, kept_alive, search)) * 1000
                row = {
                    "call": "POST /v1/search k 10" if search else "GET /v1/info",
                    "connection": "kept alive" if kept_alive else "new per call",
                    "p50_ms": round(float(np.percentile(times, 50)), 2),
                    "p99_ms": round(float(np.percentile(times, 99)), 2),
                }
                rows.append(row)
                print(
                    f"{row['call']:<22} {row['connection']:<13} p50 {row['p50_ms']:6.2f} ms, "
                    f"p99 {row['p99_ms']:6.2f} ms"
                )
    finally:
        server.terminate()
        server.wait(30)
    if args.out:
        args.out.write_text(json.dumps({"calls": args.calls, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
