"""Where a version is served besides its own directory: nowhere (FAISS alone), or Milvus.

The write transaction (`indexer.transaction`) and `rollback` call the same steps on
either, so neither branches on Milvus:

    reconcile(index_dir)           before the base is read: bring the mirror back to
                                   CURRENT (a writer killed between publishing and
                                   moving the alias left them apart; so does a rollback)
    accept_base(manifest)          refuse a version this mirror cannot write onto
    record(version)                what the manifest says of where the version is
                                   served (None: nothing to say)
    write(version, staging, ...)   before publishing: the collection first ...
    published(version, index_dir)  ... after publishing: the alias last, then pruning
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from siamese_search.core.errors import UserError
from siamese_search.indexer import layout
from siamese_search.indexer.backends.milvus_backend import MilvusTarget, MilvusWriter


class Mirror(Protocol):
    def reconcile(self, index_dir: Path) -> None: ...

    def accept_base(self, manifest: dict) -> None: ...

    def record(self, version: str) -> dict | None: ...

    def write(self, version: str, staging: Path, manifest: dict) -> None: ...

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

    def write(self, version: str, staging: Path, manifest: dict) -> None:
        pass

    def published(self, version: str, index_dir: Path) -> None:
        pass


class MilvusMirror:
    """Each version also a Milvus collection, one alias pointing at the current one."""

    def __init__(self, writer: MilvusWriter, show_progress: bool = True):
        self.writer = writer
        self.show_progress = show_progress

    def reconcile(self, index_dir: Path) -> None:
        reconcile_milvus(index_dir, self.writer, self.show_progress)

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

    def write(self, version: str, staging: Path, manifest: dict) -> None:
        self.writer.write_version(version, staging, manifest, self.show_progress)

    def published(self, version: str, index_dir: Path) -> None:
        self.writer.point_alias_at(version)
        layout.checkpoint("after-alias")
        self.writer.prune(layout.list_versions(index_dir))


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


def reconcile_milvus(index_dir: Path, milvus: MilvusWriter, show_progress: bool = True) -> None:
    """Point the alias at the local current version (hold the writer lock), after
    checking the alias serves this index (`MilvusWriter.claim`).

    A writer killed between publishing its version here and moving the alias left the
    two apart; so does a rollback. The current version's collection is written again
    from the local files when it is missing.
    """
    current = layout.current_version(index_dir)
    if current is None:
        milvus.claim(None, first_version=True)
        return
    directory = layout.version_dir(index_dir, current)
    manifest = layout.read_manifest(directory)
    milvus.claim(manifest.get("index_id"), first_version=False)
    if (manifest.get("backend") or {}).get("name") != "milvus":
        return  # a FAISS-only version: the next write copies its successor to Milvus
    if milvus.aliased_collection() == milvus.target.collection_for(current):
        return
    if not milvus.has_version(current):
        milvus.write_version(current, directory, manifest, show_progress)
    milvus.point_alias_at(current)
