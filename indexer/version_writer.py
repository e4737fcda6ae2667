"""One version's files, filled in a staging directory: records, vectors and label codes
as rows come, then the FAISS index from the stored vectors, then the manifest.

Memory stays bounded by the chunk size plus the index itself: texts go to SQLite,
vectors to a flat file, and the FAISS index is filled from that file by sequential
reads (an IVF index trains on a sample read through a memory map first).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from siamese_search.core.encoders.base import sha256_files
from siamese_search.core.errors import UserError
from siamese_search.core.model_artifact import EmbeddingModel
from siamese_search.core.provenance import package_versions, utc_now
from siamese_search.indexer import layout
from siamese_search.indexer.backends import create_index, resolve_kind
from siamese_search.indexer.records import RecordWriter
from siamese_search.indexer.store import FORMAT, FORMAT_VERSION, NO_LABEL, IndexVersion

ADD_BATCH = 65536


class VersionWriter:
    """Fills one staging directory: records, vectors, label codes; then index + manifest."""

    def __init__(self, staging: Path, dim: int, with_labels: bool):
        self.staging = staging
        self.dim = dim
        self.records = RecordWriter(staging / layout.RECORDS_FILE)
        self.vectors = open(staging / layout.VECTORS_FILE, "wb")
        self.label_file = open(staging / layout.LABELS_FILE, "wb") if with_labels else None
        self.label_names: list[str] = []
        self._codes: dict[str, int] = {}
        self.label_counts: Counter = Counter()

    @property
    def count(self) -> int:
        return self.records.count

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        return self.records.existing_ids(ids)

    def append(
        self,
        ids: Sequence[str],
        labels: Sequence[str | None] | None,
        texts: Sequence[str],
        vectors: np.ndarray,
    ) -> None:
        if not ids:
            return
        if self.label_file is not None:
            assert labels is not None
            codes = np.array([self._code(label) for label in labels], dtype=np.int32)
            codes.tofile(self.label_file)
            self.label_counts.update(label for label in labels if label)
        self.records.append(ids, labels if labels is not None else [None] * len(ids), texts)
        np.ascontiguousarray(vectors, dtype=np.float32).tofile(self.vectors)

    def _code(self, label: str | None) -> int:
        if not label:
            return NO_LABEL
        code = self._codes.get(label)
        if code is None:
            code = self._codes[label] = len(self.label_names)
            self.label_names.append(label)
        return code

    def finish(self, kind: str, params: dict | None, model: EmbeddingModel, extra: dict) -> dict:
        self.records.close()
        self.vectors.close()
        if self.label_file is not None:
            self.label_file.close()
        count = self.count
        resolved = resolve_kind(kind, count)
        index = create_index(resolved, self.dim, count, params)
        needed = index.min_training_vectors
        if count < needed:
            raise UserError(
                f"--index-type {resolved} needs at least {needed} vectors to train "
                f"({index.training_needs}); this version would have {count}. Use "
                "--index-type flat (exact; right below 50,000 vectors), hnsw, or auto"
            )
        if count:
            vectors_path = self.staging / layout.VECTORS_FILE
            if index.needs_training:  # IVF: centroids from a random sample of the vectors
                stored = np.memmap(
                    vectors_path, dtype=np.float32, mode="r", shape=(count, self.dim)
                )
                sample_size = min(count, index.params.get("nlist", 1) * 256)
                sample = np.sort(np.random.default_rng(0).choice(count, sample_size, replace=False))
                index.train(np.asarray(stored[sample]))
                del stored
            # plain sequential reads, not a memory map: mapped pages would count in the
            # process's memory on top of the index being built
            with open(vectors_path, "rb") as handle:
                while batch := handle.read(ADD_BATCH * self.dim * 4):
                    index.add(np.frombuffer(batch, dtype=np.float32).reshape(-1, self.dim))
        index.save(self.staging / layout.INDEX_FILE)
        layout.checkpoint("before-manifest")
        files = [layout.INDEX_FILE, layout.VECTORS_FILE, layout.RECORDS_FILE]
        if self.label_file is not None:
            files.append(layout.LABELS_FILE)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created_at": utc_now(),
            "count": count,
            "dim": self.dim,
            "metric": "inner_product",
            "normalized": True,
            "similarity": "cosine (vectors are L2-normalised, so inner product = cosine)",
            "index": {
                "type": resolved,
                "requested_type": kind,
                "params": index.params,
                "requested_params": params or {},
            },
            "model": {
                "fingerprint": model.fingerprint,
                "directory": str(Path(model.directory).absolute()),
                "encoder_fingerprint": model.manifest["encoder"]["fingerprint"],
            },
            "labels": (
                {"names": self.label_names, "counts": dict(self.label_counts)}
                if self.label_file is not None
                else None
            ),
            "files": {
                name: {
                    "sha256": sha256_files([self.staging / name]),
                    "bytes": (self.staging / name).stat().st_size,
                }
                for name in files
            },
            "versions": package_versions(),
            **extra,
        }
        layout.record_verified(self.staging, manifest["files"])
        layout.write_manifest(self.staging, manifest)  # its checksum: the last file
        return manifest


def copy_base(writer: VersionWriter, base: IndexVersion, drop: set[int]) -> int:
    """Carry the base version's rows over (minus `drop` positions) without re-encoding."""
    vectors = base.vectors()
    codes = base.label_codes()
    kept = 0
    for rows in base.records().iter_all():
        rows = [row for row in rows if row[0] not in drop]
        if not rows:
            continue
        positions = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        labels = None
        if codes is not None:
            labels = [base.label_names[c] if c >= 0 else None for c in codes[positions]]
        writer.append(
            [r[1] for r in rows], labels, [r[3] for r in rows], np.asarray(vectors[positions])
        )
        kept += len(rows)
    return kept
