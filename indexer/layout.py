"""On-disk layout of an index directory: numbered versions and an atomic CURRENT pointer.

    INDEX_DIR/
      CURRENT              the live version's name, e.g. "000003" (replaced atomically)
      versions/000001/     complete, immutable versions (never modified once renamed here)
      versions/000002/
      .lock                held by the one writer at a time (build / add / delete /
                           rollback), from reading its base version to publishing
      .tmp-*               a version being written; ignored by readers, swept by writers
      .compact-*           a compaction's merged segment, built outside the lock
      .compact.lock        held by the one compaction at a time
      .reembed-*, .ingest-*  a re-embedding's or a table write's workspace, per model:
                           kept when it does not publish, so the next run resumes
                           (indexer/resume.py)
      .milvus-pending      a write to Milvus started and its alias not yet moved: the
                           next writer reconciles Milvus first (backends/milvus_writer.py)
      DROPPED              a server dropped this collection (server/collection_dirs.py):
                           no server serves it again, no writer writes to it again
                           (writer_lock refuses), and the next server to start removes it

Each version holds `manifest.json` and `manifest.sha256` (the manifest's checksum,
which covers the checksums of every other file), so a reader can trust all of it.
Its data lives in segment directories that later versions share by hard links
(`indexer.segments`).

A writer builds a version under `.tmp-*`, fsyncs it, renames it into `versions/`,
then replaces CURRENT. Killed at any point, the previous CURRENT stays intact and
readable, and no reader can pick up a half-written version (readers only follow
CURRENT, which only ever names a complete version, inside `versions/`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from siamese_search.core.atomic import (
    TMP_PREFIX,
    fsync_dir,
    fsync_tree,
    make_tree_shareable,
    write_bytes_atomic,
    write_json_atomic,
)
from siamese_search.core.encoders.base import sha256_files
from siamese_search.core.errors import ArtifactMismatchError, UserError

CURRENT = "CURRENT"
VERSIONS = "versions"
LOCK = ".lock"
#: written (under the writer lock) when a collections server drops the index
DROPPED = "DROPPED"
MANIFEST = "manifest.json"
MANIFEST_SUM = "manifest.sha256"
INDEX_FILE = "index.faiss"
VECTORS_FILE = "vectors.f32"
LABELS_FILE = "labels.i32"
RECORDS_FILE = "records.sqlite"
#: which files of a version were checked against the manifest's checksums, as they
#: were then (size, mtime, inode): see record_verified
VERIFIED = "verified.json"
DEFAULT_KEEP_VERSIONS = 3
DEFAULT_WAIT_SECONDS = 300.0
_VERSION_NAME = re.compile(r"^[0-9]{6}$")


def version_name(number: int) -> str:
    return f"{number:06d}"


def list_versions(index_dir: Path) -> list[str]:
    root = Path(index_dir) / VERSIONS
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _VERSION_NAME.match(p.name))


def current_version(index_dir: Path) -> str | None:
    """The version CURRENT names, or None before the first version.

    Refuses (UserError) a CURRENT that does not name a version directory inside
    `versions/`: garbage bytes, a path (`../../elsewhere/x`), a missing version.
    """
    pointer = Path(index_dir) / CURRENT
    try:
        raw = pointer.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise UserError(f"{pointer}: cannot read it ({error.strerror})") from None
    name = raw.decode("ascii", errors="replace").strip()
    if not name:
        return None
    if not _VERSION_NAME.match(name) or not version_dir(index_dir, name).is_dir():
        shown = name if len(name) < 40 else name[:40] + "..."
        raise UserError(
            f"{pointer} names {shown!r}, which is not a version in {Path(index_dir) / VERSIONS}; "
            f"fix it with `siamese-index rollback --index {index_dir}` (versions: "
            f"{', '.join(list_versions(index_dir)) or 'none'})"
        )
    return name


def version_dir(index_dir: Path, name: str) -> Path:
    return Path(index_dir) / VERSIONS / name


#: held (flock) by the siamese-serve that takes writes for an index directory
WRITES_LOCK = ".writes.lock"


def writes_are_taken(index_dir: Path) -> bool:
    """Whether a server takes writes (Upsert / Delete) for this index right now."""
    return _flock_is_held(Path(index_dir) / WRITES_LOCK)


def _flock_is_held(path: Path) -> bool:
    """Whether another open file holds a flock on `path` (False if there is no file)."""
    try:
        with open(path, "rb") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            return False
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def writer_lock(
    index_dir: Path,
    wait: float = DEFAULT_WAIT_SECONDS,
    keeps: Callable[[Path], bool] = lambda _: False,
) -> Iterator[None]:
    """One writer at a time per index directory, from reading its base to publishing.

    A second writer waits up to `wait` seconds (saying so once), then goes on from
    whatever the first one published; `wait=0` fails at once. A job that created the
    index directory and fails before publishing anything removes it again (no stray
    `.lock`), so a failed job leaves the directory as it found it, unless `keeps`
    says the directory holds what the job is keeping there for its next run
    (indexer.resume's kept work: passed in, since that seam sits above this one).
    """
    index_dir = Path(index_dir)
    created = not index_dir.exists()
    index_dir.mkdir(parents=True, exist_ok=True)
    try:
        with open(index_dir / LOCK, "a+") as handle:
            _acquire(handle, index_dir, wait)
            try:
                _refuse_dropped(index_dir)
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    except BaseException:
        if created and not list_versions(index_dir) and not keeps(index_dir):
            shutil.rmtree(index_dir, ignore_errors=True)
        raise


def is_dropped(index_dir: Path) -> bool:
    return (Path(index_dir) / DROPPED).exists()


def _refuse_dropped(index_dir: Path) -> None:
    """A dropped collection's files are about to go: what a writer published there
    would be acknowledged and then deleted with them."""
    if is_dropped(index_dir):
        raise UserError(
            f"{index_dir} was dropped as a collection (it holds a {DROPPED} file): its "
            "files are being removed, and nothing was written; write to another index "
            "directory"
        )


def _acquire(handle, index_dir: Path, wait: float) -> None:
    deadline = time.monotonic() + max(wait, 0.0)
    told = False
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise UserError(
                    f"{index_dir} is being written by another siamese-index process and "
                    f"was still busy after {wait:g} s; run this again when it is done, or "
                    "give a longer --wait"
                ) from None
        if not told:
            print(
                f"waiting for another writer of {index_dir} to finish (up to {wait:g} s; "
                "--wait sets it, --wait 0 fails at once)...",
                file=sys.stderr,
                flush=True,
            )
            told = True
        checkpoint("waiting-for-lock")
        time.sleep(0.1)


def sweep_staging(index_dir: Path) -> None:
    """Remove leftovers of writers that were killed (only call while holding the lock).
    A killed compaction's `.compact-*` is the next compaction's to remove (a writer
    cannot tell it from one being written right now)."""
    for entry in Path(index_dir).iterdir():
        if entry.name.startswith(TMP_PREFIX) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


#: held (flock) by the one `siamese-index compact` of an index directory at a time; it
#: merges outside the writer lock, into a `.compact-*` directory of its own
COMPACT_LOCK = ".compact.lock"
COMPACT_PREFIX = ".compact-"


@contextlib.contextmanager
def compaction_lock(index_dir: Path) -> Iterator[None]:
    """One compaction at a time per index directory (refused at once while another
    runs: a second one would only redo its work)."""
    with open(Path(index_dir) / COMPACT_LOCK, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{index_dir} is being compacted by another siamese-index process; "
                "run this again when it is done"
            ) from None
        try:
            for entry in Path(index_dir).iterdir():  # a killed compaction's work
                if entry.name.startswith(COMPACT_PREFIX) and entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def compaction_running(index_dir: Path) -> bool:
    """Whether a compaction holds the index right now: writes then leave the segments
    it is merging as they are (indexer.compaction)."""
    return _flock_is_held(Path(index_dir) / COMPACT_LOCK)


def new_compaction_dir(index_dir: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=COMPACT_PREFIX, dir=index_dir))


def new_staging(index_dir: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=TMP_PREFIX + "version-", dir=index_dir))


def next_version_name(index_dir: Path) -> str:
    """The name the next `publish` gives (stable while the writer lock is held)."""
    existing = list_versions(index_dir)
    return version_name(int(existing[-1]) + 1 if existing else 1)


def publish(index_dir: Path, staging: Path, keep: int = DEFAULT_KEEP_VERSIONS) -> str:
    """Make a complete staging directory the new current version; return its name."""
    index_dir = Path(index_dir)
    make_tree_shareable(staging)
    fsync_tree(staging)
    name = next_version_name(index_dir)
    (index_dir / VERSIONS).mkdir(exist_ok=True)
    os.rename(staging, version_dir(index_dir, name))
    fsync_dir(index_dir / VERSIONS)
    checkpoint("after-rename")
    write_bytes_atomic(index_dir / CURRENT, (name + "\n").encode("ascii"))
    checkpoint("after-current")
    prune(index_dir, keep)
    return name


def point_current_at(index_dir: Path, name: str) -> None:
    """Make `name` (an existing version) the current one (rollback; hold the lock)."""
    write_bytes_atomic(Path(index_dir) / CURRENT, (name + "\n").encode("ascii"))


def write_manifest(directory: Path, manifest: dict) -> None:
    """The manifest, then its checksum (the last file written in a version)."""
    write_json_atomic(Path(directory) / MANIFEST, manifest)
    digest = sha256_files([Path(directory) / MANIFEST])
    write_bytes_atomic(Path(directory) / MANIFEST_SUM, (digest + "\n").encode("ascii"))


def file_signature(path: Path) -> list[int]:
    """What changes when a file is rewritten, replaced or copied: size, mtime, inode."""
    status = Path(path).stat()
    return [status.st_size, status.st_mtime_ns, status.st_ino]


def record_verified(directory: Path, files: dict) -> None:
    """Note that a version's files (name -> {"sha256"}) hold the bytes their checksums
    say, as they are now: the writer, which has just hashed what it wrote, records
    this, so opening the version later (the next write's base, a server's reload)
    hashes only a file that changed since (verified_unchanged). Hashing every file
    at every open made each write's cost grow with the index (bench/writes.py)."""
    noted = {
        name: {"sha256": info["sha256"], "signature": file_signature(Path(directory) / name)}
        for name, info in files.items()
    }
    write_json_atomic(Path(directory) / VERIFIED, noted)


def verified_unchanged(directory: Path, name: str, sha256: str) -> bool:
    """Whether `name` was recorded as verified against `sha256` and is unchanged since
    (same size, mtime and inode). Damage that keeps all three (a disk's own bit rot)
    is not seen after the first check; an edit, a replacement or a copy is."""
    try:
        noted = json.loads((Path(directory) / VERIFIED).read_text("utf-8"))[name]
        return noted["sha256"] == sha256 and noted["signature"] == file_signature(
            Path(directory) / name
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def recorded_index_id(index_dir: Path) -> str | None:
    """Which index the directory holds, the same in all its versions (a Milvus alias
    is only written, or dropped, for the index it serves: MilvusWriter.claim and
    remove_all): the newest readable version's, None before ids were recorded. CURRENT
    is not read: a --replace build is how a damaged CURRENT is repaired."""
    for name in reversed(list_versions(index_dir)):
        try:
            manifest = read_manifest(version_dir(index_dir, name), verify=False)
        except UserError:
            continue
        if manifest.get("index_id"):
            return str(manifest["index_id"])
    return None


def read_manifest(directory: Path, verify: bool = True) -> dict:
    """A version's manifest, refused (ArtifactMismatchError) when it does not match the
    checksum beside it: a changed count or swapped label names would be served wrong."""
    directory = Path(directory)
    path = directory / MANIFEST
    if verify:
        try:
            expected = (directory / MANIFEST_SUM).read_text("ascii").strip()
        except (OSError, UnicodeDecodeError):
            raise ArtifactMismatchError(
                f"{directory / MANIFEST_SUM} is missing or unreadable; the index version is "
                "damaged or was written by an older siamese-search: rebuild it"
            ) from None
        if sha256_files([path]) != expected:
            raise ArtifactMismatchError(
                f"{path} does not match its checksum ({MANIFEST_SUM}); the manifest was "
                "changed after it was written: rebuild the version or restore it"
            )
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"{directory}: unreadable index manifest ({error})") from None


def hold_version(directory: Path):
    """A reader's shared lock on a version: `prune` leaves it alone while it is held.

    Returns the open file that holds the lock; closing it (or the process ending)
    releases it. A server keeps one per loaded version, so a version that requests
    may still be reading is never deleted under them.
    """
    handle = open(Path(directory) / MANIFEST, "rb")  # noqa: SIM115 - lives with the reader
    fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
    return handle


def is_held(directory: Path) -> bool:
    """Whether a reader (a server, say) holds this version open right now."""
    return _flock_is_held(Path(directory) / MANIFEST)


def prune(index_dir: Path, keep: int) -> list[str]:
    """Delete the oldest versions beyond `keep`; never the current one, nor one a
    reader still holds (it is deleted by a later writer once released)."""
    current = current_version(index_dir)
    versions = [v for v in list_versions(index_dir) if v != current]
    doomed = versions[: max(0, len(versions) - max(keep - 1, 0))]
    deleted = []
    for name in doomed:
        directory = version_dir(index_dir, name)
        try:
            with open(directory / MANIFEST, "rb") as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(directory, ignore_errors=True)
        except BlockingIOError:
            continue  # a reader still serves from it
        except FileNotFoundError:
            shutil.rmtree(directory, ignore_errors=True)  # no manifest: an incomplete leftover
        deleted.append(name)
    return deleted


#: Called with the stage's name each time a writer passes one of its named points
#: ("during-ingest", "before-finish", "before-manifest", "after-rename",
#: "after-current"). Empty in production; tests register an observer to stop a writer
#: at a point it has reached (tests/crash_writer.py) or to interleave two writers.
CHECKPOINT_OBSERVERS: list[Callable[[str], None]] = []


def checkpoint(stage: str) -> None:
    for observer in CHECKPOINT_OBSERVERS:
        observer(stage)
