"""FAISS backend: exact (flat), HNSW and IVF (plain, SQ8 or PQ compressed) inner-product indexes.

Parameters are sized from the data when not given (nlist ~ 4 sqrt(n), like txtai's
FAISS backend) and recorded, so a reader rebuilds the same search behaviour.
"""

from __future__ import annotations

import math
from pathlib import Path

import faiss
import numpy as np

from siamese_search.core.errors import UserError
from siamese_search.indexer.backends.base import RowMask, VectorIndex

KINDS = ("flat", "hnsw", "ivf", "ivf-sq8", "ivf-pq")
#: parameters read when searching, not when building: a later write may change them
#: for an index it keeps as it is
SEARCH_PARAMS = ("ef_search", "nprobe")
_METRIC = faiss.METRIC_INNER_PRODUCT
_MAX_TRAINING_POINTS_PER_LIST = 256


def choose_kind(expected_count: int) -> str:
    """`auto`: exact search while it is cheap, a graph index beyond, compression when huge."""
    if expected_count <= 50_000:
        return "flat"
    if expected_count <= 2_000_000:
        return "hnsw"
    return "ivf-sq8"


def default_params(kind: str, dim: int, expected_count: int) -> dict:
    if kind == "flat":
        return {}
    if kind == "hnsw":
        # efConstruction 200 (80 before): at 1M rows recall@10 0.922 against 0.897 at
        # efSearch 64, and filtered walks keep >= 0.95 (bench/filters.py; issue 36)
        return {"M": 32, "ef_construction": 200, "ef_search": 64}
    nlist = int(max(1, min(4 * math.sqrt(max(expected_count, 1)), expected_count // 39 or 1)))
    params = {"nlist": nlist, "nprobe": max(1, min(nlist, max(16, nlist // 8)))}
    if kind == "ivf-pq":
        params["pq_m"] = next(m for m in (32, 16, 8, 4, 2, 1) if dim % m == 0)
        params["pq_bits"] = 8
    return params


#: each kind's parameters (--index-param)
PARAMS = {
    "flat": (),
    "hnsw": ("M", "ef_construction", "ef_search"),
    "ivf": ("nlist", "nprobe"),
    "ivf-sq8": ("nlist", "nprobe"),
    "ivf-pq": ("nlist", "nprobe", "pq_m", "pq_bits"),
}
#: the values each parameter takes (least, most; None: no bound). FAISS aborts the
#: process on some values out of range (HNSW M 0; M 1 segfaults), fails with a C++
#: assertion on others (nlist 0, pq_bits over 24), and silently finds nothing on some
#: (nprobe 0, ef_search 0)
PARAM_RANGES = {
    "M": (2, 256),
    "ef_construction": (1, None),
    "ef_search": (1, None),
    "nlist": (1, None),
    "nprobe": (1, None),
    "pq_m": (1, None),
    "pq_bits": (1, 16),
}


def check_params(params: dict, kind: str | None = None, dim: int | None = None) -> None:
    """Refuse (UserError) a parameter no index type has, or a value out of its range;
    with the kind and the vectors' dimension, a pq_m that does not divide it. (A
    parameter of another kind is left alone: with --index-type auto the kind follows
    the index's size, so `nprobe` may be given in case it becomes IVF.)"""
    for name, value in params.items():
        if name not in PARAM_RANGES:
            raise UserError(
                f"--index-param {name}: no index type has it; the parameters are "
                + "; ".join(f"{k}: {', '.join(v)}" for k, v in PARAMS.items() if v)
            )
        least, most = PARAM_RANGES[name]
        if not isinstance(value, int) or value < least or (most is not None and value > most):
            bound = f"from {least} to {most}" if most is not None else f"at least {least}"
            raise UserError(f"--index-param {name}={value}: {name} is {bound}")
    if kind == "ivf-pq" and dim is not None and dim % params.get("pq_m", 1):
        divisors = [m for m in range(1, min(dim, 64) + 1) if dim % m == 0]
        raise UserError(
            f"--index-param pq_m={params['pq_m']}: the vectors' {dim} dimensions must split "
            f"evenly into pq_m sub-quantizers ({', '.join(map(str, divisors))}, ...)"
        )


#: a filtered HNSW walk's beam is this many times efSearch, whatever share of the rows
#: passes (the walk steps over rows it may not return, so it needs a wider beam to
#: keep as many that pass). Measured at 1M rows (bench/filters.py, efConstruction
#: 200, efSearch 64): 2.5 kept recall@10 >= 0.954 at 50% and 10% of the rows within
#: 1.93x the unfiltered p50; a beam in proportion to the share (up to 4x, 256) cost
#: 2.2-2.8x at 10%, and 2x (128) left 0.946 at 50%
HNSW_FILTERED_BEAM = 2.5
#: the least share of rows an HNSW walk is trusted to find with that beam (measured
#: down to 10%); below it a small enough subset is scored exactly (indexer.segments),
#: and a larger one walked with a beam widened in proportion, up to
#: HNSW_FILTERED_BEAM_MAX times efSearch: at 1M rows, 2% of them (20,036) walked
#: with 2.5x kept recall@10 0.85-0.87, with 10x 0.978 at 4.6-5.1x the unfiltered p50;
#: 5% with 5x 0.97-0.98 at 2.5-3.0x (bench/filters.py --between [--beam-max 2.5])
HNSW_WALK_SHARE = 0.1
HNSW_FILTERED_BEAM_MAX = 10.0
#: at most this many times the lists (nprobe) for a filtered IVF search, in proportion
#: to the share of rows that pass
IVF_FILTERED_WIDENING = 8.0


class FaissIndex(VectorIndex):
    def __init__(self, kind: str, index: faiss.Index, params: dict):
        self.kind = kind
        self._index = index
        self._params = dict(params)
        self._apply_search_params()

    # ---- construction -------------------------------------------------------
    @classmethod
    def create(cls, kind: str, dim: int, params: dict) -> FaissIndex:
        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, params["M"], _METRIC)
            index.hnsw.efConstruction = params["ef_construction"]
        else:
            quantizer = faiss.IndexFlatIP(dim)
            if kind == "ivf":
                index = faiss.IndexIVFFlat(quantizer, dim, params["nlist"], _METRIC)
            elif kind == "ivf-sq8":
                index = faiss.IndexIVFScalarQuantizer(
                    quantizer, dim, params["nlist"], faiss.ScalarQuantizer.QT_8bit, _METRIC
                )
            elif kind == "ivf-pq":
                index = faiss.IndexIVFPQ(
                    quantizer, dim, params["nlist"], params["pq_m"], params["pq_bits"], _METRIC
                )
            else:
                raise ValueError(f"unknown index kind {kind!r}")
            index.own_fields = True
            quantizer.this.disown()
        return cls(kind, index, params)

    @classmethod
    def load(cls, path: Path, kind: str, params: dict) -> FaissIndex:
        # memory-map large read-only indexes instead of reading them into RAM
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if kind != "hnsw" else 0
        try:
            index = faiss.read_index(str(path), flags)
        except RuntimeError:
            index = faiss.read_index(str(path))
        return cls(kind, index, params)

    def _apply_search_params(self) -> None:
        if self.kind == "hnsw":
            faiss.downcast_index(self._index).hnsw.efSearch = self._params["ef_search"]
        elif self.kind.startswith("ivf"):
            faiss.extract_index_ivf(self._index).nprobe = self._params["nprobe"]

    # ---- VectorIndex --------------------------------------------------------
    @property
    def count(self) -> int:
        return int(self._index.ntotal)

    @property
    def params(self) -> dict:
        return dict(self._params)

    @property
    def needs_training(self) -> bool:
        return not self._index.is_trained

    @property
    def min_training_vectors(self) -> int:
        """Vectors an untrained index needs to learn from (0 for flat and HNSW)."""
        if not self.needs_training:
            return 0
        needed = int(self._params.get("nlist", 1))
        if self.kind == "ivf-pq":  # each sub-quantizer learns 2^pq_bits centroids
            needed = max(needed, 2 ** int(self._params.get("pq_bits", 8)))
        return needed

    @property
    def training_needs(self) -> str:
        """What the training learns, for a message."""
        if self.kind == "ivf-pq":
            return (
                f"{self._params.get('nlist')} coarse lists and "
                f"{2 ** int(self._params.get('pq_bits', 8))}-centroid product quantizers"
            )
        return f"{self._params.get('nlist')} coarse lists"

    def train(self, sample: np.ndarray) -> None:
        """IVF kinds learn their coarse centroids (and codebooks) from a sample."""
        if self.needs_training:
            limit = self._params.get("nlist", 1) * _MAX_TRAINING_POINTS_PER_LIST
            self._index.train(np.ascontiguousarray(sample[:limit], dtype=np.float32))

    def add(self, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.needs_training:
            self.train(vectors)
        self._index.add(vectors)

    def walk_covers(self, share: float) -> bool:
        if self.kind == "hnsw":
            return share >= HNSW_WALK_SHARE
        return self.kind == "flat" or share * IVF_FILTERED_WIDENING >= 1.0

    def search(self, queries, k, allowed=None):
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = max(1, min(k, self.count)) if self.count else 1
        if allowed is None:
            return self._index.search(queries, k)
        rows = allowed if isinstance(allowed, RowMask) else RowMask.of(allowed)
        selector = faiss.IDSelectorBitmap(len(rows.allowed), faiss.swig_ptr(rows.bitmap))
        # a walk that may return only a share of the rows must visit more of them to
        # find k that pass: a wider beam (HNSW_FILTERED_BEAM), more lists (IVF)
        if self.kind == "hnsw":
            scarce = max(1.0, HNSW_WALK_SHARE / max(rows.share, 1e-9))
            beam = min(HNSW_FILTERED_BEAM * scarce, HNSW_FILTERED_BEAM_MAX)
            search_params = faiss.SearchParametersHNSW(
                sel=selector, efSearch=int(self._params["ef_search"] * beam)
            )
        elif self.kind.startswith("ivf"):
            widen = min(1.0 / max(rows.share, 1e-9), IVF_FILTERED_WIDENING)
            nprobe = min(int(self._params["nprobe"] * widen), int(self._params.get("nlist", 1)))
            search_params = faiss.SearchParametersIVF(sel=selector, nprobe=max(nprobe, 1))
        else:
            search_params = faiss.SearchParameters(sel=selector)
        scores, positions = self._index.search(queries, k, params=search_params)
        del rows  # the selector points into its bitmap; keep it alive until here
        return scores, positions

    def save(self, path: Path) -> None:
        faiss.write_index(self._index, str(path))

    def close(self) -> None:
        """Drop the FAISS index (and its memory map) now, not at garbage collection."""
        self._index = None


class HalfPrecisionCopy:
    """Vectors kept at half precision in a flat FAISS index (QT_fp16), to find a few
    candidates among them at half the memory traffic of float32: scoring a filtered
    search's gathered subset (`indexer.segments.Subset`) is bound by reading it, and a
    10,000-row subset of 640-d vectors is 12.8 MB a query instead of 25.6. Scores
    differ from float32 by ~1e-3 at most, so the caller re-scores the candidates
    from the float32 vectors."""

    def __init__(self, vectors: np.ndarray):
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._index = faiss.IndexScalarQuantizer(
            vectors.shape[1], faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
        )
        self._index.train(vectors)
        self._index.add(vectors)
        self.count = len(vectors)
        self.nbytes = int(self._index.sa_code_size()) * self.count

    def candidates(self, queries: np.ndarray, n: int) -> np.ndarray:
        """The (queries, n) rows scoring best at half precision, best first; -1 pads."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        _, rows = self._index.search(queries, max(1, min(n, self.count)))
        return rows
