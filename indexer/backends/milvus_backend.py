"""Milvus backend, the reading side: where an index lives in Milvus, and the versions
`siamese-serve` searches there (the writing side: `milvus_writer.py`).

    alias NAME            -> NAME_v000007   (a version's head: its manifest, and where
                                             its rows are: a Placement)
    data collection NAME_g000001            the rows; version 7 searches its partitions
                                            with `deleted_in > 7`

Vectors, ids, labels and texts live in Milvus, so `siamese-serve` replicas on other
machines serve one index with nothing local: they follow the alias, read the manifest
from the head, and search the data collection (label filter and `min_score` run in
Milvus, as a `label_key in [...]` filter and a range search). Searches pass the
version's recorded write timestamp as their guarantee, so a replica never searches a
version before its rows are visible. Versions written before segments are a whole
collection each (no placement) and are still served.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from siamese_search.core.errors import ArtifactMismatchError, UserError
from siamese_search.indexer import layout
from siamese_search.indexer.backends.milvus_filters import FALSE, expression
from siamese_search.indexer.metadata import Filter, parse_filter
from siamese_search.indexer.segments import entries_of

if TYPE_CHECKING:
    from siamese_search.indexer.store import StoredRow

log = logging.getLogger("siamese.milvus")

#: the Milvus server versions this backend was tested against (README)
TESTED_SERVER_VERSIONS = ("2.3.5",)
MAX_VARCHAR_BYTES = 65_535  # Milvus VARCHAR's limit
MAX_TOP_K = 16_384  # Milvus's top-k limit
INSERT_ROWS = 2_000
_QUERY_ROWS = 16_384  # Milvus returns at most this many rows a query
_QUERY_IN = 1_000  # keys or ids named in one query's `in [...]`
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")
_VERSION_SUFFIX = re.compile(r"^(?P<alias>.+)_v(?P<version>[0-9]{6})$")
_CONSISTENCY = "Bounded"


@dataclass(frozen=True)
class MilvusTarget:
    """Where an index lives in Milvus: a server and the alias that names the index.

    `uri`: http://host:19530, or https://... for TLS (`ca_cert` for a private CA);
    the token (user:password, or an API key) comes from $SIAMESE_MILVUS_TOKEN so it
    never shows in a process list.
    """

    uri: str
    name: str
    token: str | None = None
    ca_cert: Path | None = None

    def __post_init__(self) -> None:
        if not re.match(r"^(https?|tcp|grpcs?)://[^/\s]+", self.uri or ""):
            raise UserError(
                f"--milvus-uri {self.uri!r}: expected http://HOST:PORT (or https://HOST:PORT "
                "for TLS), e.g. http://127.0.0.1:19530"
            )
        if not _NAME.match(self.name or ""):
            raise UserError(
                f"--milvus-collection {self.name!r}: Milvus names are letters, digits and "
                "underscores, starting with a letter or underscore"
            )
        if self.ca_cert is not None and not Path(self.ca_cert).is_file():
            raise UserError(f"--milvus-ca-cert {self.ca_cert}: no such file")

    def collection_for(self, version: str) -> str:
        return f"{self.name}_v{version}"

    def describe(self) -> str:
        """For messages and GetInfo: the server and alias, never the token."""
        host = re.sub(r"//[^@/]*@", "//", self.uri)
        return f"milvus {host} alias {self.name}"


def default_name(index_dir: Path) -> str:
    """The alias an index directory gets when --milvus-collection is not given."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", Path(index_dir).absolute().name)
    return name if _NAME.match(name) else f"index_{name}"[:200]


def connect(target: MilvusTarget):
    """A MilvusClient for the target, or a UserError that says what to fix."""
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise UserError(
            "the Milvus backend needs pymilvus: pip install 'siamese-search[milvus]'"
        ) from None
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # we report errors ourselves
    options: dict = {"uri": target.uri, "timeout": 30}
    if target.token:
        options["token"] = target.token
    if target.ca_cert is not None:
        options["server_pem_path"] = str(target.ca_cert)
    try:
        return MilvusClient(**options)
    except Exception as error:
        raise UserError(
            f"cannot reach {target.describe()}: {_short(error)}. Is Milvus running there "
            "(and the token in $SIAMESE_MILVUS_TOKEN right)?"
        ) from None


def _short(error: Exception) -> str:
    message = getattr(error, "message", None) or str(error)
    return message if len(message) < 300 else message[:300] + "..."


