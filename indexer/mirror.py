"""Where a version is served besides its own directory: nowhere (FAISS alone), or Milvus.

The write transaction (`indexer.transaction`) and `rollback` call the same steps on
either, so neither branches on Milvus:

    reconcile(index_dir)           before the base is read: bring the mirror back to
                                   CURRENT (a writer killed before moving the alias
                                   left them apart; so does a rollback)
    accept_base(manifest)          refuse a version this mirror cannot write onto
    record(version)                what the manifest says of where the version is
                                   served (None: nothing to say)
    write(index_dir, version, staging, manifest, base)
                                   before publishing: the version's delta first ...
    published(version, index_dir)  ... after publishing: the alias last, then pruning
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from siamese_search.core.errors import UserError
from siamese_search.indexer.backends.milvus_backend import MilvusTarget
from siamese_search.indexer.backends.milvus_writer import MilvusWriter


class Mirror(Protocol):
    def reconcile(self, index_dir: Path) -> None: ...

    def accept_base(self, manifest: dict) -> None: ...

    def record(self, version: str) -> dict | None: ...

    def write(
        self, index_dir: Path, version: str, staging: Path, manifest: dict, base: Path | None
    ) -> None: ...

    def published(self, version: str, index_dir: Path) -> None: ...


class LocalOnly:
    """The index directory alone: nothing to mirror, but a version a Milvus alias
    serves is refused (written here alone, it would never reach its servers)."""

    def reconcile(self, index_dir: Path) -> None:
        pass

    def accept_base(self, manifest: dict) -> None:
        backend = manifest.get("backend") or {}
        if backend.get("name") == "milvus":
            raise UserError(
                f"this index is served from Milvus (alias {backend.get('alias')!r}); a "
                "version written here alone would never reach its servers. Pass --backend "
                "milvus --milvus-uri URI (and --milvus-collection if it is not the default)"
            )

    def record(self, version: str) -> dict | None:
        return None

    def write(
        self, index_dir: Path, version: str, staging: Path, manifest: dict, base: Path | None
    ) -> None:
        pass

    def published(self, version: str, index_dir: Path) -> None:
        pass


class MilvusMirror:
    """Each version also in Milvus: its delta written to the index's data collection,
    a head collection naming its rows, one alias on the current version's head
    (indexer.backends.milvus_writer)."""

    def __init__(self, writer: MilvusWriter, show_progress: bool = True):
        self.writer = writer
        self.show_progress = show_progress

    def reconcile(self, index_dir: Path) -> None:
        self.writer.reconcile(index_dir, self.show_progress)

    def accept_base(self, manifest: dict) -> None:
        pass  # a FAISS-only base: its successor is copied to Milvus

    def record(self, version: str) -> dict | None:
        """Where the version is served from (never the token)."""
        return {
            "name": "milvus",
            "alias": self.writer.target.name,
            "collection": self.writer.target.collection_for(version),
            "version": version,
            "server_version": self.writer.server_version(),
        }

    def write(
        self, index_dir: Path, version: str, staging: Path, manifest: dict, base: Path | None
    ) -> None:
        self.writer.write_version(index_dir, version, staging, manifest, base, self.show_progress)

    def published(self, version: str, index_dir: Path) -> None:
        self.writer.published(version, index_dir)


@contextmanager
def mirror_for(target: MilvusTarget | None, show_progress: bool = True) -> Iterator[Mirror]:
    """The mirror of `--backend` (a Milvus connection, closed after), or LocalOnly."""
    if target is None:
        yield LocalOnly()
        return
    writer = MilvusWriter(target)
    try:
        yield MilvusMirror(writer, show_progress)
    finally:
        writer.close()
