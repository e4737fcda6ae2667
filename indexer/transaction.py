"""The write transaction every index write goes through: under the writer lock, read
the current version (the base), decide what the new version holds (a `Plan`), stage
it, publish it atomically, and mirror it (indexer.mirror).

Reading the base and publishing happen under one lock, so a second writer builds on
the first one's result instead of overwriting it (no lost update).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from siamese_search.core.errors import UserError
from siamese_search.core.model_artifact import EmbeddingModel
from siamese_search.core.tables import Columns, RowProblem, Table, count_records
from siamese_search.indexer import layout
from siamese_search.indexer.backends import check_params
from siamese_search.indexer.ingest import ingest
from siamese_search.indexer.mirror import mirror_for
from siamese_search.indexer.options import BuildOptions, BuildReport
from siamese_search.indexer.resume import Workspace, holds_kept_work, open_workspace
from siamese_search.indexer.store import IndexVersion, open_index
from siamese_search.indexer.version_writer import VersionWriter, carry_base, indexed_keys_of

if TYPE_CHECKING:
    from siamese_search.indexer.compaction import MergedSegment

MAX_REPORTED_PROBLEMS = 20


@dataclass
class Plan:
    """What one write makes of its base version, decided under the writer lock: the
    base's rows but `drop` (row positions), then the new rows of `source`."""

    kind: str  # requested index type ("auto" resolves by size)
    params: dict | None  # requested index parameters (sizes derive the rest)
    with_labels: bool
    columns: Columns | None  # how the rows were read (recorded for later adds)
    extra: dict  # the manifest's record of the operation
    drop: set[int] = field(default_factory=set)  # base rows left out (deleted, replaced)
    source: Path | Table | None = None  # new rows: a table file or rows in memory
    source_columns: Columns | None = None  # how to read `source`
    first_row_id: int = 0  # row ids of `source` without an id column start here
    source_records: int | None = None  # records in `source`, when planning counted them
    merged: MergedSegment | None = None  # a compaction's segment, replacing the ones it merged


class NothingToChange(Exception):
    """The write leaves the base version as it is: no new version is written."""

    def __init__(self, report: BuildReport):
        super().__init__(report.version)
        self.report = report


def write_version(
    index_dir: Path,
    model: EmbeddingModel,
    options: BuildOptions,
    plan_for: Callable[[IndexVersion | None], Plan],
    needs_base: bool,
    model_change: bool = False,
) -> BuildReport:
    """Under the writer lock: open the current version (the base), plan, stage, publish.

    `plan_for` decides from the base (None without `needs_base`); it may raise to
    refuse the write, or NothingToChange, whose report is returned. The base must have
    been built with `model`, unless `model_change` (a re-embedding job): then the plan
    must leave nothing of the base's vectors (check_one_model), so that no version
    holds vectors of two models.
    """
    started = time.perf_counter()
    index_dir = Path(index_dir)
    # a pq_m the model's dimension cannot take, refused before any text is embedded
    check_params(options.index_params or {}, options.index_type, model.dim)
    with (
        layout.writer_lock(index_dir, options.wait_seconds, keeps=holds_kept_work),
        mirror_for(options.milvus, options.show_progress) as mirror,
    ):
        mirror.reconcile(index_dir)
        checked = None if model_change else model
        base = open_index(index_dir, model=checked, load_indexes=False) if needs_base else None
        try:
            if base is not None:
                mirror.accept_base(base.manifest)
            layout.checkpoint("base-opened")
            try:
                plan = plan_for(base)
            except NothingToChange as unchanged:
                return unchanged.report
            if model_change and base is not None:
                check_one_model(base, plan, model)
            layout.sweep_staging(index_dir)
            workspace = _ingest_workspace(index_dir, plan, model)
            staging = layout.new_staging(index_dir)
            try:
                next_name = layout.next_version_name(index_dir)
                indexed = indexed_keys_of(
                    base.manifest if base is not None else None, options.index_metadata
                )
                writer = VersionWriter(staging, model.dim, plan.with_labels, next_name, indexed)
                # a running compaction is merging the base's segments: leave them be
                may_merge = not layout.compaction_running(index_dir)
                added, problems = _fill(writer, base, plan, model, options, may_merge, workspace)
                layout.checkpoint("before-finish")
                extra = _manifest_extra(plan, problems, model, options, mirror.record(next_name))
                extra["index_id"] = _index_id(index_dir)
                manifest = writer.finish(plan.kind, plan.params, model, extra)
                base_dir = base.directory if base is not None else None
                mirror.write(index_dir, next_name, staging, manifest, base_dir)  # delta first
                name = layout.publish(index_dir, staging, keep=options.keep_versions)
                assert name == next_name, "version numbers move only under the writer lock"
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                if workspace is not None:
                    # a first build's directory stays for it too: writer_lock removes a
                    # directory it made only when nothing is kept there
                    workspace.give_up()
                raise
            mirror.published(name, index_dir)  # the alias last
            if workspace is not None:
                workspace.remove()
        finally:
            if base is not None:
                base.close()
    return BuildReport(
        name,
        manifest["count"],
        added,
        len(plan.drop),
        manifest["index"]["type"],
        problems,
        time.perf_counter() - started,
        reused=workspace.reused if workspace is not None else 0,
    )


