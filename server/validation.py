"""Request checks: each failure is a message for INVALID_ARGUMENT that says what to fix."""

from __future__ import annotations

import math
import re
import unicodedata
import uuid
from collections.abc import Sequence

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from siamese_search.indexer.changes import Change
from siamese_search.indexer.metadata import (
    MetadataError,
    check_any_count,
    check_condition_count,
    check_metadata,
    check_sizes,
)
from siamese_search.server.config import MAX_LABEL_CHARS, MAX_LABELS, Limits


class InvalidRequest(ValueError):
    pass


MAX_ECHOED = 60  # characters of a client's value quoted back in an error message


def _class_of(chars: list[str]) -> str:
    """A character class body for `chars`, as ranges of \\uXXXX escapes, which Python's
    `re` and ECMA-262 (JSON Schema's regular expressions) read alike."""
    codes = sorted(ord(ch) for ch in chars)
    parts, start = [], codes[0]
    for previous, code in zip(codes, codes[1:] + [None], strict=True):
        if code != previous + 1:
            first, last = f"\\u{start:04x}", f"\\u{previous:04x}"
            parts.append(first if start == previous else f"{first}-{last}")
            if code is not None:
                start = code
    return "".join(parts)


#: characters with nothing for an encoder to read: white space, controls and format
#: characters (zero-width space and joiners, direction marks, the BOM). A text must
#: hold one character outside them. One rule for the gRPC check and the REST schema
#: (server/openapi.py), where it is this pattern. Basic Multilingual Plane only: the
#: few format characters beyond it (Egyptian and shorthand format controls, tags)
#: cannot be written in a JSON Schema class, and read as unknown tokens.
_NOTHING = [
    chr(code)
    for code in range(0x10000)
    if unicodedata.category(chr(code)) in {"Cc", "Cf", "Zs", "Zl", "Zp"} or chr(code).isspace()
]
READABLE_PATTERN = f"[^{_class_of(_NOTHING)}]"
_READABLE = re.compile(READABLE_PATTERN)


def echo(value: str) -> str:
    """A client's value quoted in an error message, cut short: messages stay small."""
    shown = value if len(value) <= MAX_ECHOED else value[:MAX_ECHOED] + "..."
    return repr(shown)


def check_text(text: str, limits: Limits, where: str = "text") -> str:
    if not text or not text.strip():
        raise InvalidRequest(f"{where} is empty; send the text to search for")
    if not _READABLE.search(text):
        raise InvalidRequest(
            f"{where} has nothing to read: only control, zero-width or space characters"
        )
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
    checked = [check_text(t, limits, where=f"texts[{i}]") for i, t in enumerate(texts)]
    total = sum(len(t) for t in checked)
    if total > limits.max_call_chars:
        raise InvalidRequest(
            f"the texts of this call have {total} characters together; the limit is "
            f"{limits.max_call_chars} a call. Split them into several calls."
        )
    return checked


def check_tokens(model, texts: Sequence[str], limits: Limits) -> None:
    """Refuse work beyond the token limits, before any encoding is done."""
    counts = model.count_tokens(texts, stop_after=limits.max_call_tokens)
    for i, tokens in enumerate(counts):
        if tokens > limits.max_text_tokens:
            where = "text" if len(texts) == 1 else f"texts[{i}]"
            raise InvalidRequest(
                f"{where} is {tokens} tokens; the limit is {limits.max_text_tokens} a text. "
                "Send shorter texts (split long documents into passages)."
            )
    if sum(counts) > limits.max_call_tokens:
        raise InvalidRequest(
            f"the texts of this call are over {limits.max_call_tokens} tokens together (the "
            "limit of one call); split them into several calls"
        )


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
    if len(labels) > MAX_LABELS:  # counted as sent, as the REST schema's maxItems does
        raise InvalidRequest(
            f"labels names {len(labels)} labels; the limit is {MAX_LABELS}. Filter by fewer."
        )
    cleaned = list(dict.fromkeys(labels))
    if any(not label for label in cleaned):
        raise InvalidRequest("labels contains an empty string; list label names only")
    long = [label for label in cleaned if len(label) > MAX_LABEL_CHARS]
    if long:
        raise InvalidRequest(
            f"label {echo(long[0])} has {len(long[0])} characters; labels are at most "
            f"{MAX_LABEL_CHARS}"
        )
    return cleaned


MAX_ID_CHARS = 256


def _check_id(row_id: str, where: str) -> str:
    if len(row_id) > MAX_ID_CHARS:
        raise InvalidRequest(
            f"{where} {echo(row_id)} has {len(row_id)} characters; ids are at most {MAX_ID_CHARS}"
        )
    if row_id.strip() != row_id or any(unicodedata.category(ch) == "Cc" for ch in row_id):
        raise InvalidRequest(f"{where} {echo(row_id)} has control or surrounding space characters")
    return row_id


def filter_of(request) -> dict | None:
    """A request's filter as the JSON object it stands for (None: no filter); the
    served version checks it (IndexVersion.parse_filter)."""
    if not request.HasField("filter"):
        return None
    _check_list_sizes(request.filter, "filter")
    spec = _as_json(request.filter, "filter", preserving_proto_field_name=True)
    return spec or None


