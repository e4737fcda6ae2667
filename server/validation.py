"""Request checks: each failure is a message for INVALID_ARGUMENT that says what to fix."""

from __future__ import annotations

import math
from collections.abc import Sequence

from siamese_search.server.config import Limits


class InvalidRequest(ValueError):
    pass


def check_text(text: str, limits: Limits, where: str = "text") -> str:
    if not text or not text.strip():
        raise InvalidRequest(f"{where} is empty; send the text to search for")
    if len(text) > limits.max_text_chars:
        raise InvalidRequest(
            f"{where} has {len(text)} characters; the limit is {limits.max_text_chars}. "
            "Shorten it or split it into several texts."
        )
    return text


def check_texts(texts: Sequence[str], limits: Limits) -> list[str]:
    if not texts:
        raise InvalidRequest("texts is empty; send at least one text")
    if len(texts) > limits.max_batch:
        raise InvalidRequest(
            f"{len(texts)} texts in one call; the limit is {limits.max_batch}. "
            "Split the batch into several calls."
        )
    return [check_text(t, limits, where=f"texts[{i}]") for i, t in enumerate(texts)]


def check_k(k: int, limits: Limits) -> int:
    if k < 1 or k > limits.max_k:
        raise InvalidRequest(f"k is {k}; it must be between 1 and {limits.max_k}")
    return k


def check_min_score(request) -> float:
    """`optional float min_score`: unset means no threshold."""
    if not request.HasField("min_score"):
        return -math.inf
    value = request.min_score
    if math.isnan(value) or not -1.0 <= value <= 1.0:
        raise InvalidRequest(
            f"min_score is {value}; it must be a cosine similarity in [-1, 1] "
            "(or unset for no threshold)"
        )
    return value


def check_labels(labels: Sequence[str]) -> list[str]:
    cleaned = list(dict.fromkeys(labels))
    if any(not label for label in cleaned):
        raise InvalidRequest("labels contains an empty string; list label names only")
    return cleaned
