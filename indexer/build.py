"""Index writes: full builds, additions, deletions and the server's change streams.

Each operation only decides, from the current version, what the next one holds (a
`transaction.Plan`: which base rows to drop, which new rows to read); the write
transaction (lock, staging, publish, mirroring: `indexer.transaction`) is the same
for all. Every write publishes a new version made of the base's segments (shared,
with the write's deletions) and one new segment holding the new rows, so a write costs
what it changes (indexer.segments); only new texts are encoded. `indexer.compaction`
rewrites the live rows as one segment.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from siamese_search.core.errors import DataError, UserError
from siamese_search.core.model_artifact import EmbeddingModel
from siamese_search.core.tables import Columns, Table, iter_table
from siamese_search.indexer import layout
from siamese_search.indexer.changes import Change, ChangeConflict, ChangeSet
from siamese_search.indexer.options import BuildOptions, BuildReport
from siamese_search.indexer.store import IndexVersion
from siamese_search.indexer.transaction import NothingToChange, Plan, write_version


def _check_model_dim(model: EmbeddingModel) -> None:
    if model.dim <= 0:
        raise UserError("the model produces no vectors")


def build_index(
    index_dir: Path,
    model: EmbeddingModel,
    data: Path | Table,
    columns: Columns,
    options: BuildOptions,
) -> BuildReport:
    """A new version holding exactly the rows of `data`: a table file, or a `Table`
    already read in memory (siamese-evaluate's reference set).

    Onto a directory that already has versions only with `options.replace` (the old
    versions stay until pruned, and `rollback` can return to them).
    """
    _check_model_dim(model)
    source = data if isinstance(data, Table) else Path(data)
    described = "(in memory)" if isinstance(source, Table) else str(source)

    def plan_for(_base: IndexVersion | None) -> Plan:
        existing = layout.list_versions(index_dir)
        if existing and not options.replace:
            raise UserError(
                f"{index_dir} already holds index versions ({', '.join(existing)}; current "
                f"{layout.current_version(index_dir)}). `build` would replace what it serves: "
                "pass --replace to publish this table as a new version (the old ones stay "
                "until pruned; `siamese-index rollback` returns to them), or use `add` to "
                "extend the current version"
            )
        return Plan(
            options.index_type,
            options.index_params,
            columns.label is not None,
            columns,
            extra={"operation": {"kind": "build", "data": described, "base_version": None}},
            source=source,
            source_columns=columns,
        )

    return write_version(index_dir, model, options, plan_for, needs_base=False)


def carried_index_settings(manifest: dict, options: BuildOptions) -> tuple[str, dict | None]:
    """The index type and parameters a new version built on a base manifest gets.

    `--index-type auto` (the default) keeps how the base was asked to be built (its
    requested type and parameters, so a custom M, ef_search or nprobe survives), with
    any --index-param on top; an explicit --index-type starts afresh with its params.
    """
    if options.index_type != "auto":
        return options.index_type, options.index_params
    info = manifest["index"]
    kind = info.get("requested_type", info["type"])
    carried = info.get("requested_params")
    if carried is None:  # versions written before requested_params was recorded
        carried = info["params"] if kind != "auto" else {}
    merged = {**carried, **(options.index_params or {})}
    return kind, merged or None


def add_to_index(
    index_dir: Path,
    model: EmbeddingModel,
    data_path: Path,
    columns: Columns,
    options: BuildOptions,
    upsert: bool = False,
) -> BuildReport:
    """A new version: the current one plus the rows of `data_path`.

    Ids already in the index are an error, or with `upsert` replace the old rows.
    """

    def plan_for(base: IndexVersion | None) -> Plan:
        assert base is not None
        if base.has_labels != (columns.label is not None):
            raise UserError(
                f"the index {'has' if base.has_labels else 'has no'} labels but the new rows "
                f"{'have none' if base.has_labels else 'do'}; "
                + ("give --label-column" if base.has_labels else "pass --no-labels")
            )
        # without an id column, new rows are numbered after the index's largest row number
        first_row_id = 0 if columns.id is not None else base.records().next_row_id()
        # which base rows the new data replaces (upsert) or collides with (error); the
        # same pass counts the records (the ingest's progress total: no pass of its own)
        new_ids: list[str] = []
        records = 0
        for chunk in iter_table(data_path, columns, options.chunk_rows, first_row_id):
            new_ids.extend(chunk.ids)
            records += len(chunk) + len(chunk.problems)
        clashes = base.records().positions_of(new_ids)
        if clashes and not upsert:
            shown = ", ".join(repr(i) for i in list(clashes)[:10])
            raise DataError(
                f"{data_path}: {len(clashes)} id(s) are already in the index ({shown}"
                f"{', ...' if len(clashes) > 10 else ''}); pass --upsert to replace those rows, "
                "or give new ids"
            )
        drop = set(clashes.values())
        kind, params = carried_index_settings(base.manifest, options)
        extra = {
            "operation": {
                "kind": "upsert" if upsert else "add",
                "data": str(data_path),
                "base_version": base.name,
                "replaced": len(drop),
            }
        }
        return Plan(
            kind,
            params,
            base.has_labels,
            columns,
            extra,
            drop=drop,
            source=Path(data_path),
            source_columns=columns,
            first_row_id=first_row_id,
            source_records=records,
        )

    return write_version(index_dir, model, options, plan_for, needs_base=True)


def _source_columns(base: IndexVersion) -> Columns | None:
    """How the base version's rows were read (carried to a version without a table)."""
    source = base.manifest.get("source")
    if not source:
        return None
    return Columns(source["text_column"], source["label_column"], source["id_column"])


def delete_from_index(
    index_dir: Path,
    model: EmbeddingModel,
    ids: Iterable[str],
    options: BuildOptions,
    ignore_missing: bool = False,
) -> BuildReport:
    """A new version: the current one without the rows whose ids are given."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        raise UserError("no ids given; pass --ids ID [ID ...] or --ids-file FILE")

    def plan_for(base: IndexVersion | None) -> Plan:
        assert base is not None
        found = base.records().positions_of(wanted)
        missing = [i for i in wanted if i not in found]
        if missing and not ignore_missing:
            shown = ", ".join(repr(i) for i in missing[:10])
            raise UserError(
                f"{len(missing)} id(s) are not in index version {base.name} "
                f"({shown}); nothing was deleted. Pass --ignore-missing to skip them."
            )
        drop = set(found.values())
        kind, params = carried_index_settings(base.manifest, options)
        extra = {"operation": {"kind": "delete", "base_version": base.name, "deleted": len(drop)}}
        return Plan(kind, params, base.has_labels, _source_columns(base), extra, drop=drop)

    return write_version(index_dir, model, options, plan_for, needs_base=True)


def apply_changes(
    index_dir: Path, model: EmbeddingModel, changes: Sequence[Change], options: BuildOptions
) -> BuildReport:
    """A new version: the current one with `changes` applied in order, by the same
    writer (lock, staging, atomic publish) as `add` and `delete`; only the texts
    upserted are encoded. Deleting ids that are not there is not an error, and
    changes that change nothing (only such deletes) publish nothing: the report names
    the current version (each one used to push an older version out of `--keep`)."""
    folded = ChangeSet.of(changes)
    pending = folded.upserts

    def plan_for(base: IndexVersion | None) -> Plan:
        assert base is not None
        if not base.has_labels and any(label for _, label in pending.values()):
            raise ChangeConflict("the index has no labels; send examples without labels")
        if base.has_labels and any(not label for _, label in pending.values()):
            raise ChangeConflict("the index is labelled; every example needs a label")
        drop = set(base.records().positions_of(sorted(folded.dropped_ids)).values())
        if folded.dropped_labels and base.has_labels:
            drop.update(int(p) for p in base.positions_labelled(set(folded.dropped_labels)))
        replaced = len(drop)
        if not pending and not drop:
            raise NothingToChange(BuildReport(base.name, base.count, 0, 0, base.kind))
        table = Table(
            texts=[text for text, _ in pending.values()],
            labels=[label or "" for _, label in pending.values()] if base.has_labels else None,
            ids=list(pending),
            metadata=[folded.metadata.get(row_id, {}) for row_id in pending]
            if folded.metadata
            else None,
        )
        columns = Columns(text="text", label="label" if base.has_labels else None, id="id")

        kind, params = carried_index_settings(base.manifest, options)
        extra = {
            "operation": {
                "kind": "changes",
                "base_version": base.name,
                "upserted": len(pending),
                "removed": replaced,
                "writes": len(changes),
            }
        }
        return Plan(
            kind,
            params,
            base.has_labels,
            _source_columns(base),
            extra,
            drop=drop,
            source=table if table.ids else None,
            source_columns=columns,
        )

    return write_version(index_dir, model, options, plan_for, needs_base=True)
