"""Metadata on examples, and filters over it (issue 36): what a row carries besides id,
label and text, and how a search is limited to the rows that pass a filter.

An example's metadata is a flat JSON object: any non-empty field names but the
record's own (`id`, `label`, `text`: an export writes them as columns beside the
fields); values strings, integers, floats, booleans, or lists of these (no nested
objects: a filter names a key, not a path). Bounded (MAX_KEYS, MAX_BYTES, MAX_LIST) so
one row cannot hold a document. Stored as JSON text beside the record (indexer.records).

Filters take Qdrant's shape, which users of vector stores already write:

    {"must": [cond, ...], "should": [cond, ...], "must_not": [cond, ...]}
    cond: {"key": K, "match": {"value": V}}       K equals V (for a list: holds V)
          {"key": K, "match": {"any": [V, ...]}}  K equals one of them
          {"key": K, "range": {"gt"|"gte"|"lt"|"lte": number, ...}}
          a filter (nested)

`must`: every condition; `should`: at least one (when any are given); `must_not`:
none. The key `label` is the row's label and `id` its id, so the label filter is one
such condition. A filter compiles to one SQL condition over a segment's record store
(SQLite's JSON functions; json_each makes a list match when one of its items does);
the search then runs on the rows that pass (indexer.store). Unknown keys, a range on
a key that holds no numbers, values of the wrong type, a filter too deep or too large
are refused with what to fix (FilterError, a UserError: INVALID_ARGUMENT).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from siamese_search.core.errors import UserError

#: an example's metadata: fields, items of one list, characters of one string (bounds
#: a JSON Schema states too: the REST gateway's document says the same, server/openapi.py)
MAX_KEYS = 64
MAX_LIST = 64
MAX_STRING = 1024
#: characters of a field's name: every row holding it stores it, and the served REST
#: document lists every name the index holds (its filters' keys)
MAX_KEY_CHARS = 256
#: a filter's bounds: nesting (a filter, and filters of field tests inside it),
#: conditions in one must / should / must_not list, values in one `any`
MAX_FILTER_DEPTH = 2
MAX_CONDITIONS = 8
MAX_ANY = 1000
#: keys a filter reads from the record itself, not from its metadata
RECORD_KEYS = ("label", "id")
#: names a metadata field may not take: the record's own fields, which an export
#: writes as columns beside the metadata fields (one field named `text` made every
#: export, and so `siamese-train --from-index` and `retrain`, refuse the index)
RECORD_FIELDS = ("id", "label", "text")
#: the kind a field that holds a list has (beside its items' kinds: key_types)
LIST = "list"
_RANGE_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
#: the JSON types a value may have, by the type SQLite's json_each names
SCALAR = (str, int, float, bool)
#: a value's kind as a record store's field index names it
_INDEX_KIND = {"string": "text", "number": "number", "bool": "bool"}


class MetadataError(UserError):
    """Metadata that cannot be stored (wrong shape, too large)."""


class FilterError(UserError):
    """A filter that cannot be applied (unknown key, wrong type, too large)."""


def check_metadata(metadata: object, where: str = "metadata") -> dict:
    """`metadata` checked and normalised (integral floats stay floats; None: {})."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise MetadataError(f"{where} must be a JSON object of fields, not {_kind(metadata)}")
    check_sizes(
        where, len(metadata), ((k, len(v)) for k, v in metadata.items() if isinstance(v, list))
    )
    out = {}
    for key, value in metadata.items():
        check_key(key, where)
        if key in RECORD_FIELDS:
            raise MetadataError(
                f"{where}.{key}: '{key}' is the example's own field; name the field otherwise"
            )
        if isinstance(value, list):
            for item in value:
                _check_scalar(item, f"{where}.{key}[]")
        else:
            _check_scalar(value, f"{where}.{key}")
        out[key] = value
    return out


def check_sizes(where: str, fields: int, lists: Iterable[tuple[str, int]]) -> None:
    """Metadata of `fields` fields, whose list fields hold so many items ((name, items),
    read only when the fields are few enough), within the limits (also asked of a gRPC
    Struct before it is converted: server.validation.metadata_of)."""
    if fields > MAX_KEYS:
        raise MetadataError(f"{where} has {fields} fields; the limit is {MAX_KEYS}")
    for key, items in lists:
        if items > MAX_LIST:
            raise MetadataError(
                f"{where}.{key} is a list of {items} items; the limit is {MAX_LIST}"
            )


