"""Writing an index's versions to Milvus as deltas: a write inserts its new segment's
rows and marks the rows it deletes; nothing else is copied (issue 23).

    data collection NAME_g000001   every row of every segment the index's versions list:
                                   partition s_<segment> per segment; fields key
                                   (segment, row), id, label, label_key, text,
                                   deleted_in, vector; one Milvus index (HNSW, IVF, ...)
    head collection NAME_v000007   empty; its description holds version 7's manifest and
                                   placement: data collection, partitions, timestamp
    alias NAME                  -> NAME_v000007 (moved last, atomically: `alter_alias`)

Version v sees the rows of its partitions with `deleted_in > v`. A delete upserts the
row with `deleted_in = v` (Milvus has no partial update: the row is sent again), so
every older version still sees it, and rollback to a retained version is an alias
move. Why partitions of one collection and not a collection per segment: one search
call covers every segment of a version and Milvus merges the top-k; why a deletion
field and not Milvus deletes: a deleted row must stay visible to older versions.

Versions stay linear in Milvus: a version's head exists only while its view is
right. A write onto a rolled-back version (or after a killed writer: the local
`.milvus-pending` file says a write had started) first resets rows marked by
versions after it and drops those versions' heads (`reconcile`); rolling forward to
a version whose head was dropped checks its partitions and marks and writes back
what differs. A new data collection is started when a version needs another Milvus
index (a `--replace` build with another index type, or `auto` moving to HNSW).

Versions written before segments (a whole collection each, no placement) are still
served, and the next write copies its version into a data collection once.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from siamese_search.core.atomic import write_bytes_atomic
from siamese_search.core.errors import UserError
from siamese_search.indexer import layout
from siamese_search.indexer.backends.milvus_backend import (
    _CONSISTENCY,
    _VERSION_SUFFIX,
    INSERT_ROWS,
    MAX_VARCHAR_BYTES,
    NOT_DELETED,
    MilvusTarget,
    Placement,
    _check_fits,
    _manifest_of,
    aliased_collection,
    connect,
    encode_head,
    head_of,
    index_signature,
    label_key,
    partition_keys,
    partition_name,
    row_key,
    segment_keys,
    shares_data,
)
from siamese_search.indexer.metadata import decode
from siamese_search.indexer.segments import Segment
from siamese_search.indexer.store import IndexVersion

#: in the index directory while a write to Milvus has started and not yet moved the
#: alias: the next writer reconciles Milvus before writing (listed in layout.py)
PENDING = ".milvus-pending"
_MARK_BATCH = 1_000
MAX_QUERY_ROWS = 16_384  # Milvus returns at most this many rows a query
SEAL_ROWS = 20_000  # a write inserting this many rows seals them (_seal_if_large)


class MilvusWriter:
    """Writes versions' deltas to Milvus and moves the alias (the writer's side; hold
    the index directory's writer lock)."""

    def __init__(self, target: MilvusTarget):
        self.target = target
        self.client = connect(target)
        self._ts = 0  # the newest Milvus timestamp of this writer's mutations
        self._ts_unknown = False  # a mutation whose timestamp pymilvus did not keep
        self._data_pattern = re.compile(rf"^{re.escape(target.name)}_g[0-9]{{6}}$")

    # ---- what is there -------------------------------------------------------------

    def server_version(self) -> str:
        return str(self.client.get_server_version())

    def aliased_collection(self) -> str | None:
        return aliased_collection(self.client, self.target.name)

    def heads(self) -> dict[str, str]:
        """version -> head collection, for this alias's versions in Milvus."""
        found = {}
        for collection in self.client.list_collections():
            match = _VERSION_SUFFIX.match(collection)
            if match and match["alias"] == self.target.name:
                found[match["version"]] = collection
        return found

    def placement_of(self, version: str) -> Placement | None:
        """The placement a version's head records (None: no head, or a whole-version
        collection written before segments)."""
        head = self.target.collection_for(version)
        if not self.client.has_collection(head):
            return None
        placement = head_of(self.client, head)[1]
        if placement is not None and not self.client.has_collection(placement.data):
            return None
        return placement

    def claim(self, index_id: str | None, first_version: bool) -> None:
        """Refuse to write for an index directory whose alias serves another index.

        Two directories given the same alias (the default alias is the directory's
        name, so `/srv/a/index` and `/srv/b/index` share one) would write the same
        collection names: the second one's first build dropped the collection the
        first one's servers were searching. Manifests record the index they belong
        to (`index_id`, kept by every version of a directory); an alias whose
        collection records another index, or any alias at all for a directory's
        first version, is refused. When either side was written before ids were
        recorded, a directory that already has versions is taken at its word."""
        served = self.aliased_collection()
        if served is None:
            return
        if not first_version:
            owner = _manifest_of(self.client, served).get("index_id")
            if owner is None or index_id is None or owner == index_id:
                return
        raise UserError(
            f"Milvus alias {self.target.name} already serves another index (collection "
            f"{served}); this index directory would overwrite its collections. Give this "
            "index an alias of its own with --milvus-collection NAME (or drop the other "
            "index's alias and collections in Milvus first)"
        )

    # ---- a write ---------------------------------------------------------------------

    def write_version(
        self,
        index_dir: Path,
        version: str,
        staging: Path,
        manifest: dict,
        base: Path | None,
        show_progress: bool = True,
    ) -> Placement:
        """Before the version is published here: its new segments' rows, its new
        deletions, and its head collection. The alias does not move (`published`)."""
        _mark_pending(index_dir, version)
        signature = index_signature(manifest)
        base_placement = self.placement_of(base.name) if base is not None else None
        if base_placement is not None and shares_data(base_placement.index, signature):
            data, ts = base_placement.data, base_placement.ts
            known = set(base_placement.partitions)
        else:  # a first version, a FAISS-only or whole-collection base, another index
            data, ts = self._new_data_collection(version, signature, manifest), 0
            known = set()
        staged = IndexVersion(staging, verify=False, load_indexes=False)
        try:
            new = [s for s in staged.segments if partition_name(s.name) not in known]
            bar = _progress(sum(s.rows for s in new), f"writing to Milvus {data}", show_progress)
            with bar:
                for segment in new:
                    self._write_partition(data, segment, int(version), bar)
            self._seal_if_large(data, sum(s.rows for s in new))
            fields = _fields(staged)
            for segment in staged.segments:
                if segment in new:
                    continue
                assert base is not None, "only a base's segments are known"
                newly = np.flatnonzero(_deleted(segment) & ~_deleted_in(base, segment))
                self._mark(data, segment, newly, int(version))
        finally:
            staged.close()
        placement = Placement(
            data,
            tuple(partition_name(s) for s in _segment_names(manifest, version)),
            int(version),
            self._guarantee(ts),
            signature,
            fields,
        )
        self._write_head(version, manifest, placement)
        return placement

    def published(self, version: str, index_dir: Path) -> None:
        """After the version is published here: the alias last, then pruning."""
        self.point_alias_at(version)
        _clear_pending(index_dir)
        layout.checkpoint("after-alias")
        self.prune(index_dir)

    # ---- bringing Milvus back in step with the index directory -----------------------

    def reconcile(self, index_dir: Path, show_progress: bool = True) -> None:
        """Before a write (and on rollback), under the writer lock: make Milvus serve
        the local current version, its head the newest, no row marked deleted by a
        version after it (a killed writer's, or one rolled back from)."""
        current = layout.current_version(index_dir)
        if current is None:
            self.claim(None, first_version=True)
            _clear_pending(index_dir)
            return
        manifest = layout.read_manifest(layout.version_dir(index_dir, current))
        self.claim(manifest.get("index_id"), first_version=False)
        if (manifest.get("backend") or {}).get("name") != "milvus":
            _clear_pending(index_dir)  # FAISS-only: the next write copies its successor
            return
        heads = self.heads()
        newer = [name for name in heads if name > current]
        pending = (Path(index_dir) / PENDING).exists()
        if current in heads and not newer and not pending:
            if self.aliased_collection() != heads[current]:
                self.point_alias_at(current)
            return
        stale = set(newer)  # versions after the current one lose their heads
        if current in heads:
            # the alias first: marks undone below change no view but the later versions'
            self.point_alias_at(current)
            placement = head_of(self.client, heads[current])[1]
            if placement is not None:
                self._unmark_after(placement, partition_keys(manifest, placement.partitions))
        else:
            directory = layout.version_dir(index_dir, current)
            stale |= self._rewrite_version(current, directory, manifest, heads, show_progress)
            self.point_alias_at(current)
        for name in sorted(stale):
            self._drop(heads.get(name))
        _clear_pending(index_dir)

    def _unmark_after(self, placement: Placement, keys: dict[str, tuple[int, int]]) -> None:
        """Rows of the version's partitions marked deleted by a later version: live again.
        `keys`: each partition's key range (partition_keys)."""
        newer = f"deleted_in > {placement.version} and deleted_in < {NOT_DELETED}"
        fields = ["key", "id", "label", "label_key", "text", "deleted_in", "vector"]
        if placement.index.get("metadata"):  # data collections from before have none
            fields.append("metadata")
        for part in placement.partitions:
            for found in self._rows_where(placement.data, part, newer, keys[part], fields):
                live = [{**row, "deleted_in": NOT_DELETED} for row in found]  # read back whole
                self.client.upsert(placement.data, live, partition_name=part)
                self._note_write(placement.data)

    def _rewrite_version(
        self, name: str, directory: Path, manifest: dict, heads: dict, show_progress: bool
    ) -> set[str]:
        """A version without a head (rolled forward to after its head was dropped,
        or written before segments): its partitions checked and written where they
        differ, its marks set to what it holds, and its head written. Returns the
        versions whose heads its marks made wrong (to drop once the alias moved; a
        server on one of them sees this version's deletions until it follows)."""
        version = int(name)
        signature = index_signature(manifest)
        placements = {other: head_of(self.client, head)[1] for other, head in heads.items()}
        data, ts = None, 0
        for other in sorted(placements, reverse=True):  # the newest head's data first
            placement = placements[other]
            if placement is not None and shares_data(placement.index, signature):
                if self.client.has_collection(placement.data):
                    data, ts = placement.data, placement.ts
                    break
        if data is None:
            data = self._new_data_collection(name, signature, manifest)
        invalid_from = version + 1  # heads from here on see rows as this version does not
        opened = IndexVersion(directory, verify=False, load_indexes=False)
        try:
            rows = sum(segment.rows for segment in opened.segments)
            bar = _progress(rows, f"checking Milvus {data}", show_progress)
            written = 0
            with bar:
                for segment in opened.segments:
                    if self._stored(data, segment) != segment.rows:
                        self._write_partition(data, segment, version, bar)
                        written += segment.rows
                        continue
                    oldest = self._match_marks(data, segment, version)
                    invalid_from = min(invalid_from, oldest)
                    bar.update(segment.rows)
            self._seal_if_large(data, written)
            fields = _fields(opened)
        finally:
            opened.close()
        stale = {
            other
            for other, placement in placements.items()
            if int(other) >= invalid_from
            and other != name
            and (placement is None or placement.data == data)
        }
        placement = Placement(
            data,
            tuple(partition_name(s) for s in _segment_names(manifest, name)),
            version,
            self._guarantee(ts),
            signature,
            fields,
        )
        self._write_head(name, manifest, placement)
        return stale

    def _seal_if_large(self, data: str, inserted: int) -> None:
        """After a large insert (a first copy, a merged segment), seal it: Milvus
        builds its index (HNSW, IVF) only on sealed segments, and a growing one is
        searched exactly, row by row, until it fills or idles (measured: a 1M-row
        copy left unsealed was searched at ~60 ms a query, its index built on 0
        rows). Searches stay exact while the index builds; small writes stay
        growing (a flush costs ~2.7 s here)."""
        if inserted >= SEAL_ROWS:
            self.client.flush(data)

    def _stored(self, data: str, segment: Segment) -> int:
        part = partition_name(segment.name)
        if not self.client.has_partition(data, part):
            return -1
        counted = self.client.query(
            data, output_fields=["count(*)"], partition_names=[part], consistency_level="Strong"
        )
        return int(counted[0]["count(*)"])

    def _match_marks(self, data: str, segment: Segment, version: int) -> int:
        """Set the segment's marks to this version's deletions; the oldest version
        whose marks were undone (its head no longer right), or version + 1."""
        part = partition_name(segment.name)
        marked: dict[int, int] = {}
        keys = segment_keys(segment.name, segment.rows)
        for rows in self._rows_where(data, part, f"deleted_in < {NOT_DELETED}", keys):
            marked.update((int(row["key"]), int(row["deleted_in"])) for row in rows)
        deleted = _deleted(segment)
        base_key = keys[0]
        to_mark = [
            int(local)
            for local in np.flatnonzero(deleted)
            if marked.get(base_key + int(local), NOT_DELETED) > version
        ]
        undone = [key - base_key for key in marked if not deleted[key - base_key]]
        oldest = min((marked[base_key + local] for local in undone), default=version + 1)
        self._mark(data, segment, np.asarray(to_mark, dtype=np.int64), version)
        self._mark(data, segment, np.asarray(undone, dtype=np.int64), NOT_DELETED)
        return oldest

    # ---- Milvus objects -------------------------------------------------------------

    def _new_data_collection(self, version: str, signature: dict, manifest: dict) -> str:
        """An empty, indexed, loaded data collection for the index's rows (a killed
        writer's leftover of the same name is dropped first)."""
        from pymilvus import DataType, MilvusClient

        name = f"{self.target.name}_g{version}"
        index_id = manifest.get("index_id")
        if self.client.has_collection(name):
            self._drop_leftover(name, index_id)
        described = json.dumps({"siamese_data": index_id, "index": signature})
        schema = MilvusClient.create_schema(
            auto_id=False, enable_dynamic_field=False, description=described
        )
        schema.add_field("key", DataType.INT64, is_primary=True)
        schema.add_field("id", DataType.VARCHAR, max_length=MAX_VARCHAR_BYTES)
        schema.add_field("label", DataType.VARCHAR, max_length=MAX_VARCHAR_BYTES)
        schema.add_field("label_key", DataType.INT64)
        schema.add_field("text", DataType.VARCHAR, max_length=MAX_VARCHAR_BYTES)
        schema.add_field("deleted_in", DataType.INT64)
        schema.add_field("metadata", DataType.JSON)  # the row's fields ({} for none)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(manifest["dim"]))
        self.client.create_collection(name, schema=schema, consistency_level=_CONSISTENCY)
        index_params = self.client.prepare_index_params()
        index_params.add_index(
            "vector", index_type=signature["type"], metric_type="IP", params=signature["params"]
        )
        self.client.create_index(name, index_params)
        self.client.load_collection(name)  # partitions created later are loaded with it
        return name

    def _write_partition(self, data: str, segment: Segment, version: int, bar) -> None:
        """A segment's rows as a partition of their own (written again if a killed
        writer left part of it)."""
        part = partition_name(segment.name)
        if self.client.has_partition(data, part):
            self.client.release_partitions(data, [part])
            self.client.drop_partition(data, part)
        self.client.create_partition(data, part)
        deleted = _deleted(segment)
        vectors = segment.vectors()
        for rows in segment.records.iter_all(INSERT_ROWS, with_metadata=True):
            batch = [
                _row(segment.name, local, row_id, label, text, fields, vectors[local])
                | {"deleted_in": version if deleted[local] else NOT_DELETED}
                for local, row_id, label, text, fields in rows
            ]
            self.client.insert(data, batch, partition_name=part)
            self._note_write(data)
            layout.checkpoint("milvus-inserting")
            bar.update(len(batch))

    def _mark(self, data: str, segment: Segment, local: np.ndarray, deleted_in: int) -> None:
        """Upsert the given rows of a segment with `deleted_in` (Milvus 2.3 has no
        partial update: the whole row is sent again, from the local files)."""
        if len(local) == 0:
            return
        vectors = segment.vectors()
        part = partition_name(segment.name)
        for start in range(0, len(local), _MARK_BATCH):
            chunk = [int(i) for i in local[start : start + _MARK_BATCH]]
            records = segment.records.fetch(chunk)
            fields = segment.records.metadata_of(chunk)
            batch = [
                _row(segment.name, i, *records[i], fields.get(i), vectors[i])
                | {"deleted_in": deleted_in}
                for i in chunk
            ]
            self.client.upsert(data, batch, partition_name=part)
            self._note_write(data)
            layout.checkpoint("milvus-inserting")

    def _rows_where(self, data, part, condition, keys, fields=("key", "deleted_in")):
        """The rows of a partition matching `condition` among its `keys` (segment_keys),
        a key range at a time, with Strong consistency. Not pymilvus's query iterator:
        against Milvus 2.3.5 it falls back to a client-side timestamp and missed rows
        upserted just before."""
        yield from self._rows_in_range(data, part, condition, fields, *keys)

    def _rows_in_range(self, data, part, condition, fields, low, high):
        where = f"key >= {low} and key < {high} and ({condition})"
        found = self.client.query(
            data,
            filter=where,
            output_fields=["count(*)"],
            partition_names=[part],
            consistency_level="Strong",
        )
        count = int(found[0]["count(*)"])
        if count == 0:
            return
        if count <= MAX_QUERY_ROWS:
            rows = self.client.query(
                data,
                filter=where,
                output_fields=list(fields),
                partition_names=[part],
                limit=MAX_QUERY_ROWS,
                consistency_level="Strong",
            )
            yield [dict(row) for row in rows]
            return
        middle = (low + high) // 2  # more rows than a query returns: halve the range
        yield from self._rows_in_range(data, part, condition, fields, low, middle)
        yield from self._rows_in_range(data, part, condition, fields, middle, high)

    def _note_write(self, data: str) -> None:
        """Remember the timestamp of the write just made: the version's searches
        pass it as their guarantee. pymilvus keeps each collection's last mutation
        timestamp (what its Session consistency uses); 0 when it cannot be read,
        and the version's searches then use Strong consistency."""
        try:
            from pymilvus.client import ts_utils

            address = self.client._get_connection().server_address
            stamp = ts_utils.get_collection_ts(data, address, "")
        except Exception:
            stamp = None
        if not stamp:
            self._ts_unknown = True
            return
        self._ts = max(self._ts, int(stamp))

    def _guarantee(self, since: int) -> int:
        """The timestamp a version's searches wait for: its base's and this writer's
        newest write (0, Strong consistency, when a write's is unknown)."""
        return 0 if self._ts_unknown else max(since, self._ts)

    def _write_head(self, version: str, manifest: dict, placement: Placement) -> None:
        from pymilvus import DataType, MilvusClient

        head = self.target.collection_for(version)
        if self.client.has_collection(head):
            self._drop_leftover(head, manifest.get("index_id"))
        schema = MilvusClient.create_schema(
            auto_id=False, enable_dynamic_field=False, description=encode_head(manifest, placement)
        )
        schema.add_field("key", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs one
        self.client.create_collection(head, schema=schema)

    def _drop_leftover(self, collection: str, index_id: str | None) -> None:
        """Drop a collection of a name this version needs: a killed writer's
        leftover, unless it records another index (see `claim`)."""
        try:
            described = self.client.describe_collection(collection).get("description", "")
            stored = json.loads(described)
            owner = stored.get("siamese_data") or json.loads(stored["siamese_manifest"]).get(
                "index_id"
            )
        except Exception:
            owner = None  # killed before its description was readable: a leftover
        if owner is not None and owner != index_id:
            raise UserError(
                f"Milvus collection {collection} belongs to another index; this index "
                "directory would overwrite it. Give this index an alias of its own with "
                "--milvus-collection NAME"
            )
        self.client.drop_collection(collection)

    def _drop(self, collection: str | None) -> None:
        if collection is not None and self.client.has_collection(collection):
            self.client.drop_collection(collection)

    def point_alias_at(self, version: str) -> None:
        """Move the alias to `version`'s head (a whole-version collection is loaded
        first if it was released)."""
        head = self.target.collection_for(version)
        placement = head_of(self.client, head)[1]
        self.client.load_collection(placement.data if placement else head)
        if self.aliased_collection() is None:
            self.client.create_alias(head, self.target.name)
        else:
            self.client.alter_alias(head, self.target.name)

    def prune(self, index_dir: Path) -> list[str]:
        """Drop what no retained version needs: heads of versions pruned here (never
        the aliased one), data collections no head names, partitions no head lists."""
        keep = set(layout.list_versions(index_dir))
        aliased = self.aliased_collection()
        dropped = []
        needed: dict[str, set[str]] = {}
        for name, head in self.heads().items():
            if name not in keep and head != aliased:
                self.client.drop_collection(head)
                dropped.append(head)
                continue
            try:
                placement = head_of(self.client, head)[1]
            except Exception:  # an unreadable head: keep what it may name
                return dropped
            if placement is not None:
                needed.setdefault(placement.data, set()).update(placement.partitions)
        for data in self.client.list_collections():
            if not self._data_pattern.match(data):
                continue
            if data not in needed:
                self.client.drop_collection(data)
                dropped.append(data)
                continue
            for part in self.client.list_partitions(data):
                if part != "_default" and part not in needed[data]:
                    self.client.release_partitions(data, [part])
                    self.client.drop_partition(data, part)
                    dropped.append(f"{data}/{part}")
        return dropped

    def remove_all(self, index_id: str | None) -> list[str]:
        """Drop the alias, then every collection it names versions or rows in (a dropped
        collection of a server's --collections): the alias first, so no server follows
        it to a half-removed index; what is left after a crash is found by name again.
        Refuses (UserError) an alias that serves another index than `index_id`."""
        dropped = []
        served = self.aliased_collection()
        if served is not None:
            owner = _manifest_of(self.client, served).get("index_id")
            if index_id is not None and owner is not None and owner != index_id:
                raise UserError(
                    f"Milvus alias {self.target.name} serves another index (collection "
                    f"{served}); it is left as it is"
                )
            self.client.drop_alias(self.target.name)
            dropped.append(f"alias {self.target.name}")
        for head in self.heads().values():
            self.client.drop_collection(head)
            dropped.append(head)
        for data in self.client.list_collections():
            if self._data_pattern.match(data):
                self.client.drop_collection(data)
                dropped.append(data)
        return dropped

    def close(self) -> None:
        self.client.close()


# ---- helpers ------------------------------------------------------------------------


def _row(
    segment: str, local: int, row_id: str, label, text: str, fields: str | None, vector
) -> dict:
    """A data collection row; `fields`: the stored metadata JSON (None: none)."""
    _check_fits(row_id, "id")
    _check_fits(text, "text", row_id)
    return {
        "key": row_key(segment, local),
        "id": row_id,
        "label": label or "",
        "label_key": label_key(label),
        "text": text,
        "metadata": decode(fields),
        "vector": np.asarray(vector, dtype=np.float32).tolist(),
    }


def _fields(version: IndexVersion) -> dict[str, list[str]]:
    """The metadata fields a version holds and their kinds, for its placement."""
    return {key: sorted(kinds) for key, kinds in sorted(version.metadata_keys().items())}


def _segment_names(manifest: dict, version: str) -> list[str]:
    """The segments a version lists (a version written before segments: one, named
    after the version)."""
    from siamese_search.indexer.segments import entries_of

    return [entry.name for entry in entries_of(manifest, version)]


def _deleted(segment: Segment) -> np.ndarray:
    if segment.deleted is None:
        return np.zeros(segment.rows, dtype=bool)
    return segment.deleted


def _deleted_in(base: Path, segment: Segment) -> np.ndarray:
    """The base version's deletions of a segment it shares with the new version."""
    from siamese_search.indexer.segments import DELETED_FILE, read_deleted, segment_path

    directory = Path(base) / segment_path(segment.name)
    if not (directory / DELETED_FILE).exists():
        return np.zeros(segment.rows, dtype=bool)
    return read_deleted(directory, segment.rows)


def _progress(total: int, desc: str, show: bool):
    return tqdm(total=total, desc=desc, unit="row", disable=not show, mininterval=0.5)


def _mark_pending(index_dir: Path, version: str) -> None:
    write_bytes_atomic(Path(index_dir) / PENDING, (version + "\n").encode("ascii"))


def _clear_pending(index_dir: Path) -> None:
    (Path(index_dir) / PENDING).unlink(missing_ok=True)
