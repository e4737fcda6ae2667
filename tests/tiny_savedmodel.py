"""A tiny string-in, vectors-out SavedModel, built by the tests to exercise the TF-Hub path."""

from __future__ import annotations

from pathlib import Path


def build_tiny_savedmodel(path: Path, dim: int = 16, seed: int = 1) -> Path:
    """Hashed bag-of-words embedding: same call signature as a TF-Hub USE module."""
    import tensorflow as tf

    class TinyEncoder(tf.Module):
        def __init__(self):
            super().__init__()
            self.table = tf.Variable(tf.random.stateless_normal((256, dim), seed=(seed, 7)))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def __call__(self, texts):
            words = tf.strings.split(tf.strings.lower(texts))
            ids = tf.strings.to_hash_bucket_fast(words, 256)
            return tf.reduce_mean(tf.gather(self.table, ids), axis=1)

    module = TinyEncoder()
    tf.saved_model.save(module, str(path))
    return path
