"""TensorFlow process settings, applied before TensorFlow does any work.

TensorFlow sizes its thread pools to every core it sees; on the 2-core machines this
project runs on, pinning them (and BLAS, see `default_threads`) avoids
oversubscription when encoding and training share the cores.
"""

from __future__ import annotations

from trainer.encoders.base import default_threads


def configure_tensorflow_threads(threads: int | None = None) -> None:
    """Pin TF's thread pools to the cores we have (must run before TF does any work)."""
    import tensorflow as tf

    threads = threads or default_threads()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TF already initialised its pools; keep what it has
