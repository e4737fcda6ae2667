"""Resuming a long embedding job that stopped: what it embedded is not embedded again.

`siamese-index reembed` of a large index, or `build` / `add` of a large table, runs for
hours (~1,300 texts/s a core), and a kill, a Ctrl-C or a refusal at publish ("the
index changed while re-embedding") threw all of it away. Such a job now has a
workspace in the index directory, named after its kind and model
(`.reembed-<hash of the fingerprint>`, `.ingest-<...>`), that outlives a run that did
not publish:

- when a run starts its new segment, the segment's vectors file is hard-linked into
  the workspace (`run.f32`): whatever becomes of the segment (its staging directory
  swept by the next writer, or moved into a version), the workspace keeps the file;
- every CHECKPOINT_SECONDS, and once everything is embedded, that file and a key per
  row (a 16-byte BLAKE2b digest of its text, `keys.bin`) are fsynced, then
  `progress.json` says how many rows they hold (after the rows the segment held
  before: an `add` may first copy small base segments into it) and a digest of their
  bytes (each row read once, as it is checkpointed), which the next run checks, and
  keeps with the cache part, before it takes a vector: files changed on disk after a
  run stopped (a size-preserving overwrite, a bad sector) are embedded again instead
  of going into the index unseen;
- the next run of the same kind and model makes those rows a cache part
  (`cache/part-N.f32` and `.keys`; the vectors file is renamed, never cut: it may be
  a published version's) and looks each text up there before embedding it;
- a run that publishes removes its workspace; a run with another model removes the
  other models' (a workspace costs the disk of the vectors stopped runs embedded).

Why by text and not by row position: a resumed run reads a new snapshot (the one the
stopped run read may have been pruned since, and rows written, deleted or compacted
meanwhile), and a text's vector under one model is the same wherever its row is (to
float rounding: it was computed in another batch).

Only one job of a kind touches its workspace at a time: reembed holds the compaction
lock, build and add the writer lock. Only table files are resumable: the rows a
server commits, or an evaluation indexes, are in memory and few.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from siamese_search.core.atomic import fsync_dir, write_json_atomic

#: a job's workspace in the index directory, per kind ("reembed", "ingest") and model
WORKSPACE_PREFIXES = {"reembed": ".reembed-", "ingest": ".ingest-"}
PROGRESS_FILE = "progress.json"
KEYS_FILE = "keys.bin"
RUN_VECTORS = "run.f32"
CACHE_DIR = "cache"
#: how often a running job makes what it embedded durable (each costs two fsyncs)
CHECKPOINT_SECONDS = 30.0
KEY_DTYPE = np.dtype("S16")
#: what a progress file and a cache part record of their rows' bytes
DIGESTS = ("vectors_blake2b", "keys_blake2b")
_READ_BYTES = 8 << 20
#: embeds lists of texts, one array per list, in order (indexer.ingest.embedder)
Embed = Callable[[Iterator[list[str]]], Iterator[np.ndarray]]


class Segment(Protocol):
    """What a workspace reads of the segment a run writes (version_writer.SegmentWriter)."""

    @property
    def count(self) -> int: ...

    def flush_vectors(self) -> Path: ...


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


def workspace_name(kind: str, fingerprint: str) -> str:
    return WORKSPACE_PREFIXES[kind] + hashlib.sha256(fingerprint.encode()).hexdigest()[:16]


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
    """A job's directory for one model: the running segment's vectors (linked), their
    keys, and the cache of what stopped runs embedded (open with `open_workspace`)."""

    def __init__(self, directory: Path, dim: int, cache: EmbeddingCache, command: str):
        self.directory = directory
        self.dim = dim
        self.cache = cache
        self.command = command
        self.reused = 0  # rows taken from the cache so far
        self._keys = open(directory / KEYS_FILE, "wb")
        self._segment: Segment | None = None
        self._first = 0
        self._last = time.monotonic()
        #: this run's checkpointed rows, digested as they were checkpointed (DIGESTS)
        self._digests = (hashlib.blake2b(digest_size=16), hashlib.blake2b(digest_size=16))
        self._digested = 0

    def attach(self, segment: Segment, show_progress: bool) -> None:
        """The new segment this run appends its embeddings to (after the rows it holds
        now, which are not this job's: an add's merged base rows): its vectors file
        hard-linked so the workspace keeps it. Says when a stopped run's are reused."""
        os.link(segment.flush_vectors(), self.directory / RUN_VECTORS)
        self._segment, self._first = segment, segment.count
        if self.cache and show_progress:
            print(f"resuming: {len(self.cache)} vectors a stopped run embedded are kept")

    def embedding(self, embed: Embed) -> Embed:
        """`embed` with the cache in front: each list's texts the cache holds are taken
        from it, the rest embedded; each list's keys recorded as its vectors are handed
        out (the caller appends every array, in order, to the attached segment)."""

        def run(text_lists: Iterator[list[str]]) -> Iterator[np.ndarray]:
            looked_up: deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = deque()

            def missing() -> Iterator[list[str]]:
                for texts in text_lists:
                    keys = text_keys(texts)
                    found, cached = self.cache.lookup(keys)
                    looked_up.append((keys, found, cached))
                    yield [text for text, hit in zip(texts, found, strict=True) if not hit]

            for embedded in embed(missing()):
                keys, found, cached = looked_up.popleft()
                vectors = np.empty((len(keys), self.dim), np.float32)
                vectors[found], vectors[~found] = cached, embedded
                self.reused += int(found.sum())
                keys.tofile(self._keys)
                yield vectors

        return run

    def checkpoint(self, force: bool = False) -> None:
        """Make the rows the attached segment holds durable for a next run, at most
        every CHECKPOINT_SECONDS unless `force` (once everything is embedded)."""
        if self._segment is None:
            return
        if not force and time.monotonic() - self._last < CHECKPOINT_SECONDS:
            return
        rows = self._segment.count
        self._segment.flush_vectors()
        self._keys.flush()
        os.fsync(self._keys.fileno())
        with open(self.directory / RUN_VECTORS, "rb") as handle:
            os.fsync(handle.fileno())
        own, row_bytes = rows - self._first, self.dim * 4
        vectors, keys = self._digests
        _digest_bytes(
            vectors,
            self.directory / RUN_VECTORS,
            (self._first + self._digested) * row_bytes,
            (self._first + own) * row_bytes,
        )
        _digest_bytes(
            keys,
            self.directory / KEYS_FILE,
            self._digested * KEY_DTYPE.itemsize,
            own * KEY_DTYPE.itemsize,
        )
        self._digested = own
        progress: dict[str, int | str] = {"dim": self.dim, "first": self._first, "rows": own}
        progress.update(zip(DIGESTS, (vectors.hexdigest(), keys.hexdigest()), strict=True))
        write_json_atomic(self.directory / PROGRESS_FILE, progress)
        self._last = time.monotonic()

    def give_up(self) -> None:
        """The run did not publish: say on stderr what it leaves for the next one (the
        disk it takes is the user's to free: `siamese-index discard-kept`), or remove
        the workspace when nothing was checkpointed."""
        if note := self._left_behind():
            print(note, file=sys.stderr, flush=True)

    def _left_behind(self) -> str | None:
        self.close()
        parts = _parts(self.directory / CACHE_DIR, self.dim)
        rows = sum(len(keys) for keys, _ in parts)
        try:
            rows += int(json.loads((self.directory / PROGRESS_FILE).read_text())["rows"])
        except (OSError, ValueError, KeyError):
            pass
        if not rows:
            self.remove()
            return None
        megabytes = _megabytes(self.directory)
        return (
            f"the {rows} vectors embedded so far are kept in {self.directory} "
            f"({megabytes:.0f} MB): run the same {self.command} again to go on from "
            f"them, or `siamese-index discard-kept --index {self.directory.parent}` to "
            "delete them"
        )

    def close(self) -> None:
        self._keys.close()

    def remove(self) -> None:
        """The job published: nothing here is needed any more."""
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def open_workspace(
    index_dir: Path, kind: str, fingerprint: str, dim: int, command: str
) -> Workspace:
    """The workspace of a `kind` job with the model `fingerprint` in `index_dir` (hold
    the job's lock): made, or the one a stopped run left, its checkpointed rows made
    a cache part; the same kind's workspaces of other models are removed. `command`
    names the job to its user."""
    name = workspace_name(kind, fingerprint)
    for entry in Path(index_dir).iterdir():
        if entry.name.startswith(WORKSPACE_PREFIXES[kind]) and entry.name != name:
            shutil.rmtree(entry, ignore_errors=True)
    directory = Path(index_dir) / name
    (directory / CACHE_DIR).mkdir(parents=True, exist_ok=True)
    _keep_checkpointed_rows(directory, dim)
    for entry in directory.iterdir():  # the stopped run's segment, keys
        if entry.is_dir() and entry.name != CACHE_DIR:
            shutil.rmtree(entry)
        elif not entry.is_dir():
            entry.unlink()
    cache = EmbeddingCache(_parts(directory / CACHE_DIR, dim, verify=True), dim)
    return Workspace(directory, dim, cache, command)


