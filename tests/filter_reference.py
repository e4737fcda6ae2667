"""What a filter means, written plainly (no SQL, no Milvus expression): the
reference tests/test_metadata.py and tests/test_backend_conformance.py hold both
backends to."""

from __future__ import annotations

import numpy as np


def passes(row: dict, spec: dict) -> bool:
    """Whether a row (its fields, label and id as keys) passes a filter in Qdrant's
    shape: a match is type-strict but for numbers (an int equals an equal float) and
    sees a list's items; a range tests a field of one number."""

    def holds(condition: dict) -> bool:
        if "key" not in condition:
            return passes(row, condition)
        key = condition["key"]
        value = row.get(key)
        values = value if isinstance(value, list) else ([] if value is None else [value])
        if "match" in condition:
            wanted = condition["match"].get("any", [condition["match"].get("value")])
            return any(
                v == w
                and isinstance(v, bool) == isinstance(w, bool)
                and isinstance(v, str) == isinstance(w, str)
                for v in values
                for w in wanted
            )
        ops = {"gt": np.greater, "gte": np.greater_equal, "lt": np.less, "lte": np.less_equal}
        return not isinstance(value, (str, bool, list, type(None))) and all(
            ops[o](value, b) for o, b in condition["range"].items()
        )

    must = all(holds(c) for c in spec.get("must", []))
    should = not spec.get("should") or any(holds(c) for c in spec["should"])
    must_not = not any(holds(c) for c in spec.get("must_not", []))
    return must and should and must_not
