"""The writes a server takes (Upsert / Delete) as plain data, and what a stream of them
amounts to.

Kept apart from the version writer so the server's validation and journal import
them without importing the builder; `indexer.build.apply_changes` applies a
`ChangeSet` through the same write transaction as `siamese-index add` and `delete`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from siamese_search.core.errors import UserError


class ChangeConflict(UserError):
    """A change cannot apply to the current version (e.g. labels sent to an index that
    has none): retrying cannot help, unlike a busy writer lock."""


@dataclass(frozen=True)
class Change:
    """One write of a stream applied in order (the server's Upsert / Delete).

    kind "upsert": `ids`, `texts`, `labels` (None for an unlabelled index) replace or
    add rows; "delete": rows with `ids` go; "delete-label": every row labelled `label`
    goes. All are idempotent, so replaying a change already applied changes nothing.
    """

    kind: str
    ids: tuple[str, ...] = ()
    texts: tuple[str, ...] = ()
    labels: tuple[str, ...] | None = None
    label: str = ""
    #: each upserted row's metadata fields (indexer.metadata); None: none
    metadata: tuple[dict, ...] | None = None


@dataclass
class ChangeSet:
    """A stream of changes folded, in order, into what the next version differs by."""

    #: id -> (text, label) to write, the last upsert of an id winning
    upserts: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    #: id -> metadata fields of the upserts that have any
    metadata: dict[str, dict] = field(default_factory=dict)
    #: ids whose current rows go (deleted, or replaced by an upsert)
    dropped_ids: set[str] = field(default_factory=set)
    #: labels whose every current row goes
    dropped_labels: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, changes: Sequence[Change]) -> ChangeSet:
        folded = cls()
        for change in changes:
            if change.kind == "upsert":
                labels = change.labels or (None,) * len(change.ids)
                fields = change.metadata or ({},) * len(change.ids)
                for row_id, text, label, found in zip(
                    change.ids, change.texts, labels, fields, strict=True
                ):
                    folded.upserts[row_id] = (text, label)
                    folded.metadata.pop(row_id, None)
                    if found:
                        folded.metadata[row_id] = found
                    folded.dropped_ids.add(row_id)
            elif change.kind == "delete":
                for row_id in change.ids:
                    folded.upserts.pop(row_id, None)
                    folded.metadata.pop(row_id, None)
                    folded.dropped_ids.add(row_id)
            elif change.kind == "delete-label":
                folded.upserts = {
                    i: row for i, row in folded.upserts.items() if row[1] != change.label
                }
                folded.dropped_labels.add(change.label)
            else:
                raise ValueError(f"unknown change {change.kind!r}")
        return folded
