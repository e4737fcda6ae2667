"""The trained head's inference forward pass: one definition for numpy and TensorFlow.

Two head kinds (`trainer.head`):
- `residual` (the default): x -> unit(x + x @ kernel + bias). It starts as the
  identity of the encoder's space (kernel and bias start at zero) and learns a
  correction, so what the encoder knows is kept. Weights: `residual/kernel`, `residual/bias`.
- `seed`: the design card's ensemble of small MLP members, `member<i>/<part>`.

`forward` is written once over array operations that numpy arrays and TensorFlow
tensors share (`@`, `*`, `+`), with the two non-linear steps passed in. `NumpyHead`
runs it in numpy: what the indexer and server use (no TensorFlow import, ~0.1 ms for
one vector). `siamese-export` builds its SavedModel graph from the same `forward`
with TensorFlow ops. Dropout is off and batch norm is folded into a scale and shift
(`trainer.head.export_weights`); tests/test_trainer.py holds it equal to the Keras head.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

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


RESIDUAL_PARTS = ("residual/kernel", "residual/bias")


def member_arrays(weights: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Group flat `member<i>/<part>` weights into one tuple per member, in HEAD_PARTS order."""
    members = sorted({name.split("/")[0] for name in weights})
    return [tuple(weights[f"{m}/{part}"] for part in HEAD_PARTS) for m in members]


def forward(
    x: Any,
    weights: dict[str, Any],
    relu: Callable[[Any], Any],
    unit_rows: Callable[[Any], Any],
) -> Any:
    """Vectors (n, input_dim) -> the head's unit rows (n, output_dim), either kind."""
    if RESIDUAL_PARTS[0] in weights:
        kernel, bias = (weights[part] for part in RESIDUAL_PARTS)
        return unit_rows(x + x @ kernel + bias)
    return forward_members(x, member_arrays(weights), relu, unit_rows)


def forward_members(
    x: Any,
    members: Sequence[Sequence[Any]],
    relu: Callable[[Any], Any],
    unit_rows: Callable[[Any], Any],
) -> Any:
    """The seed head: each member is Dense+relu -> batch norm (scale, shift) ->
    Dense+relu -> Dense -> unit rows; the output is the unit-normalised sum (= mean)
    of the members."""
    total = None
    for w1, b1, scale, shift, w2, b2, w3, b3 in members:
        h = relu(x @ w1 + b1) * scale + shift
        h = relu(h @ w2 + b2)
        out = unit_rows(h @ w3 + b3)
        total = out if total is None else total + out
    return unit_rows(total)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


class NumpyHead:
    def __init__(self, weights: dict[str, np.ndarray]):
        self._weights = {
            name: np.asarray(value, dtype=np.float32) for name, value in weights.items()
        }
        if RESIDUAL_PARTS[0] in weights:
            self.kind = "residual"
            kernel = self._weights[RESIDUAL_PARTS[0]]
            self.input_dim, self.output_dim = int(kernel.shape[0]), int(kernel.shape[1])
        else:
            self.kind = "seed"
            first = member_arrays(self._weights)[0]
            self.input_dim, self.output_dim = int(first[0].shape[0]), int(first[6].shape[1])

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        """(n, input_dim) float32 sentence vectors -> (n, output_dim) unit rows."""
        x = np.asarray(vectors, dtype=np.float32)
        return forward(x, self._weights, _relu, _unit_rows).astype(np.float32, copy=False)