def check_key(key: object, where: str) -> str:
    """A field name: any non-empty string of at most MAX_KEY_CHARS characters (filters
    match it as a bound value)."""
    if not isinstance(key, str) or not key:
        raise MetadataError(f"{where}: a field name must be a non-empty string")
    if len(key) > MAX_KEY_CHARS:
        raise MetadataError(
            f"{where}: a field name of {len(key)} characters; the limit is {MAX_KEY_CHARS}"
        )
    return key


def _check_scalar(value: object, where: str) -> None:
    if not isinstance(value, SCALAR):
        raise MetadataError(
            f"{where} is {_kind(value)}; values are strings, numbers, booleans or lists of these"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise MetadataError(f"{where} is {value}; numbers must be finite")
    if isinstance(value, str) and len(value) > MAX_STRING:
        raise MetadataError(
            f"{where} has {len(value)} characters; a field's string is at most {MAX_STRING}"
        )


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return "null" if value is None else type(value).__name__


def encode(metadata: dict | None) -> str | None:
    """The stored form: compact JSON, keys sorted; None for no fields."""
    if not metadata:
        return None
    return json.dumps(metadata, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def decode(stored: str | None) -> dict:
    return json.loads(stored) if stored else {}


def indexed_values(stored: str, keys: frozenset[str]) -> list[tuple[str, str, object, int]]:
    """(key, kind, value, item) of each value of the `keys` fields of a row's stored
    metadata, as a record store's field index holds them (indexer.records): kind
    "text", "number" or "bool" (stored 1 / 0); item 1 for a list's item."""
    out = []
    for key, value in decode(stored).items():
        if key not in keys:
            continue
        items = value if isinstance(value, list) else [value]
        for item in items:
            out.append((key, _INDEX_KIND[_value_kind(item)], item, int(isinstance(value, list))))
    return out


def key_types(metadata: dict) -> dict[str, set[str]]:
    """key -> the kinds of values it holds here ("string", "number", "bool"; and
    "list" for a list, beside its items' kinds)."""
    out: dict[str, set[str]] = {}
    for key, value in metadata.items():
        if isinstance(value, list):
            out.setdefault(key, set()).add(LIST)
        for item in value if isinstance(value, list) else [value]:
            out.setdefault(key, set()).add(_value_kind(item))
    return out


def _value_kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "string"


@dataclass(frozen=True)
class Match:
    """The field `key` equals one of `values` (a list field: holds one of them)."""

    key: str
    values: tuple


@dataclass(frozen=True)
class Range:
    """The field `key` is a number within every bound: ((op, number), ...)."""

    key: str
    bounds: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Clauses:
    """A checked filter: every `must`, one `should` (when any), no `must_not`."""

    must: tuple
    should: tuple
    must_not: tuple


@dataclass(frozen=True)
class Filter:
    """A checked filter (`parse_filter`): its conditions, and their SQL over a record
    store. A backend that filters elsewhere compiles `clauses` its own way (Milvus:
    backends/milvus_filters.py)."""

    key: str  # the filter as canonical JSON: what caches of its row masks are keyed by
    sql: str  # a condition on the `records` table of a store that indexes no field
    params: tuple
    clauses: Clauses
    _compiled: dict = field(default_factory=dict, compare=False, repr=False)

    def sql_for(self, indexed: frozenset[str]) -> tuple[str, tuple]:
        """The condition for a record store indexing these fields (its tests of them
        read the field index: records.RecordWriter)."""
        used = indexed & self._keys()
        if not used:
            return self.sql, self.params
        found = self._compiled.get(used)
        if found is None:
            sql, params = _clauses_sql(self.clauses, used)
            found = self._compiled[used] = (sql, tuple(params))
        return found

    def _keys(self) -> frozenset[str]:
        return frozenset(_keys_of(self.clauses))

    def fields(self) -> frozenset[str]:
        """The metadata fields the filter tests (label and id are the record's own)."""
        return self._keys() - set(RECORD_KEYS)

    def reads_only(self, indexed: frozenset[str]) -> bool:
        """Whether every field the filter tests is indexed (or is label / id): then
        its rows are found condition by condition from indexes (mask_of), with no
        scan of the rows' JSON."""
        return self.fields() <= indexed


def leaf_query(condition: Match | Range, table: str = "field_values") -> tuple[str, list]:
    """The positions passing one field test, from an index: the record's own
    columns for label and id, else the field index in `table` (the store's own,
    records.RecordWriter, or one built on first use, indexer.field_index)."""
    if condition.key in RECORD_KEYS:
        assert isinstance(condition, Match), "ranges on label / id are refused"
        marks = ",".join("?" * len(condition.values))
        return (
            f"SELECT position FROM records WHERE {condition.key} IN ({marks})",
            list(condition.values),
        )
    return _indexed_positions(condition, table)


def mask_of(clauses: Clauses, rows: int, positions: Callable[[Match | Range], object]):
    """The rows (a boolean mask) passing a filter, each field test's rows found by
    `positions` and combined as must / should / must_not say."""
    import numpy as np

    def passing(condition) -> np.ndarray:
        if isinstance(condition, Clauses):
            return mask_of(condition, rows, positions)
        mask = np.zeros(rows, dtype=bool)
        mask[np.asarray(positions(condition), dtype=np.int64)] = True
        return mask

    mask = np.ones(rows, dtype=bool)
    for condition in clauses.must:
        mask &= passing(condition)
    if clauses.should:
        any_of = np.zeros(rows, dtype=bool)
        for condition in clauses.should:
            any_of |= passing(condition)
        mask &= any_of
    for condition in clauses.must_not:
        mask &= ~passing(condition)
    return mask


def _keys_of(clauses: Clauses):
    for condition in (*clauses.must, *clauses.should, *clauses.must_not):
        if isinstance(condition, Clauses):
            yield from _keys_of(condition)
        else:
            yield condition.key


def parse_filter(spec: object, known: dict[str, set[str]] | None) -> Filter:
    """Check a filter in Qdrant's shape and compile it. `known`: the metadata keys the
    index holds and their value kinds (None: do not check keys)."""
    clauses = check_filter(spec, known)
    sql, params = _clauses_sql(clauses, frozenset())
    return Filter(json.dumps(spec, sort_keys=True), sql, tuple(params), clauses)


def check_filter(spec: object, known: dict[str, set[str]] | None) -> Clauses:
    """A filter's conditions, checked (FilterError says what to fix)."""
    return _check_clauses(spec, "filter", 1, known)


def _check_clauses(spec, where, depth, known) -> Clauses:
    if not isinstance(spec, dict):
        raise FilterError(f"{where} must be an object with must / should / must_not lists")
    if depth > MAX_FILTER_DEPTH:
        raise FilterError(
            f"{where} nests filters {depth} deep; a condition may be a filter of field "
            "tests, no deeper"
        )
    unknown = set(spec) - {"must", "should", "must_not"}
    if unknown:
        raise FilterError(
            f"{where} has {', '.join(sorted(unknown))}; a filter takes must, should, must_not"
        )
    lists = []
    for clause in ("must", "should", "must_not"):
        conditions = spec.get(clause) or []
        if not isinstance(conditions, list):
            raise FilterError(f"{where}.{clause} must be a list of conditions")
        check_condition_count(f"{where}.{clause}", len(conditions))
        lists.append(
            tuple(
                _check_condition(condition, f"{where}.{clause}[{i}]", depth, known)
                for i, condition in enumerate(conditions)
            )
        )
    return Clauses(*lists)


def check_condition_count(where: str, count: int) -> None:
    """A filter's list of `count` conditions at `where` is within the limit (also asked
    of a gRPC filter before it is converted: server.validation.filter_of)."""
    if count > MAX_CONDITIONS:
        raise FilterError(
            f"{where} has {count} conditions; a list holds at most "
            f"{MAX_CONDITIONS} (nest a filter to group more)"
        )


def check_any_count(where: str, count: int) -> None:
    """A condition's match.any of `count` values is within the limit."""
    if count > MAX_ANY:
        raise FilterError(f"{where}.match.any has {count} values; the limit is {MAX_ANY}")


def _check_condition(condition, where, depth, known):
    if not isinstance(condition, dict):
        raise FilterError(f"{where} must be an object: {{key, match | range}} or a filter")
    if "key" not in condition:
        if set(condition) - {"must", "should", "must_not"}:
            raise FilterError(f"{where} names no key; a condition is {{key, match | range}}")
        # a filter (an empty one holds for every row, as an empty top-level filter)
        return _check_clauses(condition, where, depth + 1, known)
    key = condition["key"]
    if not isinstance(key, str):
        raise FilterError(f"{where}.key must be a string")
    extra = set(condition) - {"key", "match", "range"}
    if extra or ("match" in condition) == ("range" in condition):
        raise FilterError(f"{where} needs exactly one of match or range beside key")
    if key not in RECORD_KEYS:
        check_key(key, where)
        if known is not None and key not in known:
            listed = ", ".join(sorted(known)[:20]) or "none"
            raise FilterError(
                f"{where}: the index holds no field {key!r} (fields: {listed}; and label, id)"
            )
    if "match" in condition:
        return _check_match(key, condition["match"], where)
    return _check_range(key, condition["range"], where, known)


def _check_match(key: str, match, where: str) -> Match:
    if not isinstance(match, dict) or len(match) != 1 or not set(match) <= {"value", "any"}:
        raise FilterError(f"{where}.match must be {{value: V}} or {{any: [V, ...]}}")
    if "value" in match:
        values = [match["value"]]
    else:
        values = match["any"]
        if not isinstance(values, list) or not values:
            raise FilterError(f"{where}.match.any must be a non-empty list")
        check_any_count(where, len(values))
    for value in values:
        if not isinstance(value, SCALAR):
            raise FilterError(f"{where}.match: {_kind(value)} is not a value to match")
    if key in RECORD_KEYS and not all(isinstance(value, str) for value in values):
        raise FilterError(f"{where}.match: {key} is a string; match it with strings")
    return Match(key, tuple(values))


def _check_range(key: str, bounds, where: str, known) -> Range:
    if key in RECORD_KEYS:
        raise FilterError(f"{where}: {key} is a string; a range takes a numeric field")
    if not isinstance(bounds, dict) or not bounds or set(bounds) - set(_RANGE_OPS):
        raise FilterError(f"{where}.range takes one or more of gt, gte, lt, lte")
    kinds = (known or {}).get(key, {"number"})
    if LIST in kinds:
        # Milvus cannot test a list's items against a range; both backends refuse it
        # alike rather than answer differently
        raise FilterError(
            f"{where}: field {key!r} holds lists; a range tests a field of one number "
            "(match a list's items with match.any)"
        )
    if "number" not in kinds:
        raise FilterError(
            f"{where}: field {key!r} holds {', '.join(sorted(kinds))} values, not numbers; "
            "use match for it"
        )
    checked = []
    for op, bound in sorted(bounds.items()):
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise FilterError(f"{where}.range.{op} must be a number, not {_kind(bound)}")
        checked.append((op, bound))
    return Range(key, tuple(checked))


# ---- SQL over a segment's record store ------------------------------------------------


def _clauses_sql(clauses: Clauses, indexed: frozenset[str]) -> tuple[str, list]:
    parts: list[str] = []
    params: list = []
    for joined, conditions in (
        ("AND", clauses.must),
        ("OR", clauses.should),
        ("NOT", clauses.must_not),
    ):
        compiled = []
        for condition in conditions:
            sql, values = _condition_sql(condition, indexed)
            compiled.append(sql)
            params.extend(values)
        if not compiled:
            continue
        if joined == "NOT":
            parts.append("NOT (" + " OR ".join(compiled) + ")")
        else:
            parts.append("(" + f" {joined} ".join(compiled) + ")")
    return ("(" + " AND ".join(parts) + ")" if parts else "1"), params


def _condition_sql(condition, indexed: frozenset[str]) -> tuple[str, list]:
    if isinstance(condition, Clauses):
        return _clauses_sql(condition, indexed)
    if condition.key in indexed:
        return _indexed_sql(condition)
    if isinstance(condition, Match):
        return _match_sql(condition)
    return _range_sql(condition)


def _field_test(key: str, test: str, params: list) -> tuple[str, list]:
    """SQL true when the row's field `key` (or, for a list, one of its items) passes
    `test`, a condition on `{type}` and `{value}` (json_each's columns). The key is a
    bound parameter matched against the object's own keys: no JSON path is made of
    user text, so any field name is safe."""
    scalar = test.format(type="field.type", value="field.value")
    item = test.format(type="item.type", value="item.value")
    sql = (
        "EXISTS (SELECT 1 FROM json_each(records.metadata) AS field WHERE field.key = ? AND "
        f"((field.type != 'array' AND ({scalar})) OR (field.type = 'array' AND EXISTS "
        f"(SELECT 1 FROM json_each(field.value) AS item WHERE {item}))))"
    )
    return sql, [key, *params, *params]


def _match_sql(match: Match) -> tuple[str, list]:
    if match.key in RECORD_KEYS:
        marks = ",".join("?" * len(match.values))
        return f"records.{match.key} IN ({marks})", list(match.values)
    # one IN list per kind of value, not one test per value: a chain of MAX_ANY ORs
    # is deeper than SQLite parses ("Expression tree is too large (maximum depth 1000)")
    by_kind = _values_by_kind(match.values)
    if "bool" in by_kind:  # json_each types a boolean 'true' or 'false'
        by_kind["bool"] = ["true" if value else "false" for value in by_kind["bool"]]
    tests: list[str] = []
    for kind, values in by_kind.items():
        marks = ",".join("?" * len(values))
        if kind == "bool":
            tests.append(f"{{type}} IN ({marks})")
        elif kind == "number":
            tests.append(f"({{type}} IN ('integer', 'real') AND {{value}} IN ({marks}))")
        else:
            tests.append(f"({{type}} = 'text' AND {{value}} IN ({marks}))")
    params = [value for values in by_kind.values() for value in values]
    return _field_test(match.key, " OR ".join(tests), params)


def _values_by_kind(values: Sequence[object]) -> dict[str, list]:
    """A match's values grouped by `_value_kind`, in order: each kind is one IN list."""
    by_kind: dict[str, list] = {}
    for value in values:
        by_kind.setdefault(_value_kind(value), []).append(value)
    return by_kind


def _range_sql(range_: Range) -> tuple[str, list]:
    """A number within the bounds (a field holding a list is refused by _check_range;
    a row whose field is a list passes no range, as in Milvus)."""
    tests = [f"field.value {_RANGE_OPS[op]} ?" for op, _ in range_.bounds]
    sql = (
        "EXISTS (SELECT 1 FROM json_each(records.metadata) AS field WHERE field.key = ? AND "
        "field.type IN ('integer', 'real') AND " + " AND ".join(tests) + ")"
    )
    return sql, [range_.key, *(bound for _, bound in range_.bounds)]


def _indexed_sql(condition: Match | Range) -> tuple[str, list]:
    """The same test read from the store's field index, as a condition on `records`."""
    positions, params = _indexed_positions(condition)
    return f"records.position IN ({positions})", params


def _indexed_positions(condition: Match | Range, table: str = "field_values") -> tuple[str, list]:
    """The positions passing a test of an indexed field, from the store's field index
    (an index range per kind)."""
    if isinstance(condition, Range):
        tests = " AND ".join(f"value {_RANGE_OPS[op]} ?" for op, _ in condition.bounds)
        where = f"kind = 'number' AND item = 0 AND {tests}"
        params: list = [bound for _, bound in condition.bounds]
    else:
        by_kind = {
            _INDEX_KIND[kind]: [int(value) for value in values] if kind == "bool" else values
            for kind, values in _values_by_kind(condition.values).items()
        }
        where = " OR ".join(
            f"(kind = '{kind}' AND value IN ({','.join('?' * len(values))}))"
            for kind, values in by_kind.items()
        )
        params = [value for values in by_kind.values() for value in values]
    sql = f"SELECT position FROM {table} WHERE key = ? AND ({where})"
    return sql, [condition.key, *params]