def aliased_collection(client, alias: str) -> str | None:
    """The collection `alias` names; None only when Milvus says the alias does not
    exist. Any other failure is an error: a writer that took an unreadable alias for
    a missing one would create it again, and its pruning would no longer know which
    collection is being served."""
    try:
        return str(client.describe_alias(alias)["collection_name"])
    except Exception as error:
        message = _short(error)
        if "does not exist" in message or "not found" in message.lower():
            return None
        raise UserError(f"cannot read alias {alias}: {message}") from None


# ---- index parameters ---------------------------------------------------------------


def milvus_index(kind: str, params: dict) -> tuple[str, dict, dict]:
    """(Milvus index type, build params, search params) for one of our index kinds,
    with the same parameters the FAISS index of the version was built with."""
    if kind == "flat":
        return "FLAT", {}, {}
    if kind == "hnsw":
        return (
            "HNSW",
            {"M": int(params["M"]), "efConstruction": int(params["ef_construction"])},
            {"ef": int(params["ef_search"])},
        )
    ivf = {"nlist": int(params["nlist"])}
    search = {"nprobe": int(params["nprobe"])}
    if kind == "ivf":
        return "IVF_FLAT", ivf, search
    if kind == "ivf-sq8":
        return "IVF_SQ8", ivf, search
    if kind == "ivf-pq":
        return "IVF_PQ", {**ivf, "m": int(params["pq_m"]), "nbits": int(params["pq_bits"])}, search
    raise UserError(f"index kind {kind!r} has no Milvus counterpart")


# ---- a version's head: its manifest and where its rows are -----------------------------

#: `deleted_in` of a row no version has deleted
NOT_DELETED = 2**62


@dataclass(frozen=True)
class Placement:
    """Where a version's rows are in Milvus (recorded in its head collection).

    `data`: the index's data collection; `partitions`: one per segment the version
    lists; the version sees a row of those partitions while `deleted_in > version`.
    `ts`: the Milvus timestamp of the last write the version needs, passed to
    searches as their guarantee (read-your-writes for every client; Bounded
    consistency would hide rows written in the last seconds). `index`: the Milvus
    index of the data collection (versions share it only with the same one).
    `fields`: the metadata fields the version's rows hold and their value kinds
    (what filters are checked against, as the FAISS backend reads its records)."""

    data: str
    partitions: tuple[str, ...]
    version: int
    ts: int
    index: dict
    fields: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "data": self.data,
            "partitions": list(self.partitions),
            "version": self.version,
            "ts": self.ts,
            "index": self.index,
            "fields": self.fields,
        }

    @classmethod
    def from_json(cls, stored: dict) -> Placement:
        return cls(
            str(stored["data"]),
            tuple(str(p) for p in stored["partitions"]),
            int(stored["version"]),
            int(stored["ts"]),
            dict(stored["index"]),
            {str(k): [str(kind) for kind in v] for k, v in stored.get("fields", {}).items()},
        )


def index_signature(manifest: dict) -> dict:
    """The data collection a version's rows need: its Milvus index (type, build
    parameters) and the model that embedded them (a re-embedded version changes
    every vector: it gets a data collection of its own; shares_data), and that it
    has a `metadata` field (data collections written before metadata have none)."""
    index_type, build_params, _ = milvus_index(
        manifest["index"]["type"], manifest["index"]["params"]
    )
    return {
        "type": index_type,
        "params": build_params,
        "model": manifest["model"]["fingerprint"],
        "metadata": True,
    }


def shares_data(held: dict, needed: dict) -> bool:
    """Whether a version of signature `needed` can be written into a data collection
    of signature `held`. Signatures written before they named the model have none: the
    model was the base's then (every write checks it), so they match any."""
    same_index = (held.get("type"), held.get("params")) == (needed["type"], needed["params"])
    same_fields = held.get("metadata", False) == needed["metadata"]
    return same_index and same_fields and held.get("model", needed["model"]) == needed["model"]


def partition_name(segment: str) -> str:
    return f"s_{segment}"


def segment_number(segment: str) -> int:
    """A segment's number among the index's segments: a write's segment is named
    after its version (000007), a compaction's after its snapshot (c000007)."""
    merged = segment.startswith("c")
    digits = segment[1:] if merged else segment
    if not digits.isdigit():
        raise ArtifactMismatchError(f"segment name {segment!r} is not one this release writes")
    return int(digits) * 2 + (1 if merged else 0)


