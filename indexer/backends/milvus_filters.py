"""A checked filter (indexer.metadata) as a Milvus boolean expression over the data
collection's fields, giving the answers the FAISS backend's SQL gives.

    {"key": "repo", "match": {"any": ["web", "docs"]}}
        -> (metadata["repo"] in ["web", "docs"] or json_contains_any(metadata["repo"], [...]))
    {"key": "year", "range": {"gte": 2020}}   -> (metadata["year"] >= 2020)
    {"key": "label", "match": {"value": "2"}} -> label_key in [<hash of "2">]

Why it agrees with SQLite's (measured on Milvus 2.3.5 and held by
tests/test_backend_conformance.py): Milvus compares JSON values type-strictly (a
boolean never equals 1, a string "2020" never equals 2020) and numerically across
integers and floats, as the SQL does; `in` and `==` see a scalar field and
`json_contains(_any)` a list's items; a missing field fails every test, so `not`
passes it. What Milvus cannot do, a range over a list's items, the filter checker
refuses for both backends. Mixed-type `in` lists fail inside Milvus, so values are
grouped by type. Keys and strings are written as JSON string literals, which Milvus's
parser reads with the same escapes: no user text is spliced in unquoted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence

from siamese_search.indexer.metadata import Clauses, Match, Range

_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


#: Milvus has no boolean literals in a filter: an always-true and always-false test
TRUE = "not (id in [])"
FALSE = "id in []"


def expression(clauses: Clauses, labels: Callable[[Sequence[str]], str]) -> str:
    """The Milvus expression for a filter ("" when it holds for every row). `labels`
    gives the expression matching rows of these labels (how a version stores them)."""
    parts = []
    for joined, conditions in (
        ("and", clauses.must),
        ("or", clauses.should),
        ("not", clauses.must_not),
    ):
        compiled = [_condition(c, labels) or TRUE for c in conditions]
        if not compiled:
            continue
        if joined == "not":
            parts.append("not (" + " or ".join(compiled) + ")")
        else:
            parts.append("(" + f" {joined} ".join(compiled) + ")")
    return "(" + " and ".join(parts) + ")" if parts else ""


def _condition(condition, labels) -> str:
    if isinstance(condition, Clauses):
        return expression(condition, labels)
    if isinstance(condition, Match):
        return _match(condition, labels)
    return _range(condition)


def _match(match: Match, labels) -> str:
    if match.key == "label":
        return labels(match.values)
    if match.key == "id":
        return f"id in [{', '.join(_literal(v) for v in match.values)}]"
    field = _field(match.key)
    tests = []
    for group in _by_type(match.values):
        listed = "[" + ", ".join(_literal(v) for v in group) + "]"
        tests.append(f"{field} in {listed}")
        tests.append(f"json_contains_any({field}, {listed})")
    return "(" + " or ".join(tests) + ")"


def _range(range_: Range) -> str:
    field = _field(range_.key)
    return "(" + " and ".join(f"{field} {_OPS[op]} {_literal(b)}" for op, b in range_.bounds) + ")"


def _by_type(values: Sequence) -> list[list]:
    """Values grouped by type (Milvus refuses a mixed `in`, integers and floats too;
    either matches a stored number of the other type of equal value)."""
    groups: dict[type, list] = {}
    for value in values:
        groups.setdefault(type(value), []).append(value)
    return list(groups.values())


def _field(key: str) -> str:
    return f"metadata[{_literal(key)}]"


def _literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("filters hold finite numbers only")  # checked before
        return repr(value)
    return json.dumps(value, ensure_ascii=False)
