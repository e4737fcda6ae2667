"""The FAISS index kinds behind `VectorIndex`: make or load one by kind ("auto" picks by
size). Milvus (`milvus_backend`) is the other implementation of the interface, chosen
by `--backend milvus` where a version is written, not here."""

from __future__ import annotations

from pathlib import Path

from siamese_search.indexer.backends.base import VectorIndex
from siamese_search.indexer.backends.faiss_backend import (
    KINDS,
    SEARCH_PARAMS,
    FaissIndex,
    HalfPrecisionCopy,
    check_params,
    choose_kind,
    default_params,
)

INDEX_KINDS = ("auto", *KINDS)

__all__ = [
    "VectorIndex",
    "HalfPrecisionCopy",
    "check_params",
    "INDEX_KINDS",
    "SEARCH_PARAMS",
    "create_index",
    "load_index",
    "resolve_kind",
]


def resolve_kind(kind: str, expected_count: int) -> str:
    return choose_kind(expected_count) if kind == "auto" else kind


def create_index(
    kind: str, dim: int, expected_count: int, params: dict | None = None
) -> FaissIndex:
    """A new empty index; `params` override the size-derived defaults."""
    merged = {**default_params(kind, dim, expected_count), **(params or {})}
    check_params(merged, kind, dim)
    return FaissIndex.create(kind, dim, merged)


def load_index(path: Path, kind: str, params: dict) -> VectorIndex:
    return FaissIndex.load(path, kind, params)