def _keep_checkpointed_rows(directory: Path, dim: int) -> None:
    """A stopped run's checkpointed rows as the next cache part: its keys cut to them
    and fsynced, both files renamed into the cache (a part missing either file is
    dropped by `_parts`), and only then the progress file removed. The vectors file
    is never cut: it may be a published version's too (a run killed between its
    publish and its workspace's removal)."""
    progress_path = directory / PROGRESS_FILE
    try:
        progress = json.loads(progress_path.read_text())
        rows, first = int(progress["rows"]), int(progress["first"])
        usable = progress["dim"] == dim and (directory / RUN_VECTORS).is_file()
    except (OSError, ValueError, KeyError, TypeError):
        return  # no run stopped after a checkpoint (or it is unreadable: start afresh)
    usable = usable and rows > 0 and (directory / KEYS_FILE).is_file()
    # the part carries the checkpoint's digests: `_parts` checks them before use
    recorded = {name: progress[name] for name in DIGESTS if name in progress}
    if usable:
        numbers = [int(path.stem.split("-")[1]) for path in (directory / CACHE_DIR).glob("part-*")]
        part = directory / CACHE_DIR / f"part-{1 + max(numbers, default=0):04d}"
        with open(directory / KEYS_FILE, "r+b") as handle:
            handle.truncate(rows * KEY_DTYPE.itemsize)
            os.fsync(handle.fileno())
        write_json_atomic(part.with_suffix(".json"), {"first": first, **recorded})
        os.rename(directory / RUN_VECTORS, part.with_suffix(".f32"))
        os.rename(directory / KEYS_FILE, part.with_suffix(".keys"))
        fsync_dir(directory / CACHE_DIR)
    progress_path.unlink()