def _ingest_workspace(index_dir: Path, plan: Plan, model: EmbeddingModel) -> Workspace | None:
    """Where a write of a table file keeps what it embedded if it does not publish, and
    finds what a stopped run of it kept (indexer.resume); None for rows in memory (a
    server's commits, an evaluation's reference set: few, and not re-run by hand)."""
    if not isinstance(plan.source, Path):
        return None
    kind = plan.extra.get("operation", {}).get("kind")
    command = {"build": "build", "add": "add", "upsert": "add --upsert"}.get(kind, kind)
    return open_workspace(
        index_dir, "ingest", model.fingerprint, model.dim, f"siamese-index {command}"
    )


def check_one_model(base: IndexVersion, plan: Plan, model: EmbeddingModel) -> None:
    """Refuse a plan that would carry any of `base`'s vectors into a version of another
    model: every base segment must be replaced by the plan's re-embedded segment or
    have all its rows dropped (rows written since a re-embedding's snapshot are
    embedded again, as new rows)."""
    if base.model_fingerprint == model.fingerprint:
        return
    replaced = plan.merged.replaces if plan.merged is not None else {}
    carried = [
        segment.name
        for segment in base.segments
        if segment.name not in replaced
        and not set(range(segment.offset, segment.offset + segment.rows)) <= plan.drop
    ]
    if carried:
        raise UserError(
            f"refused: version {base.name} was embedded with another model than "
            f"{model.directory}, and the new version would keep its segment(s) "
            f"{', '.join(carried[:5])}: a version never holds vectors of two models. "
            "Re-embed every row (siamese-index reembed)"
        )


def _fill(
    writer: VersionWriter,
    base: IndexVersion | None,
    plan: Plan,
    model: EmbeddingModel,
    options: BuildOptions,
    may_merge: bool,
    workspace: Workspace | None = None,
) -> tuple[int, list[RowProblem]]:
    """The base's kept rows, then the new ones: (rows added, row problems)."""
    records = _records_in(plan)
    if base is not None:  # the merge policy sizes the new segment by the rows to come
        carry_base(writer, base, plan.drop, records, plan.merged, may_merge)
    if plan.source is None:
        return 0, []
    assert plan.source_columns is not None
    writer.refuse_untrainable(plan.kind, plan.params, records)
    return ingest(
        writer,
        model,
        plan.source,
        plan.source_columns,
        options,
        plan.first_row_id,
        records,
        workspace,
    )


def _records_in(plan: Plan) -> int:
    """How many records the plan's source holds (0 without one): counted by the
    planner, or here, a pass over the table, which the ingest's progress total needs
    anyway."""
    if plan.source is None:
        return 0
    if isinstance(plan.source, Table):
        return len(plan.source.texts)
    if plan.source_records is not None:
        return plan.source_records
    return count_records(plan.source)


def _index_id(index_dir: Path) -> str:
    """Which index the directory holds (`layout.recorded_index_id`), or a new id for a
    first version (or one written before ids were)."""
    return layout.recorded_index_id(index_dir) or uuid.uuid4().hex


def _manifest_extra(
    plan: Plan,
    problems: list[RowProblem],
    model: EmbeddingModel,
    options: BuildOptions,
    served_from: dict | None,
) -> dict:
    extra = {**plan.extra, "problems": _problem_summary(problems)}
    if options.engine == "ray":  # what embedded the new rows
        extra["engine"] = {"kind": "ray", **dataclasses.asdict(options.ray)}
        del extra["engine"]["address"]  # may name a private host or token
    # what ran the encoder's forward pass for the new rows (not part of the
    # fingerprint: a runtime is only used once it gives numpy's vectors)
    extra["encoder_runtime"] = model.encoder_runtime
    if plan.columns is not None:
        extra["source"] = {
            "text_column": plan.columns.text,
            "label_column": plan.columns.label,
            "id_column": plan.columns.id,
        }
    if served_from is not None:
        extra["backend"] = served_from
    return extra


def _problem_summary(problems: list[RowProblem]) -> dict:
    return {
        "count": len(problems),
        "by_reason": dict(Counter(p.reason for p in problems)),
        "first": [str(p) for p in problems[:MAX_REPORTED_PROBLEMS]],
    }
