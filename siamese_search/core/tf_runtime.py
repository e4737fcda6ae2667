"""TensorFlow process settings, applied before TensorFlow does any work.

Two jobs, both about the first moments of TensorFlow in a process:
- `import_tensorflow` keeps TensorFlow's C++ start-up lines (oneDNN, CUDA probing on a
  CPU-only machine, CPU features) off the terminal, where they would interleave with
  progress bars. TF 2.21 writes them before its log level is read, so they are
  captured at the file-descriptor level during the import, and shown only if the
  import fails (or with SIAMESE_DEBUG=1).
- `configure_tensorflow_threads` sizes TF's thread pools to the cores we have: on
  the 2-core machines this project runs on, that avoids oversubscription when
  encoding and training share the cores.
Nothing happens at import time of this module.
"""

from __future__ import annotations

import os
import sys
import tempfile
from types import ModuleType

from siamese_search.core.encoders.base import default_threads
from siamese_search.core.errors import UserError

TRAIN_EXTRA = "pip install 'siamese-search[train]'"


def require_tensorflow(what: str, modules: tuple[str, ...] = ("tensorflow",)) -> None:
    """UserError naming the extra to install when `what` needs TensorFlow (or TF-Hub)
    and this install has none: serving and indexing do not, and install without it."""
    import importlib.util

    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(
            f"{what} needs {', '.join(missing)}, which this install does not have: {TRAIN_EXTRA}"
        )


def import_tensorflow() -> ModuleType:
    """`import tensorflow`, quietly the first time; returns the module."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF's own logs after start-up
    if os.environ.get("SIAMESE_DEBUG"):
        import tensorflow

        return tensorflow
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf-8", errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return tensorflow


def configure_tensorflow_threads(threads: int | None = None) -> None:
    """Pin TF's thread pools to the cores we have (must run before TF does any work)."""
    tf = import_tensorflow()
    threads = threads or default_threads()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TF already initialised its pools; keep what it has
