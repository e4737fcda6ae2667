"""Writes over gRPC (Upsert / Delete): a durable journal, then a group commit.

A write is acknowledged once it is in the journal (`pending-writes.jsonl` in the index
directory: one JSON line, flushed and fsynced), so an acknowledged write survives a
crash. A committer thread turns what the journal holds into one new index version
through the same writer as `siamese-index` (`indexer.build.apply_changes`: writer
lock, staging, atomic publish), swaps it in, and only then drops those entries from
the journal. Killed between the publish and the drop, the next start replays them;
every change is idempotent (upsert by id, delete by id or label), so replaying one
already applied changes nothing.

Commit policy (`CommitPolicy`): commit when `every_rows` rows are pending (1: at
once), or when the oldest pending write is `every_seconds` old, or when a caller
waits for its write to be served. Writes arriving during a commit go into the next
one, so many small concurrent writes share versions instead of rebuilding the index
once each (a group commit, as databases do with their logs).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from siamese_search.core.atomic import write_bytes_atomic
from siamese_search.core.model_artifact import EmbeddingModel
from siamese_search.indexer.build import (
    BuildOptions,
    BuildReport,
    Change,
    ChangeConflict,
    apply_changes,
)

log = logging.getLogger("siamese.server")

JOURNAL = "pending-writes.jsonl"
#: journaled writes that could never apply (kept, not lost: an operator can look)
REJECTED = "rejected-writes.jsonl"
WRITES_LOCK = ".writes.lock"


@dataclass(frozen=True)
class CommitPolicy:
    every_rows: int = 1
    every_seconds: float = 0.0  # 0: no time trigger


class WritesUnavailable(Exception):
    """Writes cannot be taken (another server holds them, or no index directory)."""


class Journal:
    """Append-only log of acknowledged, not yet published changes (one process at a time).

    The file holds one JSON record a line; `records` mirrors it in memory (seq ->
    record), so rewrites never re-read or re-parse the file.
    """

    def __init__(self, index_dir: Path):
        self.path = Path(index_dir) / JOURNAL
        self._lock_file = open(Path(index_dir) / WRITES_LOCK, "a+")  # noqa: SIM115
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise WritesUnavailable(
                f"another siamese-serve takes writes for {index_dir}; send writes there"
            ) from None
        self.records: dict[int, dict] = self._read()
        self._next = max(self.records, default=0) + 1
        # rewritten at once: a line torn by a crash mid-append (never acknowledged) must
        # not stay, or the next append would continue it and be unreadable at replay
        self._fd: int | None = None
        #: why appends are refused: a failed append whose bytes could not be cut back
        self._broken: str | None = None
        self._rewrite()

    @property
    def entries(self) -> list[tuple[int, Change]]:
        return [(seq, _change(record)) for seq, record in self.records.items()]

    def _read(self) -> dict[int, dict]:
        if not self.path.is_file():
            return {}
        records = {}
        for line in self.path.read_text("utf-8").splitlines():
            try:
                record = json.loads(line)
                records[int(record["seq"])] = record
            except (ValueError, KeyError, TypeError):
                continue  # torn by a crash mid-append: it was never acknowledged
        return records

    def append(self, change: Change) -> int:
        """Durably record `change`; returns its sequence number (the acknowledgement)."""
        seq = self._next
        self._next += 1
        record = {
            "seq": seq,
            "kind": change.kind,
            "ids": list(change.ids),
            "texts": list(change.texts),
            "labels": list(change.labels) if change.labels is not None else None,
            "label": change.label,
        }
        self._append(_line(record))
        self.records[seq] = record
        return seq

    def _append(self, data: bytes) -> None:
        """Write and fsync one line; on failure (disk full, file size limit, I/O error)
        cut the file back to where it was before raising, so no half line stays for the
        next append to land on (that append would be acknowledged, then unreadable at
        replay: a lost write). If even the cut fails, refuse every later append."""
        if self._broken is not None:
            raise OSError(f"the write journal {self.path} cannot take writes: {self._broken}")
        assert self._fd is not None
        before = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError as error:
            try:
                os.ftruncate(self._fd, before)
                os.fsync(self._fd)
            except OSError as cut_error:
                self._broken = (
                    f"an append failed ({error}) and its partial bytes could not be removed "
                    f"({cut_error}); restart the server once the cause is fixed"
                )
            log.error(
                "journal_append_failed",
                extra={"fields": {"path": str(self.path), "error": str(error)[:300]}},
            )
            raise

    def drop_through(self, seq: int) -> None:
        """Forget entries up to `seq` (they are in a published version)."""
        self.records = {s: r for s, r in self.records.items() if s > seq}
        self._rewrite()

    def reject(self, seq: int, reason: str) -> None:
        """Move entry `seq` to the rejected file (appended, fsynced), then drop it."""
        with open(self.path.parent / REJECTED, "a", encoding="utf-8") as handle:
            _append_line(handle, {"rejected": reason, "entry": self.records[seq]})
        del self.records[seq]
        self._rewrite()

    def _rewrite(self) -> None:
        """The file replaced atomically by what `records` holds; reopened for appends."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        write_bytes_atomic(self.path, b"".join(_line(r) for r in self.records.values()))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._broken = None  # the file is whole again

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._lock_file.close()


def _line(record: dict) -> bytes:
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


def _append_line(handle, record: dict) -> None:
    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


def _change(record: dict) -> Change:
    labels = record.get("labels")
    return Change(
        record["kind"],
        tuple(record.get("ids", ())),
        tuple(record.get("texts", ())),
        tuple(labels) if labels is not None else None,
        record.get("label", ""),
    )