#: the keys one segment's rows may take (row_key: the segment's number above 32 bits)
KEY_SPAN = 1 << 32


def row_key(segment: str, local: int) -> int:
    """A row's primary key in the data collection: its segment and row there, the
    same in every version that lists the segment."""
    return (segment_number(segment) << 32) | int(local)


def segment_keys(segment: str, rows: int) -> tuple[int, int]:
    """The keys [first, first + rows) of a segment's rows: dense from its first, so a
    range larger than one query returns is halved a few times when it is read, not
    from 2^32 down (~15 more count queries at 100,000 rows)."""
    first = row_key(segment, 0)
    return first, first + rows


def partition_keys(manifest: dict, partitions: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Each partition's key range (segment_keys), its rows from the version's
    manifest; KEY_SPAN, every key its segment may take, for one the manifest does not
    list."""
    rows = {partition_name(entry.name): entry.rows for entry in entries_of(manifest, "")}
    return {
        part: segment_keys(part.removeprefix("s_"), rows.get(part, KEY_SPAN)) for part in partitions
    }


def label_key(label: str | None) -> int:
    """A label as an INT64 for filters (`label_key in [...]`): a hash, so a label
    needs no quoting in a Milvus expression and keeps its key in every version."""
    digest = hashlib.sha256((label or "").encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def encode_head(manifest: dict, placement: Placement | None = None) -> str:
    """A collection description: the manifest (and the placement), with a checksum."""
    body = json.dumps(manifest, sort_keys=True, ensure_ascii=True)
    stored: dict = {"siamese_manifest": body}
    checked = body
    if placement is not None:
        stored["placement"] = json.dumps(placement.to_json(), sort_keys=True)
        checked += stored["placement"]
    stored["sha256"] = hashlib.sha256(checked.encode("ascii")).hexdigest()
    return json.dumps(stored)


def _decode_head(description: str, collection: str) -> tuple[dict, Placement | None]:
    try:
        stored = json.loads(description)
        body = stored["siamese_manifest"]
        placement = stored.get("placement")
        checked = body + (placement or "")
        if hashlib.sha256(checked.encode("ascii")).hexdigest() != stored["sha256"]:
            raise ValueError("checksum mismatch")
        return json.loads(body), (Placement.from_json(json.loads(placement)) if placement else None)
    except (ValueError, KeyError, TypeError, UnicodeEncodeError) as error:
        raise ArtifactMismatchError(
            f"Milvus collection {collection} holds no readable siamese-search manifest "
            f"({error}); it was not written by siamese-index, or was changed: rebuild it"
        ) from None


def head_of(client, collection: str) -> tuple[dict, Placement | None]:
    """A version's manifest and placement, read from its head collection's
    description and checked (placement None: a whole-version collection, as versions
    were written before segments)."""
    try:
        described = client.describe_collection(collection)
    except Exception as error:
        raise UserError(f"Milvus collection {collection}: {_short(error)}") from None
    return _decode_head(described.get("description", ""), collection)


def _manifest_of(client, collection: str) -> dict:
    return head_of(client, collection)[0]


def _check_fits(value: str, what: str, row_id: str | None = None) -> None:
    size = len(value.encode("utf-8"))
    if size > MAX_VARCHAR_BYTES:
        where = f" of id {row_id!r}" if row_id is not None else f" {value[:40]!r}..."
        raise UserError(
            f"the {what}{where} is {size:,} bytes in UTF-8; a Milvus VARCHAR holds at most "
            f"{MAX_VARCHAR_BYTES:,}. Shorten it, or use the FAISS backend"
        )


# ---- reading (what siamese-serve searches) ------------------------------------------------


class MilvusVersion:
    """One version's collection, open for searching: the same interface as the FAISS
    backend's `IndexVersion` (search with top-k, label filter and min_score)."""

    def __init__(self, client, target: MilvusTarget, collection: str):
        from siamese_search.indexer.store import LabelFilter

        self._client = client
        self.collection = collection
        self.directory = Path(target.describe())
        self.manifest, self.placement = head_of(client, collection)
        backend = self.manifest.get("backend") or {}
        suffix = _VERSION_SUFFIX.match(collection)
        self.name = str(backend.get("version") or (suffix["version"] if suffix else collection))
        self.count = int(self.manifest["count"])
        self.dim = int(self.manifest["dim"])
        self.kind = self.manifest["index"]["type"]
        _, _, self._search_params = milvus_index(self.kind, self.manifest["index"]["params"])
        label_info = self.manifest.get("labels")
        self.label_names: list[str] = list(label_info["names"]) if label_info else []
        self._filter = LabelFilter(self.label_names, has_labels=label_info is not None)
        stored = self._stored_rows()
        if stored != self.count:
            raise ArtifactMismatchError(
                f"Milvus collection {self._searched} holds {stored} rows of version "
                f"{self.name}, its manifest says {self.count}; the version is damaged: "
                "rebuild it"
            )

    @property
    def _searched(self) -> str:
        return self.placement.data if self.placement else self.collection

    def _consistency(self) -> dict:
        """Searches see every write the version needs: its recorded timestamp as the
        guarantee (Strong when none was recorded: slower, never stale)."""
        if self.placement is None:  # a whole-version collection never changes
            return {"consistency_level": _CONSISTENCY}
        if self.placement.ts:
            return {"consistency_level": "Customized", "guarantee_timestamp": self.placement.ts}
        return {"consistency_level": "Strong"}

    def _scope(self) -> dict:
        """The partitions and filter that make the data collection this version."""
        if self.placement is None:
            return {}
        return {
            "partition_names": list(self.placement.partitions),
            "filter": f"deleted_in > {self.placement.version}",
        }

    def _stored_rows(self) -> int:
        if self.placement is None:
            self._client.load_collection(self.collection)  # a no-op when loaded
            return int(self._client.get_collection_stats(self.collection)["row_count"])
        if not self.placement.partitions:
            return 0
        self._client.load_collection(self.placement.data)  # a replica may be first
        counted = self._client.query(
            self.placement.data, output_fields=["count(*)"], **self._scope(), **self._consistency()
        )
        return int(counted[0]["count(*)"])

    def _label_filter(self, labels: Sequence[str]) -> str:
        codes = self._filter.codes(labels)  # refuses unknown labels
        if self.placement is None:
            return f"label_code in {sorted(codes)}"
        keys = sorted(label_key(self.label_names[code]) for code in codes)
        return f"label_key in {keys}"

    @property
    def has_labels(self) -> bool:
        return self._filter.has_labels

    @property
    def model_fingerprint(self) -> str:
        return self.manifest["model"]["fingerprint"]

    def check_model(self, model) -> None:
        from siamese_search.indexer.store import check_model_matches

        check_model_matches(self.manifest, self.name, str(self.directory), model)

    # ---- filters (indexer.metadata's checked filters, as Milvus expressions) -----------

    def metadata_keys(self) -> dict[str, set[str]]:
        """The metadata fields the version's rows hold (recorded in its placement)."""
        fields = self.placement.fields if self.placement is not None else {}
        return {key: set(kinds) for key, kinds in fields.items()}

    def parse_filter(self, spec: dict | None) -> Filter | None:
        """A filter checked against the version's fields, as the FAISS backend checks
        it (FilterError says what to fix); None for no filter."""
        if not spec:
            return None
        return parse_filter(spec, self.metadata_keys())

    def _labels_expression(self, labels: Sequence[str]) -> str:
        """Rows holding one of `labels` (a label the version lacks matches none)."""
        if self.placement is not None:
            return f"label_key in {sorted(label_key(label) for label in labels)}"
        codes = sorted(self.label_names.index(x) for x in labels if x in self.label_names)
        return f"label_code in {codes}" if codes else FALSE

    def _where(self, *conditions: str) -> dict:
        """The search / query scope: the version's partitions, and its filter with
        these conditions."""
        scope = self._scope()
        joined = [c for c in (scope.get("filter", ""), *conditions) if c]
        scope["filter"] = " and ".join(f"({c})" for c in joined)
        return scope

    @property
    def _fields(self) -> list[str]:
        held = self.placement is not None and self.placement.index.get("metadata")
        return ["id", "label", "text", *(["metadata"] if held else [])]

    @property
    def _key(self) -> str:
        return "key" if self.placement is not None else "position"

    # ---- searching ----------------------------------------------------------------------

    def search(
        self,
        vectors: np.ndarray,
        k: int,
        labels: Sequence[str] = (),
        min_score: float = -1.0,
        where: Filter | None = None,
        exclude: Sequence[int] = (),
    ):
        """Top-k per query among the rows with one of `labels` passing `where`, but the
        rows whose keys are in `exclude` (search by an existing row)."""
        from siamese_search.indexer.store import BackendUnavailableError, Hit

        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if vectors.shape[1] != self.dim:
            raise UserError(f"query vectors have dim {vectors.shape[1]}, the index {self.dim}")
        label_filter = self._label_filter(labels) if labels else ""
        if self.count == 0 or len(vectors) == 0:
            return [[] for _ in range(len(vectors))]
        k = max(1, min(int(k), self.count))
        if k > MAX_TOP_K:
            raise UserError(f"k={k}: Milvus returns at most {MAX_TOP_K} neighbours a query")
        params = dict(self._search_params)
        if "ef" in params:
            params["ef"] = max(params["ef"], k)  # HNSW needs ef >= k
        if min_score > -1.0:  # a range search: only hits above the radius come back
            params["radius"] = float(min_score) - 1e-6
            params["range_filter"] = max(1.0, float(min_score)) + 1e-3  # must exceed radius
        left_out = f"{self._key} not in {sorted(int(p) for p in exclude)}" if exclude else ""
        scope = self._where(label_filter, self._expression(where), left_out)
        try:
            found = self._client.search(
                self._searched,
                data=vectors.tolist(),
                limit=k,
                anns_field="vector",
                search_params={"metric_type": "IP", "params": params},
                output_fields=self._fields,
                **scope,
                **self._consistency(),
            )
        except Exception as error:  # Milvus down, collection dropped under us, ...
            raise BackendUnavailableError(
                f"Milvus search of {self._searched} failed: {_short(error)}"
            ) from None
        results = []
        for row in found:
            hits = []
            for hit in row:
                score = float(hit["distance"])
                if score < min_score:  # the radius is a hair below min_score
                    continue
                entity = hit["entity"]
                hits.append(
                    Hit(
                        entity["id"],
                        entity["label"],
                        entity["text"],
                        score,
                        int(hit["id"]),
                        dict(entity.get("metadata") or {}),
                    )
                )
            hits.sort(key=lambda h: -h.score)
            results.append(hits)
        return results

    def _expression(self, where: Filter | None) -> str:
        return expression(where.clauses, self._labels_expression) if where is not None else ""

    # ---- reading rows back: Get, Scroll, search by id -----------------------------------

    def _query(self, condition: str, fields: list[str], limit: int | None = None) -> list[dict]:
        from siamese_search.indexer.store import BackendUnavailableError

        options = {"limit": limit} if limit is not None else {}
        try:
            return self._client.query(
                self._searched,
                output_fields=fields,
                **self._where(condition),
                **options,
                **self._consistency(),
            )
        except Exception as error:
            raise BackendUnavailableError(
                f"Milvus query of {self._searched} failed: {_short(error)}"
            ) from None

    def positions_of(self, ids: Sequence[str]) -> dict[str, int]:
        """id -> the row's key, for the live rows with these ids."""
        found: dict[str, int] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), _QUERY_IN):
            chunk = unique[start : start + _QUERY_IN]
            listed = ", ".join(json.dumps(i, ensure_ascii=False) for i in chunk)
            for row in self._query(f"id in [{listed}]", ["id", self._key]):
                found[row["id"]] = int(row[self._key])
        return found

    def vectors_at(self, positions: np.ndarray) -> np.ndarray:
        """The stored vectors of these rows (by key), in order."""
        keys = [int(p) for p in np.asarray(positions).ravel()]
        rows = {int(r[self._key]): r["vector"] for r in self._rows_by_key(keys, ["vector"])}
        return np.asarray([rows[key] for key in keys], dtype=np.float32).reshape(-1, self.dim)

    def _rows_by_key(self, keys: list[int], fields: list[str]) -> list[dict]:
        rows: list[dict] = []
        for start in range(0, len(keys), _QUERY_IN):
            chunk = sorted(set(keys[start : start + _QUERY_IN]))
            rows += self._query(f"{self._key} in {chunk}", [self._key, *fields])
        return rows

    def get(self, ids: Sequence[str]) -> list[StoredRow]:
        from siamese_search.indexer.store import rows_of_ids

        return rows_of_ids(self, ids)

    def scroll(
        self, where: Filter | None, limit: int, after: int = -1
    ) -> tuple[list[StoredRow], int | None]:
        """Up to `limit` live rows passing `where`, in key order, from the key after
        `after`; and the last key given when more may follow (None: done). Milvus
        queries return rows in no set order, so the smallest keys are found by
        counting: a key range holding more rows than one query returns is halved."""
        condition = self._expression(where)
        keys: list[int] = []
        for low, high in self._key_ranges():
            if high <= after + 1 or len(keys) > limit:
                continue
            keys += self._first_keys(condition, max(low, after + 1), high, limit + 1 - len(keys))
        more = len(keys) > limit
        rows = self.rows_at(keys[:limit])
        return rows, (rows[-1].position if more and rows else None)

    def _key_ranges(self) -> list[tuple[int, int]]:
        """The key ranges the version's rows lie in, in order: one per segment, as wide
        as its rows (partition_keys)."""
        if self.placement is None:  # a whole-version collection: keys are positions
            return [(0, max(self.count, 1))]
        return sorted(partition_keys(self.manifest, self.placement.partitions).values())

    def _first_keys(self, condition: str, low: int, high: int, want: int) -> list[int]:
        """The `want` smallest keys in [low, high) of the rows passing `condition`."""
        within = f"{self._key} >= {low} and {self._key} < {high}"
        test = f"{within} and ({condition})" if condition else within
        counted = self._query(test, ["count(*)"])
        count = int(counted[0]["count(*)"]) if counted else 0
        if count == 0:
            return []
        if count <= _QUERY_ROWS:
            found = sorted(int(r[self._key]) for r in self._query(test, [self._key], _QUERY_ROWS))
            return found[:want]
        middle = low + (high - low) // 2
        keys = self._first_keys(condition, low, middle, want)
        if len(keys) < want:
            keys += self._first_keys(condition, middle, high, want - len(keys))
        return keys

    def rows_at(self, keys: list[int]) -> list[StoredRow]:
        """The live rows with these keys, in that order."""
        from siamese_search.indexer.store import StoredRow

        rows = {int(r[self._key]): r for r in self._rows_by_key(keys, self._fields)}
        return [
            StoredRow(
                rows[k]["id"],
                rows[k]["label"],
                rows[k]["text"],
                dict(rows[k].get("metadata") or {}),
                k,
            )
            for k in keys
            if k in rows
        ]

    def close(self) -> None:
        """Nothing to release: the collection stays loaded for the other replicas."""

    def __enter__(self) -> MilvusVersion:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class MilvusSource:
    """Where a server finds the current version: the alias, polled for moves.

    `index_dir`: the index directory whose writer moves the alias, where this server
    has it (it takes the writes, or shares the file system): a version's head is kept
    while that directory retains the version (MilvusWriter.prune), so holding the
    directory's version holds the head (hold_version)."""

    def __init__(self, target: MilvusTarget, index_dir: Path | None = None):
        self.target = target
        self.index_dir = index_dir
        self.location = target.describe()
        self._client = connect(target)

    def current_name(self) -> str | None:
        collection = aliased_collection(self._client, self.target.name)
        if collection is None:
            return None
        match = _VERSION_SUFFIX.match(collection)
        if not match or match["alias"] != self.target.name:
            raise UserError(
                f"alias {self.target.name} names collection {collection}, which is not one of "
                f"its versions ({self.target.name}_vNNNNNN); point it back with "
                "siamese-index rollback --backend milvus"
            )
        return match["version"]

    def _current_collection(self) -> str:
        name = self.current_name()
        if name is None:
            raise UserError(
                f"{self.location} holds no index version yet (no alias); build one with "
                "siamese-index build --backend milvus"
            )
        return self.target.collection_for(name)

    def open_current(self) -> MilvusVersion:
        return MilvusVersion(self._client, self.target, self._current_collection())

    def open_version(self, name: str) -> MilvusVersion:
        from siamese_search.indexer.store import VersionGone

        collection = self.target.collection_for(name)
        if not self._client.has_collection(collection):
            raise VersionGone(f"{self.location} does not hold version {name}")
        return MilvusVersion(self._client, self.target, collection)

    def retained_versions(self) -> list[str]:
        """Not listed for Milvus (its heads are its writer's to reconcile)."""
        return []

    def hold_version(self, name: str) -> IO | None:
        """A hold on the index directory's version, which keeps its head too; None
        without the directory (a reader of the alias alone cannot hold a version)."""
        if self.index_dir is None:
            return None
        try:
            return layout.hold_version(layout.version_dir(self.index_dir, name))
        except FileNotFoundError:
            return None  # not retained there: the next page says whether the head is

    def model_directory(self) -> Path:
        """From the current version's manifest alone (no load, no row count)."""
        manifest = _manifest_of(self._client, self._current_collection())
        return Path(manifest["model"]["directory"])
