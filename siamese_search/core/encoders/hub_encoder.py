"""Any TF-Hub handle or local SavedModel directory, loaded with `tensorflow_hub.load`.

For users who have e.g. `universal-sentence-encoder-large/4` cached. We wrap the
object `hub.load` returns (a callable taking a batch of strings) rather than
`hub.KerasLayer`, which is a tf-keras layer and does not mix with Keras 3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from siamese_search.core.encoders.base import Encoder, sha256_files
from siamese_search.core.errors import UserError
from siamese_search.core.tf_runtime import configure_tensorflow_threads, require_tensorflow

_PROBE = ["siamese-search probe sentence"]


def _saved_model_files(directory: Path) -> list[Path]:
    files = [directory / name for name in ("saved_model.pb", "saved_model.pbtxt")]
    files = [f for f in files if f.exists()]
    variables = directory / "variables"
    if variables.is_dir():
        files += sorted(p for p in variables.rglob("*") if p.is_file())
    return files


class HubEncoder(Encoder):
    kind = "hub"

    def __init__(self, handle: str, preprocess_mode: str, base_dir: Path | None = None):
        super().__init__(preprocess_mode)
        require_tensorflow(f"the encoder {handle}", ("tensorflow", "tensorflow_hub"))
        configure_tensorflow_threads()  # imports TensorFlow quietly, sized to our cores
        import tensorflow as tf
        import tensorflow_hub as hub

        try:  # SavedModels with SentencePiece ops (siamese-export, many TF-Hub modules)
            import tensorflow_text  # noqa: F401
        except ImportError:
            pass
        self.handle = handle
        location = Path(handle)
        if base_dir is not None and not location.is_absolute() and (base_dir / location).exists():
            location = base_dir / location
        directory = location if location.is_dir() else None
        try:
            self._model = hub.load(str(location) if directory else handle)
        except Exception as error:
            raise UserError(
                f"could not load encoder {handle!r} with tensorflow_hub.load ({error}). "
                "Give a local SavedModel directory or a TF-Hub handle that is in the "
                "TFHUB_CACHE_DIR cache (this machine may have no internet)."
            ) from None
        self._tf = tf
        probe = self._call(_PROBE)
        if probe.ndim != 2 or probe.shape[0] != 1:
            raise UserError(
                f"encoder {handle!r} returned shape {probe.shape} for one text; "
                "expected (1, dim): a string batch in, one vector per string out"
            )
        self._dim = int(probe.shape[1])
        self._directory: Path = directory or Path(hub.resolve(handle))

    def _call(self, texts: list[str]) -> np.ndarray:
        output = self._model(self._tf.constant(texts))
        if isinstance(output, dict):
            output = output.get("outputs", output.get("default", next(iter(output.values()))))
        return np.asarray(output, dtype=np.float32)

    @property
    def dim(self) -> int:
        return self._dim

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        return self._call(texts)

    def spec(self) -> dict:
        return {"kind": "hub", "handle": self.handle, "preprocess": self.preprocess_mode}

    def fingerprint(self) -> dict:
        return {
            "name": self.handle,
            "version": "saved-model",
            "dim": self._dim,
            "weights_sha256": sha256_files(_saved_model_files(self._directory)),
            "preprocess": self.preprocess_mode,
        }
