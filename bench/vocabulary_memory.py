"""Server memory under calls of the most varied vocabulary the limits allow (issue 34).

Each call is an Embed of `max_batch`-limited texts made of distinct single-token words
of the tokenizer's vocabulary, each text `max_text_tokens` long: ~8,100 distinct
token ids a call, inside every limit. Such calls fill the encoders' token-row tables
(usem3_token_rows) as fast as anything can. A fresh `siamese-serve` with its
encoding processes (the defaults) is warmed with one short call; then: one call, 4 at
once, and 4 rounds of 4 at once (16 calls). Reported: the RSS of the server and its
encoding processes together after each phase, the sampled peak, and the stated bound
above the idle size (`ServerConfig.memory_bound`, docs/serving.md).

Usage: python bench/vocabulary_memory.py [--index artifacts/index] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from serving import _children, _rss_mb, _server_command, _start  # noqa: E402


def varied_calls(count: int, seed: int = 0) -> list[list[str]]:
    """`count` calls, each of texts of distinct single-token words, at the limits."""
    import numpy as np

    from siamese_search.core.encoders.usem3_encoder import make_tokenizer
    from siamese_search.server.config import Limits

    limits = Limits()
    tokenizer = make_tokenizer()
    words = []
    for piece_id in range(tokenizer.get_piece_size()):
        piece = tokenizer.id_to_piece(piece_id)
        word = piece[1:]
        if (
            piece.startswith("\N{LOWER ONE EIGHTH BLOCK}")
            and word.isascii()
            and word.isalpha()
            and word.islower()
            and len(word) > 3
            and len(tokenizer.encode(word)) == 1
        ):
            words.append(word)
    per_text = limits.max_text_tokens - 2  # BOS and EOS
    texts_per_call = min(limits.max_batch, limits.max_call_tokens // limits.max_text_tokens)
    rng = np.random.default_rng(seed)
    calls = []
    for _ in range(count):
        picked = rng.permutation(len(words))[: per_text * texts_per_call]
        texts = []
        for i in range(texts_per_call):
            chosen = [words[j] for j in picked[i * per_text : (i + 1) * per_text]]
            while len(tokenizer.encode(" ".join(chosen))) > per_text:
                chosen.pop()
            texts.append(" ".join(chosen))
        calls.append(texts)
    return calls


def total_rss_mb(pid: int) -> float:
    return _rss_mb(pid) + sum(_rss_mb(child) for child in _children(pid))


def measure(index_dir: Path) -> dict:
    import grpc

    from siamese_search.server.config import ServerConfig
    from siamese_search.server.generated import search_pb2 as pb
    from siamese_search.server.generated import search_pb2_grpc as pb_grpc

    calls = varied_calls(21)
    process, target, _ = _start(_server_command(index_dir, []))
    peak: list[float] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            peak.append(total_rss_mb(process.pid))

    try:
        separate = [("grpc.use_local_subchannel_pool", 1)]
        channels = [grpc.insecure_channel(target, options=separate) for _ in range(4)]
        stubs = [pb_grpc.SearchServiceStub(channel) for channel in channels]
        for stub in stubs:  # warm: every encoding process has served one short call
            stub.Embed(pb.EmbedRequest(texts=["warm-up query"]), timeout=60)
        idle = total_rss_mb(process.pid)
        watcher = threading.Thread(target=watch)
        watcher.start()
        phases = {}

        def at_once(batch: list[list[str]]) -> None:
            futures = [
                stubs[i % 4].Embed.future(pb.EmbedRequest(texts=texts), timeout=300)
                for i, texts in enumerate(batch)
            ]
            for future in futures:
                future.result()

        at_once(calls[:1])
        phases["after 1 call"] = total_rss_mb(process.pid)
        at_once(calls[1:5])
        phases["after 4 at once"] = total_rss_mb(process.pid)
        for round_ in range(4):
            at_once(calls[5 + 4 * round_ : 9 + 4 * round_])
        phases["after 4 rounds of 4"] = total_rss_mb(process.pid)
        done.set()
        watcher.join()
        for channel in channels:
            channel.close()
    finally:
        done.set()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    config = ServerConfig(index_dir=index_dir)
    bound = config.memory_bound(encoders=2) / 2**20
    from siamese_search.core.encoders.usem3_encoder import make_tokenizer

    tokenizer = make_tokenizer()
    tokens = sum(len(tokenizer.encode(text)) + 2 for text in calls[0])
    return {
        "call": {"texts": len(calls[0]), "tokens": tokens, "characters": sum(map(len, calls[0]))},
        "idle_mb": idle,
        "growth_mb": {name: rss - idle for name, rss in phases.items()},
        "peak_growth_mb": max(peak, default=idle) - idle,
        "stated_bound_mb": bound,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=ROOT / "artifacts" / "index")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = measure(args.index)
    call = result["call"]
    print(
        f"calls of {call['texts']} texts, {call['tokens']} tokens, {call['characters']} "
        f"characters; server + encoding processes idle {result['idle_mb']:.0f} MB"
    )
    for name, growth in result["growth_mb"].items():
        print(f"  {name:<22} +{growth:.0f} MB")
    print(
        f"  peak                   +{result['peak_growth_mb']:.0f} MB "
        f"(stated bound +{result['stated_bound_mb']:.0f} MB)"
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