def _check_list_sizes(condition, where: str) -> None:
    """A filter's lists within their limits (FilterError), read off the message before
    it becomes JSON: converting a filter of 50,000 conditions (a request within the
    size limit) took the server 0.5 s of CPU to be told that a list holds 8."""
    for clause in ("must", "should", "must_not"):
        conditions = getattr(condition, clause)
        check_condition_count(f"{where}.{clause}", len(conditions))
        for i, nested in enumerate(conditions):
            _check_list_sizes(nested, f"{where}.{clause}[{i}]")
    if condition.HasField("match"):
        check_any_count(where, len(condition.match.any))


def _as_json(message, where: str, **options) -> dict:
    """A Struct-bearing message as JSON; a NaN or an infinity (a protobuf double may
    hold one, JSON cannot) is INVALID_ARGUMENT, not a failure to serialise it, nor,
    in a plain double field (a filter's range bound), the string "NaN" that protobuf's
    JSON mapping writes for it."""
    try:
        found = json_format.MessageToDict(message, **options)
    except (ValueError, json_format.Error):  # a nested message's: SerializeToJsonError
        found = None
    if found is None or _holds_non_finite(message):
        raise InvalidRequest(
            f"{where} holds a number that is not finite (NaN or an infinity); numbers "
            "must be finite"
        )
    return found


_FLOATS = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)


def _holds_non_finite(message) -> bool:
    """Whether any float or double field of `message`, nested ones included, is NaN or
    infinite."""
    for field, value in message.ListFields():
        if field.is_repeated:
            is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
            items = list(value.values()) if is_map else list(value)
        else:
            items = [value]
        if field.type in _FLOATS and not all(math.isfinite(item) for item in items):
            return True
        if field.type == FieldDescriptor.TYPE_MESSAGE and any(
            isinstance(item, Message) and _holds_non_finite(item) for item in items
        ):
            return True
    return False


def metadata_of(struct, where: str) -> dict:
    """An example's metadata from its protobuf Struct, checked; whole numbers become
    integers (a Struct holds every number as a double: 2026 would come back 2026.0).

    Its sizes are checked on the message first: converting a request-size Struct of
    60,000 fields took 0.3 s of CPU to be told that metadata holds 64."""
    try:
        lists = (
            (key, len(value.list_value.values))
            for key, value in struct.fields.items()
            if value.HasField("list_value")
        )
        check_sizes(where, len(struct.fields), lists)
        fields = _as_json(struct, where)
        fields = {key: _whole(value) for key, value in fields.items()}
        return check_metadata(fields, where)
    except MetadataError as error:
        raise InvalidRequest(str(error)) from None


def _whole(value):
    if isinstance(value, list):
        return [_whole(item) for item in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def check_ids(ids: Sequence[str], limits: Limits) -> list[str]:
    """GetExamples' ids: 1 .. max_batch, each a valid id."""
    if not ids:
        raise InvalidRequest("no ids; send at least one")
    if len(ids) > limits.max_batch:
        raise InvalidRequest(f"{len(ids)} ids in one call; the limit is {limits.max_batch}")
    for n, row_id in enumerate(ids):
        if not row_id:
            raise InvalidRequest(f"ids[{n}] is empty")
    return [_check_id(row_id, f"ids[{n}]") for n, row_id in enumerate(ids)]


def check_upsert(request, limits: Limits, labelled: bool) -> tuple[Change, list[str]]:
    """An Upsert as one change, and each example's id in request order (made, a
    UUID, where none was sent)."""
    examples = list(request.examples)
    if not examples:
        raise InvalidRequest("no examples; send at least one example (text, label, id)")
    texts = check_texts([e.text for e in examples], limits)
    fields = [
        metadata_of(e.metadata, f"examples[{i}].metadata") if e.HasField("metadata") else {}
        for i, e in enumerate(examples)
    ]
    ids: list[str] = []
    labels: list[str] = []
    for i, example in enumerate(examples):
        row_id = _check_id(example.id, f"examples[{i}].id") if example.id else uuid.uuid4().hex
        ids.append(row_id)
        if labelled and not example.label:
            raise InvalidRequest(
                f"examples[{i}] needs a label: the index is labelled (GetInfo lists its labels; "
                "a new label makes a new class)"
            )
        if not labelled and example.label:
            raise InvalidRequest(f"examples[{i}] has a label, but the index has none; drop it")
        if example.label:
            check_labels([example.label])
        labels.append(example.label)
    # an id sent twice in one call: the last one wins, as in Qdrant (and as two calls
    # would do), so a client that merges batches need not de-duplicate them first
    last = {row_id: i for i, row_id in enumerate(ids)}
    kept = sorted(last.values())
    change = Change(
        "upsert",
        tuple(ids[i] for i in kept),
        tuple(texts[i] for i in kept),
        tuple(labels[i] for i in kept) if labelled else None,
        metadata=tuple(fields[i] for i in kept) if any(fields) else None,
    )
    return change, ids


def check_delete(request, limits: Limits) -> list[Change]:
    """A Delete as changes: by ids, and/or every example of one label."""
    if not request.ids and not request.label:
        raise InvalidRequest("nothing to delete: send ids, or a label")
    if len(request.ids) > limits.max_batch:
        raise InvalidRequest(
            f"{len(request.ids)} ids in one call; the limit is {limits.max_batch}. "
            "Split them into several calls."
        )
    changes = []
    if request.ids:
        ids = []
        for n, row_id in enumerate(request.ids):
            if not row_id:
                raise InvalidRequest(f"ids[{n}] is empty")
            ids.append(_check_id(row_id, f"ids[{n}]"))
        changes.append(Change("delete", tuple(dict.fromkeys(ids))))
    if request.label:
        check_labels([request.label])
        changes.append(Change("delete-label", label=request.label))
    return changes
