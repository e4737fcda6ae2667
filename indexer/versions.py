"""The retained versions of an index: listing them, and rolling back to one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from siamese_search.core.errors import UserError
from siamese_search.indexer import layout
from siamese_search.indexer.backends.milvus_backend import MilvusTarget
from siamese_search.indexer.mirror import mirror_for


@dataclass(frozen=True)
class VersionInfo:
    name: str
    count: int
    created_at: str
    operation: str
    current: bool
    held: bool  # a reader (a server) has it open


def list_index_versions(index_dir: Path) -> list[VersionInfo]:
    """Every retained version, oldest first, with what `siamese-index list` shows."""
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise UserError(f"{index_dir}: no such index directory")
    current = layout.current_version(index_dir)
    listed = []
    for name in layout.list_versions(index_dir):
        directory = layout.version_dir(index_dir, name)
        try:
            manifest = layout.read_manifest(directory, verify=False)
        except UserError:
            manifest = {}
        listed.append(
            VersionInfo(
                name,
                int(manifest.get("count", -1)),
                str(manifest.get("created_at", "?")),
                str((manifest.get("operation") or {}).get("kind", "?")),
                name == current,
                layout.is_held(directory),
            )
        )
    return listed


def rollback(
    index_dir: Path,
    to: str | None = None,
    wait: float = layout.DEFAULT_WAIT_SECONDS,
    milvus: MilvusTarget | None = None,
) -> tuple[str, str]:
    """Point CURRENT at a retained version: `to`, or the newest one before the current.

    Returns (previous, now current). A server picks it up like any new version. The
    target is verified (manifest checksum) before CURRENT moves. Refused while a server
    takes writes for the index (see `layout.writes_are_taken`).
    """
    index_dir = Path(index_dir)
    if layout.writes_are_taken(index_dir):
        # its journal and commits build on CURRENT: moving CURRENT back under it would
        # drop acknowledged writes, and a later rollback could bring them back
        raise UserError(
            f"a siamese-serve takes writes for {index_dir}; stop it (its pending writes "
            "stay journaled and are applied on top of the rolled-back version at its next "
            "start), or restart it with --no-writes, then roll back"
        )
    with layout.writer_lock(index_dir, wait):
        current = layout.current_version(index_dir)
        versions = layout.list_versions(index_dir)
        if to is None:
            older = [v for v in versions if current is None or v < current]
            if not older:
                raise UserError(
                    f"{index_dir}: no version older than the current one ({current}) is "
                    f"retained; versions: {', '.join(versions) or 'none'}"
                )
            target = older[-1]
        else:
            target = layout.version_name(int(to)) if to.isdigit() else to
            if target not in versions:
                raise UserError(
                    f"{index_dir}: no version {to!r}; retained versions: "
                    f"{', '.join(versions) or 'none'} (see `siamese-index list`)"
                )
        manifest = layout.read_manifest(layout.version_dir(index_dir, target))  # not damaged
        with mirror_for(milvus) as mirror:
            mirror.accept_base(manifest)
            layout.point_current_at(index_dir, target)
            mirror.reconcile(index_dir)
    return current or "", target
