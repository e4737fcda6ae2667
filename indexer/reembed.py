"""`siamese-index reembed`: every live row of an index embedded again with another
model, published as a new version, while servers keep serving and committing writes.

The batch re-indexing job of the design card, started from what the index holds (its
records keep every text, label and id: rows added by Upsert included), not from the
user's original table. Like compaction (indexer.compaction), the long part runs
outside the writer lock, from a snapshot (the version current when it starts), into
a workspace of its own: the snapshot's live rows are read in pages from its records,
embedded with the new model (here, or on Ray with `--engine ray`: the same vectors
bit for bit) and written as one segment. Only the publish takes the writer lock: the
new version is the writer's base with the snapshot's segments replaced by the
re-embedded one; rows deleted since are deleted in it too, and rows written since
(segments the snapshot did not have) are embedded with the new model then, under
the lock. Writes made meanwhile merge none of the snapshot's segments (they see the
job's lock, the compaction lock), so they stay recognisable.

No version ever holds vectors of two models: the transaction checks at publish that
nothing of the base is carried (indexer.transaction, `model_change`), and refuses
otherwise. So the new model may make vectors of another dimension (a retrain with
another head or served space): the new version is the first of that dimension, on
Milvus in a data collection of its own (a new model gets one anyway), and the
retained versions keep theirs, so a rollback returns to one with its own model.

Killed at any point, the current version is untouched, and the next run with the same
model takes what this one had embedded from its workspace (indexer.resume).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from siamese_search.core.errors import UserError
from siamese_search.core.model_artifact import EmbeddingModel
from siamese_search.core.tables import Columns, Table
from siamese_search.indexer import layout
from siamese_search.indexer.backends import check_params
from siamese_search.indexer.build import _source_columns, carried_index_settings
from siamese_search.indexer.compaction import MergedSegment
from siamese_search.indexer.ingest import embedder
from siamese_search.indexer.metadata import decode
from siamese_search.indexer.options import BuildOptions, BuildReport
from siamese_search.indexer.resume import Workspace, open_workspace
from siamese_search.indexer.store import IndexVersion, open_index
from siamese_search.indexer.transaction import Plan, write_version
from siamese_search.indexer.version_writer import SegmentWriter, described, indexed_keys_of

#: rows read from the records, embedded and written at a time (bounded memory)
PAGE_ROWS = 4096


def reembed_index(index_dir: Path, model: EmbeddingModel, options: BuildOptions) -> BuildReport:
    """A new version of `index_dir`: its current live rows embedded with `model`."""
    index_dir = Path(index_dir)
    started = time.perf_counter()
    with layout.compaction_lock(index_dir):
        with layout.writer_lock(index_dir, options.wait_seconds):
            snapshot = open_index(index_dir, load_indexes=False)  # another model's
        with snapshot:
            kind, params = carried_index_settings(snapshot.manifest, options)
            _check_carried_params(params, kind, snapshot, model)
            # kept when this run does not publish: the next one reuses what it embedded
            workspace = open_workspace(
                index_dir, "reembed", model.fingerprint, model.dim, "siamese-index reembed"
            )
            try:
                try:
                    merged = _reembed(snapshot, workspace, model, kind, params, options)
                finally:
                    workspace.close()
                from_model = snapshot.model_fingerprint
                layout.checkpoint("reembed-embedded")

                def plan_for(base: IndexVersion | None) -> Plan:
                    assert base is not None
                    return _publish_plan(base, merged, kind, params, from_model, index_dir)

                report = write_version(
                    index_dir, model, options, plan_for, needs_base=True, model_change=True
                )
            except BaseException:
                workspace.give_up()
                raise
            workspace.remove()
    seconds = time.perf_counter() - started
    return dataclasses.replace(report, seconds=seconds, reused=workspace.reused)


def _check_carried_params(
    params: dict | None, kind: str, snapshot: IndexVersion, model: EmbeddingModel
) -> None:
    """Refuse, before any text is embedded, index parameters carried from the snapshot
    that the new model's dimension cannot take (an ivf-pq pq_m that does not divide
    it), saying that they were carried and how to choose others."""
    try:
        check_params(params or {}, kind, model.dim)
    except UserError as error:
        raise UserError(
            f"{error} (carried from version {snapshot.name}, whose vectors are "
            f"{snapshot.dim}-d; the model makes {model.dim}-d ones): give another "
            "--index-param pq_m, or --index-type with its own parameters"
        ) from None


def _reembed(
    snapshot: IndexVersion,
    workspace: Workspace,
    model: EmbeddingModel,
    kind: str,
    params: dict | None,
    options: BuildOptions,
) -> MergedSegment:
    """The snapshot's live rows, in order, embedded with `model` as one new segment
    (the texts a stopped run embedded taken from the workspace's cache)."""
    # named as a compaction's segment would be (it replaces the snapshot's segments
    # the same way): unique in any version that can hold it, and a Milvus row key
    name = f"c{snapshot.name}"
    indexed = indexed_keys_of(snapshot.manifest, options.index_metadata)
    writer = SegmentWriter(workspace.directory, name, model.dim, snapshot.has_labels, indexed)
    writer.refuse_untrainable(kind, params, snapshot.count)
    workspace.attach(writer, options.show_progress)
    replaces: dict[str, tuple[int, np.ndarray]] = {}
    pages: list[tuple[list, np.ndarray, int]] = []  # read, not yet written

    def texts() -> Iterator[list[str]]:
        for segment in snapshot.segments:
            moved = np.full(segment.rows, -1, dtype=np.int64)
            replaces[segment.name] = (segment.rows, moved)
            for rows in segment.records.iter_all(PAGE_ROWS, with_metadata=True):
                live = [row for row in rows if segment.is_live(row[0])]
                if live:
                    pages.append((live, moved, segment.offset))
                    yield [row[3] for row in live]

    bar = tqdm(
        total=snapshot.count,
        desc=f"re-embedding {snapshot.name}" + (" on Ray" if options.engine == "ray" else ""),
        unit="text",
        disable=not options.show_progress,
        mininterval=0.5,
    )
    with bar, embedder(model, options) as embed:
        for vectors in workspace.embedding(embed)(texts()):
            live, moved, _ = pages.pop(0)
            first = writer.count
            writer.append(
                [row[1] for row in live],
                [row[2] for row in live] if snapshot.has_labels else None,
                [row[3] for row in live],
                vectors,
                [row[4] for row in live],
            )
            moved[[local for local, *_ in live]] = np.arange(first, writer.count)
            workspace.checkpoint()
            bar.update(len(live))
            layout.checkpoint("reembed-page")
    workspace.checkpoint(force=True)  # a failed publish loses none of it
    if options.show_progress:
        print(f"building the {kind} index of {writer.count} rows...")
    entry = writer.finish(kind, params, whole_version=True)
    files = {
        path.rsplit("/", 1)[1]: described(workspace.directory, path) for path in writer.files()
    }
    return MergedSegment(entry, writer.directory, files, replaces)


def _publish_plan(
    base: IndexVersion,
    merged: MergedSegment,
    kind: str,
    params: dict | None,
    from_model: str,
    index_dir: Path,
) -> Plan:
    """Under the writer lock: the re-embedded segment in place of the snapshot's, and
    the rows written since (segments the snapshot did not have) embedded again."""
    if not merged.fits(base):
        raise UserError(
            f"{index_dir} changed while re-embedding (version {base.name} no longer holds "
            "the segments that were re-embedded: a rollback, a build --replace or a "
            "compaction); nothing was published: run siamese-index reembed again"
        )
    since = [segment for segment in base.segments if segment.name not in merged.replaces]
    drop: set[int] = set()
    ids: list[str] = []
    labels: list[str] = []
    texts: list[str] = []
    fields: list[dict] = []
    for segment in since:
        for rows in segment.records.iter_all(PAGE_ROWS, with_metadata=True):
            for local, row_id, label, text, stored in rows:
                drop.add(local + segment.offset)
                if segment.is_live(local):
                    ids.append(row_id)
                    labels.append(label or "")
                    texts.append(text)
                    fields.append(decode(stored))
    source = Table(
        texts=texts,
        labels=labels if base.has_labels else None,
        ids=ids,
        metadata=fields if any(fields) else None,
    )
    columns = Columns(text="text", label="label" if base.has_labels else None, id="id")
    extra = {
        "operation": {
            "kind": "reembed",
            "base_version": base.name,
            "from_model": from_model,
            "rows_written_since": len(ids),
        }
    }
    return Plan(
        kind,
        params,
        base.has_labels,
        _source_columns(base),
        extra,
        drop=drop,
        source=source if ids else None,
        source_columns=columns,
        merged=merged,
    )
