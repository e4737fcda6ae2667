"""Resuming a re-embedding job that stopped: what it embedded is not embedded again.

`siamese-index reembed` of a large index runs for hours (~1,300 texts/s a core), and a
kill, a Ctrl-C or a refusal at publish ("the index changed while re-embedding") threw
all of it away. Its workspace is now named after the new model (`.reembed-<hash of the
fingerprint>` in the index directory) and outlives a run that did not publish:

- while a run embeds, every CHECKPOINT_SECONDS, the segment's vectors so far and a key
  per row (a 16-byte BLAKE2b digest of its text) are fsynced, then `progress.json`
  names how many rows they hold; the next run with the same model makes those rows a
  cache part (`cache/part-N.f32` and `.keys`) and looks each text up there before
  embedding it;
- once a run has embedded everything, its rows become a cache part at once (hard
  links: the segment moves into the new version at publish, so a publish that fails
  or is killed loses none of it);
- a run that publishes removes its workspace; a run with another model removes the
  other models' (a workspace costs disk: up to the vectors of the rows it embedded,
  once per stopped run).

Why by text and not by row position: a resumed run reads a new snapshot (the one the
stopped run read may have been pruned since, and rows written, deleted or compacted
meanwhile), and a text's vector under one model is the same wherever its row is (to
float rounding: it was computed in another batch).

Only the job's own process touches its workspace: the job holds the compaction lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from siamese_search.core.atomic import fsync_dir, write_json_atomic

#: a re-embedding job's workspace in the index directory, per model
WORKSPACE_PREFIX = ".reembed-"
PROGRESS_FILE = "progress.json"
KEYS_FILE = "keys.bin"
CACHE_DIR = "cache"
#: how often a running job makes what it embedded durable (each costs two fsyncs)
CHECKPOINT_SECONDS = 30.0
KEY_DTYPE = np.dtype("S16")


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """Each text's key: its BLAKE2b digest, 16 bytes (a collision among 10^9 texts has
    odds of about 10^-21)."""
    return np.array(
        [
            hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
            for text in texts
        ],
        dtype=KEY_DTYPE,
    )


def workspace_name(fingerprint: str) -> str:
    return WORKSPACE_PREFIX + hashlib.sha256(fingerprint.encode()).hexdigest()[:16]


class EmbeddingCache:
    """The vectors stopped runs embedded, looked up by text key (sorted keys and a
    binary search: ~28 bytes a row in memory, the vectors stay memory-mapped)."""

    def __init__(self, parts: Sequence[tuple[np.ndarray, np.ndarray]], dim: int):
        self.dim = dim
        self._vectors = [vectors for _, vectors in parts]
        sizes = [len(k) for k, _ in parts]
        keys = np.concatenate([np.zeros(0, KEY_DTYPE)] + [k for k, _ in parts])
        part = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
        row = np.concatenate([np.zeros(0, np.int64)] + [np.arange(n) for n in sizes])
        order = np.argsort(keys, kind="stable")
        self._keys, self._part, self._row = keys[order], part[order], row[order]

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found: a mask over `keys`, the vectors of the found ones in order)."""
        if not len(self._keys) or not len(keys):
            return np.zeros(len(keys), bool), np.zeros((0, self.dim), np.float32)
        at = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        found = self._keys[at] == keys
        at = at[found]
        vectors = np.empty((len(at), self.dim), np.float32)
        parts = self._part[at]
        for part in np.unique(parts):
            chosen = parts == part
            vectors[chosen] = self._vectors[part][self._row[at[chosen]]]
        return found, vectors