def _megabytes(directory: Path) -> float:
    """The disk a workspace takes (a hard-linked file once)."""
    stats = [path.stat() for path in directory.rglob("*") if path.is_file()]
    return sum({(s.st_dev, s.st_ino): s.st_size for s in stats}.values()) / 1e6


def _kept_rows(directory: Path) -> int:
    """The vectors a workspace holds for a next run, read without changing anything
    (its cache parts' keys, and a stopped run's checkpointed rows)."""
    rows = sum(
        path.stat().st_size // KEY_DTYPE.itemsize
        for path in (directory / CACHE_DIR).glob("part-*.keys")
    )
    try:
        rows += int(json.loads((directory / PROGRESS_FILE).read_text())["rows"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return rows


@dataclass(frozen=True)
class KeptWork:
    """A workspace a stopped job left (what `siamese-index list` shows)."""

    directory: Path
    kind: str
    rows: int
    megabytes: float


def kept_work(index_dir: Path) -> list[KeptWork]:
    """The workspaces in `index_dir` holding vectors for a next run (read only: a job
    may be running)."""
    return [
        KeptWork(entry, kind, rows, _megabytes(entry))
        for entry, kind, rows in _workspaces_with_rows(index_dir)
    ]


def discard_kept_work(index_dir: Path) -> list[KeptWork]:
    """Remove every workspace in `index_dir` that holds vectors for a next run, and say
    what each held (the caller holds the locks of both jobs' kinds: layout's writer
    and compaction locks, so no running job's workspace is removed)."""
    kept = kept_work(index_dir)
    for work in kept:
        shutil.rmtree(work.directory)
    return kept


def holds_kept_work(index_dir: Path) -> bool:
    """Whether a failed job's new index directory holds vectors for a next run, so
    that `layout.writer_lock` keeps the directory it would otherwise remove (their
    disk is not measured: only `kept_work` says it)."""
    return next(_workspaces_with_rows(index_dir), None) is not None


def _workspaces_with_rows(index_dir: Path) -> Iterator[tuple[Path, str, int]]:
    """(directory, job kind, kept rows) of each workspace in `index_dir` that holds any."""
    for entry in sorted(Path(index_dir).iterdir()):
        kind = next((k for k, p in WORKSPACE_PREFIXES.items() if entry.name.startswith(p)), None)
        if kind is not None and entry.is_dir() and (rows := _kept_rows(entry)):
            yield entry, kind, rows


def _parts(cache_dir: Path, dim: int, verify: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """The cache's parts (keys, memory-mapped vectors: the rows after the part's
    `first`); a part missing a file, or whose vectors file is shorter than its keys
    say (a harvest cut short), is removed, and with `verify` (before its vectors are
    used) one whose bytes no longer match the digests it recorded."""
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    for stem in sorted({path.with_suffix("") for path in cache_dir.glob("part-*")}):
        vectors_path, keys_path = stem.with_suffix(".f32"), stem.with_suffix(".keys")
        try:
            described = json.loads(stem.with_suffix(".json").read_text())
            first = int(described["first"])
            rows = keys_path.stat().st_size // KEY_DTYPE.itemsize
            whole = vectors_path.stat().st_size >= (first + rows) * dim * 4 and rows > 0
            recorded = {name: described[name] for name in DIGESTS if name in described}
        except (OSError, ValueError, KeyError, TypeError):
            whole, recorded = False, {}
        if whole and verify and recorded:
            if _digests_of(vectors_path, keys_path, first, rows, dim) != recorded:
                _say_changed(stem, rows)
                whole = False
        if not whole:
            for suffix in (".f32", ".keys", ".json"):
                stem.with_suffix(suffix).unlink(missing_ok=True)
            continue
        vectors = np.memmap(
            vectors_path, dtype=np.float32, mode="r", offset=first * dim * 4, shape=(rows, dim)
        )
        parts.append((np.fromfile(keys_path, dtype=KEY_DTYPE, count=rows), vectors))
    return parts


def _digest_bytes(digest, path: Path, start: int, end: int) -> None:
    """Feed bytes [start, end) of `path` to `digest`, in bounded pieces."""
    with open(path, "rb") as handle:
        handle.seek(start)
        while start < end and (piece := handle.read(min(_READ_BYTES, end - start))):
            digest.update(piece)
            start += len(piece)


def _digests_of(vectors: Path, keys: Path, first: int, rows: int, dim: int) -> dict[str, str]:
    """DIGESTS of `rows` rows: the vectors after the `first` rows of the vectors file,
    and the first keys of the keys file (what a checkpoint digested as it went)."""
    found = []
    for path, start, size in ((vectors, first * dim * 4, dim * 4), (keys, 0, KEY_DTYPE.itemsize)):
        digest = hashlib.blake2b(digest_size=16)
        _digest_bytes(digest, path, start, start + rows * size)
        found.append(digest.hexdigest())
    return dict(zip(DIGESTS, found, strict=True))


def _say_changed(where: Path, rows: int) -> None:
    print(
        f"{where}: the {rows} vectors a stopped run kept changed on disk since it stopped: "
        "they are embedded again",
        file=sys.stderr,
        flush=True,
    )