class Committer:
    """Takes changes into the journal and commits them as new versions (one thread)."""

    def __init__(
        self,
        index_dir: Path,
        policy: CommitPolicy,
        model_for_writes: Callable[[], EmbeddingModel],
        published: Callable[[str], None],
        options: BuildOptions,
    ):
        self.index_dir = Path(index_dir)
        self.policy = policy
        self._model_for_writes = model_for_writes
        self._published = published  # called with the new version (the server swaps it in)
        self._options = options
        # a server may start before the index directory exists (it waits for a build):
        # the journal is then opened with the first write
        self.journal: Journal | None = Journal(index_dir) if self.index_dir.is_dir() else None
        self._cond = threading.Condition()
        self._committed_through = 0
        self._waiting = 0
        self._oldest: float | None = (
            time.monotonic() if self.journal and self.journal.records else None
        )
        self._failure: tuple[int, str] | None = None  # (through seq, why) of the last failure
        self._rejected: dict[int, str] = {}  # seq -> why it can never apply
        #: after a conflict, commit one write at a time to find (and reject) the bad one
        self._one_at_a_time = False
        self._last_version = ""
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="write-committer", daemon=True)
        self._thread.start()

    # ---- callers -------------------------------------------------------------------
    def submit(self, change: Change) -> int:
        """Journal `change` (durable when this returns); WritesUnavailable if another
        server holds this index's writes."""
        with self._cond:
            if self.journal is None:
                self.journal = Journal(self.index_dir)
            seq = self.journal.append(change)
            if self._oldest is None:
                self._oldest = time.monotonic()
            self._cond.notify_all()
            return seq

    def wait_for(
        self, seq: int, timeout: float | None, is_active: Callable[[], bool] = lambda: True
    ) -> str:
        """Block until `seq` is in a served version; returns that version's name.

        Raises TimeoutError (out of time, or the caller is gone), or RuntimeError with
        the reason a commit failed or that the server is stopping."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._waiting += 1
            self._cond.notify_all()
            try:
                while self._committed_through < seq or seq in self._rejected:
                    if seq in self._rejected:
                        raise RuntimeError(f"the write was rejected: {self._rejected[seq]}")
                    if self._failure is not None and self._failure[0] >= seq:
                        raise RuntimeError(self._failure[1])
                    if self._stop:
                        raise RuntimeError("the server is stopping; the write stays journaled")
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if (remaining is not None and remaining <= 0) or not is_active():
                        raise TimeoutError
                    self._cond.wait(0.5 if remaining is None else min(remaining, 0.5))
                return self._last_version
            finally:
                self._waiting -= 1

    @property
    def pending_rows(self) -> int:
        records = self.journal.records.values() if self.journal else ()
        return sum(max(len(r["ids"]), 1) for r in records)

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        # a commit under way is not waited for (shutdown is bounded by --grace): its
        # entries stay in the journal and the next start replays them
        self._thread.join(timeout=1.0)
        if self.journal is not None and not self._thread.is_alive():
            self.journal.close()

    # ---- the committer thread ----------------------------------------------------------
    def _due(self) -> bool:
        if self.journal is None or not self.journal.records:
            return False
        if self._waiting or self._one_at_a_time or self.pending_rows >= self.policy.every_rows:
            return True
        age = time.monotonic() - (self._oldest or time.monotonic())
        return self.policy.every_seconds > 0 and age >= self.policy.every_seconds

    def _run(self) -> None:
        backoff = 0.1
        while True:
            with self._cond:
                while not self._stop and not self._due():
                    self._cond.wait(0.05)
                if self._stop or self.journal is None:
                    return
                batch = list(self.journal.entries)
                if self._one_at_a_time:
                    batch = batch[:1]
            through = batch[-1][0]
            try:
                report = self._commit([change for _, change in batch])
            except ChangeConflict as error:
                self._conflict(batch, str(error))
                continue
            except Exception as error:  # keep the journal; tell the waiters; retry later
                log.error("commit_failed", extra={"fields": {"error": str(error)[:500]}})
                with self._cond:
                    self._failure = (through, f"commit failed: {error}")
                    self._cond.notify_all()
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            with self._cond:
                assert self.journal is not None
                self.journal.drop_through(through)
                self._committed_through = through
                self._last_version = report.version
                self._failure = None
                self._oldest = time.monotonic() if self.journal.records else None
                if not self.journal.records:
                    self._one_at_a_time = False
                self._cond.notify_all()
            log.info(
                "writes_committed",
                extra={
                    "fields": {
                        "version": report.version,
                        "writes": len(batch),
                        "added": report.added,
                        "removed": report.removed,
                    }
                },
            )

    def _conflict(self, batch: list[tuple[int, Change]], reason: str) -> None:
        """A batch that cannot apply: find the write(s) at fault, one at a time, and
        move them to the rejected file; the others are committed as usual."""
        with self._cond:
            if len(batch) > 1:
                self._one_at_a_time = True
                return
            seq = batch[0][0]
            assert self.journal is not None
            self.journal.reject(seq, reason)
            self._rejected[seq] = reason
            self._cond.notify_all()
        log.error("write_rejected", extra={"fields": {"seq": seq, "reason": reason[:500]}})

    def _commit(self, changes: list[Change]) -> BuildReport:
        report = apply_changes(self.index_dir, self._model_for_writes(), changes, self._options)
        self._published(report.version)
        return report
