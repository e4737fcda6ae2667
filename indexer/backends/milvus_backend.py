"""Milvus backend: each index version is a Milvus collection, the live one an alias.

    alias NAME            -> NAME_v000003      (switched atomically by `alter_alias`)
    collection NAME_v000003: position (primary key), id, label, label_code, text, vector
                             description = the version's manifest (JSON) + its sha256

Vectors, ids, labels and texts live in Milvus, so `siamese-serve` replicas on other
machines serve one index with nothing local: they follow the alias, read the manifest
from the collection, and search it (label filter and `min_score` run in Milvus, as a
`label_code in [...]` filter and a range search). The writer still stages each
version as files (its own copy, what `add` and `delete` build on and `rollback`
returns to), then copies it into a new collection, loads it, publishes the local
version and moves the alias last: a killed writer leaves the alias where it was, and
the next writer first re-points the alias at the local current version (the
`reconcile` step), so the two never stay apart.

A version's collection never changes once the alias can name it, so searches use
Bounded consistency (Strong costs ~200 ms a call waiting for a time tick).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from siamese_search.core.errors import ArtifactMismatchError, UserError

log = logging.getLogger("siamese.milvus")

#: the Milvus server versions this backend was tested against (README)
TESTED_SERVER_VERSIONS = ("2.3.5",)
MAX_VARCHAR_BYTES = 65_535  # Milvus VARCHAR's limit
MAX_TOP_K = 16_384  # Milvus's top-k limit
INSERT_ROWS = 2_000
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


# ---- the manifest, stored with the collection -----------------------------------------


def _encode_manifest(manifest: dict) -> str:
    body = json.dumps(manifest, sort_keys=True, ensure_ascii=True)
    digest = hashlib.sha256(body.encode("ascii")).hexdigest()
    return json.dumps({"siamese_manifest": body, "sha256": digest})


def _decode_manifest(description: str, collection: str) -> dict:
    try:
        stored = json.loads(description)
        body = stored["siamese_manifest"]
        if hashlib.sha256(body.encode("ascii")).hexdigest() != stored["sha256"]:
            raise ValueError("checksum mismatch")
        return json.loads(body)
    except (ValueError, KeyError, TypeError, UnicodeEncodeError) as error:
        raise ArtifactMismatchError(
            f"Milvus collection {collection} holds no readable siamese-search manifest "
            f"({error}); it was not written by siamese-index, or was changed: rebuild it"
        ) from None


def _manifest_of(client, collection: str) -> dict:
    """A version's manifest, read from its collection's description and checked."""
    try:
        described = client.describe_collection(collection)
    except Exception as error:
        raise UserError(f"Milvus collection {collection}: {_short(error)}") from None
    return _decode_manifest(described.get("description", ""), collection)


# ---- writing -----------------------------------------------------------------------


class MilvusWriter:
    """Copies staged versions into collections and moves the alias (the writer's side)."""

    def __init__(self, target: MilvusTarget):
        self.target = target
        self.client = connect(target)

    def server_version(self) -> str:
        return str(self.client.get_server_version())

    def aliased_collection(self) -> str | None:
        return aliased_collection(self.client, self.target.name)

    def has_version(self, version: str) -> bool:
        return self.client.has_collection(self.target.collection_for(version))

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

    def write_version(
        self, version: str, directory: Path, manifest: dict, show_progress: bool = True
    ) -> str:
        """A new collection holding the staged version in `directory`, indexed and
        loaded; a leftover of the same name (a killed writer's) is dropped first."""
        from pymilvus import DataType, MilvusClient

        from siamese_search.indexer import layout
        from siamese_search.indexer.store import IndexVersion

        collection = self.target.collection_for(version)
        if self.client.has_collection(collection):
            self._drop_leftover(collection, manifest.get("index_id"))
        index_type, build_params, _ = milvus_index(
            manifest["index"]["type"], manifest["index"]["params"]
        )
        schema = MilvusClient.create_schema(
            auto_id=False, enable_dynamic_field=False, description=_encode_manifest(manifest)
        )
        schema.add_field("position", DataType.INT64, is_primary=True)
        schema.add_field("id", DataType.VARCHAR, max_length=MAX_VARCHAR_BYTES)
        schema.add_field("label", DataType.VARCHAR, max_length=MAX_VARCHAR_BYTES)
        schema.add_field("label_code", DataType.INT32)
        schema.add_field("text", DataType.VARCHAR, max_length=MAX_VARCHAR_BYTES)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(manifest["dim"]))
        self.client.create_collection(collection, schema=schema, consistency_level=_CONSISTENCY)
        count = int(manifest["count"])
        label_names = (manifest.get("labels") or {}).get("names") or []
        code_of = {name: code for code, name in enumerate(label_names)}  # MilvusVersion's
        staged = IndexVersion(directory, verify=False, load_indexes=False)
        bar = tqdm(
            total=count,
            desc=f"copying to Milvus {collection}",
            unit="row",
            disable=not show_progress,
            mininterval=0.5,
        )
        try:
            with bar:
                for rows in staged.records().iter_all(INSERT_ROWS):
                    positions = np.fromiter((row[0] for row in rows), np.int64, len(rows))
                    vectors = staged.vectors_at(positions)
                    batch = []
                    for (position, row_id, label, text), vector in zip(rows, vectors, strict=True):
                        _check_fits(row_id, "id")
                        _check_fits(text, "text", row_id)
                        batch.append(
                            {
                                "position": int(position),
                                "id": row_id,
                                "label": label or "",
                                "label_code": code_of.get(label or "", -1),
                                "text": text,
                                "vector": vector.tolist(),
                            }
                        )
                    self.client.insert(collection, batch)
                    layout.checkpoint("milvus-inserting")
                    bar.update(len(batch))
        finally:
            staged.close()
        self.client.flush(collection)
        index_params = self.client.prepare_index_params()
        index_params.add_index(
            "vector", index_type=index_type, metric_type="IP", params=build_params
        )
        self.client.create_index(collection, index_params)
        self.client.load_collection(collection)
        stored = int(self.client.get_collection_stats(collection)["row_count"])
        if stored != count:
            raise ArtifactMismatchError(
                f"Milvus collection {collection} holds {stored} rows after the copy, the "
                f"version {count}; nothing was published: run the job again"
            )
        return collection

    def _drop_leftover(self, collection: str, index_id: str | None) -> None:
        """Drop a collection of the name this version needs: a killed writer's
        leftover, unless it records another index (see `claim`)."""
        try:
            owner = _manifest_of(self.client, collection).get("index_id")
        except UserError:
            owner = None  # killed before its description was readable: a leftover
        if owner is not None and owner != index_id:
            raise UserError(
                f"Milvus collection {collection} belongs to another index; this index "
                "directory would overwrite it. Give this index an alias of its own with "
                "--milvus-collection NAME"
            )
        self.client.drop_collection(collection)

    def point_alias_at(self, version: str) -> None:
        """Move the alias to `version`'s collection (loading it if it was released)."""
        collection = self.target.collection_for(version)
        self.client.load_collection(collection)
        if self.aliased_collection() is None:
            self.client.create_alias(collection, self.target.name)
        else:
            self.client.alter_alias(collection, self.target.name)

    def prune(self, keep: Sequence[str]) -> list[str]:
        """Drop this index's version collections not in `keep` (never the aliased one)."""
        aliased = self.aliased_collection()
        dropped = []
        for collection in self.client.list_collections():
            match = _VERSION_SUFFIX.match(collection)
            if not match or match["alias"] != self.target.name or collection == aliased:
                continue
            if match["version"] not in keep:
                self.client.drop_collection(collection)
                dropped.append(collection)
        return dropped

    def close(self) -> None:
        self.client.close()


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
        self.manifest = _manifest_of(client, collection)
        backend = self.manifest.get("backend") or {}
        suffix = _VERSION_SUFFIX.match(collection)
        self.name = str(backend.get("version") or (suffix["version"] if suffix else collection))
        self.count = int(self.manifest["count"])
        self.dim = int(self.manifest["dim"])
        self.kind = self.manifest["index"]["type"]
        _, _, self._search_params = milvus_index(self.kind, self.manifest["index"]["params"])
        client.load_collection(collection)  # a no-op when loaded; a replica may be first
        stored = int(client.get_collection_stats(collection)["row_count"])
        if stored != self.count:
            raise ArtifactMismatchError(
                f"Milvus collection {collection} holds {stored} rows, its manifest says "
                f"{self.count}; the version is damaged: rebuild it"
            )
        label_info = self.manifest.get("labels")
        self.label_names: list[str] = list(label_info["names"]) if label_info else []
        self._filter = LabelFilter(self.label_names, has_labels=label_info is not None)

    @property
    def has_labels(self) -> bool:
        return self._filter.has_labels

    @property
    def model_fingerprint(self) -> str:
        return self.manifest["model"]["fingerprint"]

    def check_model(self, model) -> None:
        from siamese_search.indexer.store import check_model_matches

        check_model_matches(self.manifest, self.name, str(self.directory), model)

    def search(self, vectors: np.ndarray, k: int, labels: Sequence[str] = (), min_score=-1.0):
        from siamese_search.indexer.store import BackendUnavailableError, Hit

        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if vectors.shape[1] != self.dim:
            raise UserError(f"query vectors have dim {vectors.shape[1]}, the index {self.dim}")
        codes = self._filter.codes(labels) if labels else None
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
        try:
            found = self._client.search(
                self.collection,
                data=vectors.tolist(),
                limit=k,
                anns_field="vector",
                search_params={"metric_type": "IP", "params": params},
                filter=f"label_code in {sorted(codes)}" if codes is not None else "",
                output_fields=["id", "label", "text"],
                consistency_level=_CONSISTENCY,
            )
        except Exception as error:  # Milvus down, collection dropped under us, ...
            raise BackendUnavailableError(
                f"Milvus search of {self.collection} failed: {_short(error)}"
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
                    Hit(entity["id"], entity["label"], entity["text"], score, int(hit["id"]))
                )
            hits.sort(key=lambda h: -h.score)
            results.append(hits)
        return results

    def close(self) -> None:
        """Nothing to release: the collection stays loaded for the other replicas."""

    def __enter__(self) -> MilvusVersion:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class MilvusSource:
    """Where a server finds the current version: the alias, polled for moves."""

    def __init__(self, target: MilvusTarget):
        self.target = target
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

    def model_directory(self) -> Path:
        """From the current version's manifest alone (no load, no row count)."""
        manifest = _manifest_of(self._client, self._current_collection())
        return Path(manifest["model"]["directory"])
