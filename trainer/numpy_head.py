"""The trained head's forward pass in numpy: what the indexer and server run.

Same arithmetic as the Keras head at inference time (dropout off, batch norm with
its moving statistics folded into a scale and shift), checked against Keras in
tests/test_trainer.py. No TensorFlow import, ~0.1 ms for one vector.
"""

from __future__ import annotations

import numpy as np

#: a member's inference-time arrays, in forward order (names under "member<i>/")
HEAD_PARTS = (
    "dense1/kernel",
    "dense1/bias",
    "batchnorm/scale",
    "batchnorm/shift",
    "dense2/kernel",
    "dense2/bias",
    "dense3/kernel",
    "dense3/bias",
)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class NumpyHead:
    def __init__(self, weights: dict[str, np.ndarray]):
        members = sorted({name.split("/")[0] for name in weights})
        self._members = [tuple(weights[f"{m}/{part}"] for part in HEAD_PARTS) for m in members]
        self.input_dim = int(self._members[0][0].shape[0])
        self.output_dim = int(self._members[0][6].shape[1])

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        """(n, input_dim) float32 sentence vectors -> (n, output_dim) unit rows."""
        x = np.asarray(vectors, dtype=np.float32)
        total = np.zeros((x.shape[0], self.output_dim), dtype=np.float32)
        for w1, b1, scale, shift, w2, b2, w3, b3 in self._members:
            h = np.maximum(x @ w1 + b1, 0.0)
            h = h * scale + shift
            h = np.maximum(h @ w2 + b2, 0.0)
            total += _unit_rows(h @ w3 + b3)
        return _unit_rows(total)
