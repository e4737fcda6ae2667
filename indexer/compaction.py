"""`siamese-index compact`: a version's segments rewritten as one, without stopping writes.

The merge (copying the live rows, building the index of the requested type: minutes
for a large HNSW) runs outside the writer lock, from a snapshot (the version current
when it starts), into a `.compact-*` directory of its own. Only the publish takes the
writer lock, like any write: the new version is the writer's base (which may have
moved on since the snapshot) with the snapshot's segments replaced by the merged one;
rows the base deleted from them since are deleted in it too, and segments written
since are kept as they are. So readers never wait, and writers wait for a publish.
Writes made while a compaction runs merge none of the segments (they see its lock),
so only a rollback or a `build --replace` meanwhile leaves a base without the
snapshot's segments: then nothing is published, and the command says to run it again.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from siamese_search.core.errors import UserError
from siamese_search.core.model_artifact import EmbeddingModel
from siamese_search.indexer import layout
from siamese_search.indexer.build import _source_columns, carried_index_settings
from siamese_search.indexer.options import BuildOptions, BuildReport
from siamese_search.indexer.segments import SegmentEntry
from siamese_search.indexer.store import IndexVersion, open_index
from siamese_search.indexer.transaction import NothingToChange, Plan, write_version
from siamese_search.indexer.version_writer import SegmentWriter, described, indexed_keys_of


@dataclass
class MergedSegment:
    """A segment a compaction built, and which segments of its snapshot it replaces."""

    entry: SegmentEntry
    directory: Path  # the segment's own directory (under `.compact-*`)
    files: dict[str, dict]  # file name -> {"sha256", "bytes"}
    #: replaced segment name -> (its rows when merged, its row -> merged row, -1 if
    #: it was deleted in the snapshot)
    replaces: dict[str, tuple[int, np.ndarray]]

    def deleted_since(self, base: IndexVersion) -> np.ndarray | None:
        """The merged segment's rows that `base` deleted after the snapshot."""
        deleted = np.zeros(self.entry.rows, dtype=bool)
        for segment in base.segments:
            if segment.name in self.replaces and segment.deleted is not None:
                _, moved = self.replaces[segment.name]
                targets = moved[segment.deleted]
                deleted[targets[targets >= 0]] = True
        return deleted if deleted.any() else None

    def fits(self, base: IndexVersion) -> bool:
        """Whether `base` still holds every segment this one replaces, as merged."""
        held = {segment.name: segment.rows for segment in base.segments}
        return all(held.get(name) == rows for name, (rows, _) in self.replaces.items())


def compact_index(index_dir: Path, model: EmbeddingModel, options: BuildOptions) -> BuildReport:
    """A new version holding the current one's live rows as one segment (deleted rows
    gone, one index of the requested type), merged outside the writer lock."""
    index_dir = Path(index_dir)
    started = time.perf_counter()
    with layout.compaction_lock(index_dir):
        # the snapshot under the writer lock (for a moment): a write under way when the
        # compaction started has published, and every later one sees the compaction
        # running and merges none of the snapshot's segments
        with layout.writer_lock(index_dir, options.wait_seconds):
            snapshot = open_index(index_dir, model=model, load_indexes=False)
        with snapshot:
            if len(snapshot.segments) == 1 and snapshot.segments[0].deleted is None:
                return BuildReport(snapshot.name, snapshot.count, 0, 0, snapshot.kind)
            kind, params = carried_index_settings(snapshot.manifest, options)
            workspace = layout.new_compaction_dir(index_dir)
            merged = _merge(snapshot, workspace, kind, params, options)
            segments = len(snapshot.segments)
        layout.checkpoint("compact-merged")

        def plan_for(base: IndexVersion | None) -> Plan:
            assert base is not None
            if not merged.fits(base):
                raise UserError(
                    f"{index_dir} changed while compacting (version {base.name} no longer "
                    "holds the segments that were merged: another write merged them, or a "
                    "rollback); nothing was published: run siamese-index compact again"
                )
            extra = {
                "operation": {"kind": "compact", "base_version": base.name, "segments": segments}
            }
            columns = _source_columns(base)
            return Plan(kind, params, base.has_labels, columns, extra, merged=merged)

        try:
            report = write_version(index_dir, model, options, plan_for, needs_base=True)
        except NothingToChange as unchanged:
            report = unchanged.report
        finally:
            shutil.rmtree(workspace, ignore_errors=True)
    return dataclasses.replace(report, seconds=time.perf_counter() - started)


def _merge(
    snapshot: IndexVersion, workspace: Path, kind: str, params: dict | None, options: BuildOptions
) -> MergedSegment:
    """The snapshot's live rows, in order, as one new segment under `workspace`."""
    name = f"c{snapshot.name}"  # unique in any version that can hold it
    indexed = indexed_keys_of(snapshot.manifest, options.index_metadata)
    writer = SegmentWriter(workspace, name, snapshot.dim, snapshot.has_labels, indexed)
    replaces: dict[str, tuple[int, np.ndarray]] = {}
    if options.show_progress:
        print(f"compacting {len(snapshot.segments)} segments ({snapshot.count} rows)...")
    for segment in snapshot.segments:
        moved = np.full(segment.rows, -1, dtype=np.int64)
        live = np.flatnonzero(segment.live_mask) if segment.live_mask is not None else None
        first = writer.count
        writer.copy_rows(segment, segment.deleted)
        if live is None:
            moved[:] = np.arange(first, writer.count)
        else:
            moved[live] = np.arange(first, writer.count)
        replaces[segment.name] = (segment.rows, moved)
        layout.checkpoint("compact-merging")
    if options.show_progress:
        print(f"building the {kind} index of {writer.count} rows...")
    entry = writer.finish(kind, params, whole_version=True)
    files = {path.rsplit("/", 1)[1]: described(workspace, path) for path in writer.files()}
    return MergedSegment(entry, writer.directory, files, replaces)