class Workspace:
    """A re-embedding job's directory for one model: its segment, its keys, and the
    cache of what stopped runs embedded (open with `open_workspace`)."""

    def __init__(self, directory: Path, dim: int, cache: EmbeddingCache):
        self.directory = directory
        self.dim = dim
        self.cache = cache
        self._keys = open(directory / KEYS_FILE, "wb")
        self._last = time.monotonic()

    def record(self, keys: np.ndarray) -> None:
        """The keys of the rows just appended to the segment, in order."""
        keys.tofile(self._keys)

    def checkpoint(self, rows: int, vectors: Path) -> None:
        """Make the first `rows` rows (their vectors in `vectors`, flushed by the caller)
        durable for a next run, at most every CHECKPOINT_SECONDS."""
        if time.monotonic() - self._last < CHECKPOINT_SECONDS:
            return
        self._keys.flush()
        os.fsync(self._keys.fileno())
        with open(vectors, "rb") as handle:
            os.fsync(handle.fileno())
        relative = str(vectors.relative_to(self.directory))
        write_json_atomic(
            self.directory / PROGRESS_FILE, {"dim": self.dim, "rows": rows, "vectors": relative}
        )
        self._last = time.monotonic()

    def keep(self, rows: int, vectors: Path) -> None:
        """Everything is embedded (`rows` rows, their vectors in `vectors`, flushed by
        the caller): make them a cache part now, by hard links, so that they outlive
        the segment's move into the new version if the publish fails."""
        self._keys.flush()
        os.fsync(self._keys.fileno())
        with open(vectors, "rb") as handle:
            os.fsync(handle.fileno())
        _add_part(self.directory, vectors, rows, self.dim, link=True)
        (self.directory / PROGRESS_FILE).unlink(missing_ok=True)

    def kept_note(self) -> str | None:
        """What a run that did not publish leaves for the next one, said to its user
        (the disk it takes is theirs to free); None when nothing was checkpointed."""
        parts = _parts(self.directory / CACHE_DIR, self.dim)
        rows = sum(len(keys) for keys, _ in parts)
        try:
            rows += int(json.loads((self.directory / PROGRESS_FILE).read_text())["rows"])
        except (OSError, ValueError, KeyError):
            pass
        if not rows:
            return None
        files = {(s.st_dev, s.st_ino): s.st_size for s in _file_stats(self.directory)}
        megabytes = sum(files.values()) / 1e6  # a hard-linked part once
        return (
            f"the {rows} vectors embedded so far are kept in {self.directory} "
            f"({megabytes:.0f} MB): run the same reembed again to go on from them, or "
            "delete that directory"
        )

    def close(self) -> None:
        self._keys.close()

    def remove(self) -> None:
        """The job published: nothing here is needed any more."""
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def open_workspace(index_dir: Path, fingerprint: str, dim: int) -> Workspace:
    """The workspace of the model `fingerprint` in `index_dir` (hold the compaction
    lock): made, or the one a stopped run left, its checkpointed rows made a cache
    part; other models' workspaces are removed."""
    name = workspace_name(fingerprint)
    for entry in Path(index_dir).iterdir():
        if entry.name.startswith(WORKSPACE_PREFIX) and entry.name != name:
            shutil.rmtree(entry, ignore_errors=True)
    directory = Path(index_dir) / name
    (directory / CACHE_DIR).mkdir(parents=True, exist_ok=True)
    _keep_checkpointed_rows(directory, dim)
    for entry in directory.iterdir():  # the stopped run's segment, index, keys
        if entry.is_dir() and entry.name != CACHE_DIR:
            shutil.rmtree(entry)
        elif not entry.is_dir():
            entry.unlink()
    return Workspace(directory, dim, EmbeddingCache(_parts(directory / CACHE_DIR, dim), dim))


def _keep_checkpointed_rows(directory: Path, dim: int) -> None:
    """A stopped run's checkpointed rows as the next cache part: both files cut to
    them, fsynced, then renamed into the cache (a part missing either file is dropped
    by `_parts`), and only then the progress file removed."""
    progress_path = directory / PROGRESS_FILE
    try:
        progress = json.loads(progress_path.read_text())
        rows, vectors = int(progress["rows"]), directory / str(progress["vectors"])
        usable = progress["dim"] == dim and vectors.is_file() and (directory / KEYS_FILE).is_file()
    except (OSError, ValueError, KeyError, TypeError):
        return  # no run stopped after a checkpoint (or it is unreadable: start afresh)
    if usable and rows > 0:
        _add_part(directory, vectors, rows, dim, link=False)
    progress_path.unlink()


def _file_stats(directory: Path) -> list[os.stat_result]:
    return [path.stat() for path in directory.rglob("*") if path.is_file()]


def _add_part(directory: Path, vectors: Path, rows: int, dim: int, link: bool) -> None:
    """The first `rows` rows of `vectors` and of the workspace's keys as the cache's next
    part: hard links to the whole files (`link`: a finished run's, which its version
    may come to share, so never cut), or the files cut to those rows and renamed (a
    stopped run's, which nothing else holds)."""
    numbers = [int(path.stem.split("-")[1]) for path in (directory / CACHE_DIR).glob("part-*")]
    part = directory / CACHE_DIR / f"part-{1 + max(numbers, default=0):04d}"
    for path, target, size in (
        (vectors, part.with_suffix(".f32"), rows * dim * 4),
        (directory / KEYS_FILE, part.with_suffix(".keys"), rows * 16),
    ):
        if link:
            os.link(path, target)
            continue
        with open(path, "r+b") as handle:
            handle.truncate(size)
            os.fsync(handle.fileno())
        os.rename(path, target)
    fsync_dir(directory / CACHE_DIR)


def _parts(cache_dir: Path, dim: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The cache's parts (keys, memory-mapped vectors); a part whose two files do not
    hold the same rows (a harvest cut short) is removed."""
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    for keys_path in cache_dir.glob("part-*.keys"):
        if not keys_path.with_suffix(".f32").is_file():
            keys_path.unlink()
    for vectors_path in sorted(cache_dir.glob("part-*.f32")):
        keys_path = vectors_path.with_suffix(".keys")
        size = vectors_path.stat().st_size
        rows = size // (dim * 4)
        whole = keys_path.is_file() and keys_path.stat().st_size == rows * 16
        if not whole or not rows or size != rows * dim * 4:
            vectors_path.unlink()
            keys_path.unlink(missing_ok=True)
            continue
        vectors = np.memmap(vectors_path, dtype=np.float32, mode="r", shape=(rows, dim))
        parts.append((np.fromfile(keys_path, dtype=KEY_DTYPE), vectors))
    return parts
