"""Atomic writes: an artifact is either complete and visible, or not there at all.

Files are written to a temporary sibling, flushed and fsynced, then renamed into
place; directories likewise are built under a temporary name in the same parent
and renamed when complete. A crash at any point leaves at most a `.tmp-*` entry
that no reader ever opens; a directory's is removed by the next writer of the same
target, or by `sweep_leftovers` (a collections server at start). Its writer holds an
flock on it while it lives, so a sweep tells a killed writer's from one being
written (the lock goes with the process, whatever kills it).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

TMP_PREFIX = ".tmp-"
#: where atomic_directory moves a replaced target before deleting it
RETIRED_PREFIX = TMP_PREFIX + "old-"
#: a staging directory is swept only if unchanged this long, besides unlocked: its
#: writer takes the lock right after making it, and this covers the moment between
LEFTOVER_SECONDS = 60.0


def process_umask() -> int:
    """The process umask (os.umask can only be read by setting it, and is put back)."""
    current = os.umask(0o022)
    os.umask(current)
    return current


def make_shareable(path: Path) -> None:
    """Give a file or directory the mode a plain open()/mkdir() would have had.

    mkstemp / mkdtemp create 0600 / 0700 whatever the umask, so an artifact an
    operator built would be unreadable by the service account that serves it; the
    final name gets 0666 / 0777 less the umask, like any other file.
    """
    base = 0o777 if Path(path).is_dir() else 0o666
    os.chmod(path, base & ~process_umask())


def make_tree_shareable(root: Path) -> None:
    make_shareable(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            make_shareable(Path(dirpath) / name)


def fsync_dir(path: Path) -> None:
    """Make a rename or creation inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory below `root` (before it is renamed into place)."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(Path(dirpath))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        make_shareable(Path(tmp))
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, payload: object) -> None:
    text = json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_directory(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes `target` only if the block succeeds.

    With `overwrite`, an existing `target` is replaced: it is moved aside first and
    deleted only after the new directory is in place, so one of the two always exists.
    Without, a `target` that another writer made while the block ran is left alone
    (FileExistsError), where it used to be replaced, the other writer's files deleted.
    """
    target = Path(target).absolute()
    if target.exists() and not overwrite:
        raise FileExistsError(errno.EEXIST, "already exists", str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(target.parent, target.name)
    staging = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + target.name + "-", dir=target.parent))
    held = _hold(staging)
    try:
        yield staging
        make_tree_shareable(staging)
        fsync_tree(staging)
        if target.exists() and not overwrite:
            raise FileExistsError(errno.EEXIST, "made meanwhile by another writer", str(target))
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=RETIRED_PREFIX, dir=target.parent))
            os.rename(target, retired / target.name)
            os.rename(staging, target)
            fsync_dir(target.parent)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, target)
            fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        os.close(held)


def _hold(staging: Path) -> int:
    """An open descriptor of `staging` holding its flock (released when closed, or
    when the process dies)."""
    fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _is_leftover(entry: Path) -> bool:
    """Whether no living writer holds the staging directory `entry` (its flock is
    free) and it has not changed for LEFTOVER_SECONDS."""
    try:
        fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return time.time() - os.fstat(fd).st_ctime >= LEFTOVER_SECONDS
    finally:
        os.close(fd)


def _successor_in_place(retired: Path, name: str | None) -> bool:
    """Whether the target moved aside into `retired` (its one entry; of `name`, if
    given) has its successor in place beside it: the old one is then garbage."""
    try:
        inside = [child.name for child in retired.iterdir()]
    except OSError:  # not a directory, or gone
        return False
    return len(inside) == 1 and name in (None, inside[0]) and (retired.parent / inside[0]).exists()


def sweep_leftovers(parent: Path, name: str | None = None) -> list[str]:
    """Remove from `parent` what killed atomic_directory writers left (of target `name`,
    or of any): their staging directories, and a replaced target moved aside when the
    new one is in place (when it is not, the old one may be all there is: left for a
    person). Returns the names removed."""
    removed = []
    prefix = TMP_PREFIX + (f"{name}-" if name is not None else "")
    for entry in Path(parent).iterdir():
        if entry.name.startswith(RETIRED_PREFIX):
            if not _successor_in_place(entry, name):
                continue
        elif not entry.name.startswith(prefix):
            continue
        if _is_leftover(entry):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return removed
