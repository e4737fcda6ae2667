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
import shutil
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from siamese_search.core.atomic import write_bytes_atomic
from siamese_search.core.errors import ArtifactMismatchError, UserError
from siamese_search.core.model_artifact import EmbeddingModel
from siamese_search.indexer import layout
from siamese_search.indexer.build import apply_changes
from siamese_search.indexer.changes import Change, ChangeConflict
from siamese_search.indexer.options import BuildOptions, BuildReport

log = logging.getLogger("siamese.server")

JOURNAL = "pending-writes.log"
#: the journal's name before it had a header (read once, then rewritten as JOURNAL)
LEGACY_JOURNAL = "pending-writes.jsonl"
#: the header's format number
JOURNAL_FORMAT = 2
#: journaled writes that could never apply (kept, not lost: an operator can look)
REJECTED = "rejected-writes.jsonl"
WRITES_LOCK = layout.WRITES_LOCK


@dataclass(frozen=True)
class CommitPolicy:
    every_rows: int = 1
    every_seconds: float = 0.0  # 0: no time trigger
    #: upserted rows the journal may hold before they are committed; an Upsert beyond
    #: is refused (RESOURCE_EXHAUSTED, which clients retry) until commits catch up.
    #: Acknowledging is a journal append (fast), committing is embedding (~1,300 texts
    #: a second a core): four clients upserting in a loop left 858,000 rows waiting
    #: after 30 s, all in memory and all for one commit. 50,000 short texts commit in
    #: ~20 s on 2 cores, holding ~130 MB of vectors.
    max_pending_rows: int = 50_000


#: free bytes on the index's file system under which a failed commit is said to be
#: for want of space (a version's vector file alone is often larger)
LOW_DISK_BYTES = 64 * 1024 * 1024


def disk_full_note(index_dir: Path) -> str:
    """What to add to a failed commit's cause when the index's disk is (nearly) full:
    FAISS says only "309760 requested and 295936 written" when a write is cut short."""
    try:
        free = shutil.disk_usage(index_dir).free
    except OSError:
        return ""
    if free >= LOW_DISK_BYTES:
        return ""
    return (
        f" (the index's disk has {free / 1e6:.1f} MB free: free space there, and the "
        "server commits the journal's writes by itself)"
    )


class WritesUnavailable(Exception):
    """Writes cannot be taken (another server holds them, or no index directory)."""


class WritesBacklogged(Exception):
    """The journal holds as many upserted rows as it may (CommitPolicy.max_pending_rows)
    until commits catch up: retry later."""


class JournalDamaged(UserError):
    """The journal has lines that cannot be read: acknowledged writes may be in them."""


KINDS = ("upsert", "delete", "delete-label")


def why_invalid(record: object) -> str | None:
    """Why a parsed journal record can never apply (None: it can). Checked when the
    journal is read, so one bad entry is set aside instead of failing every commit."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if not isinstance(record.get("seq"), int) or record["seq"] < 1:
        return "no positive integer seq"
    if record.get("kind") not in KINDS:
        return f"unknown kind {record.get('kind')!r}"
    ids, texts, labels = record.get("ids", []), record.get("texts", []), record.get("labels")
    for name, values in (("ids", ids), ("texts", texts)):
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            return f"{name} is not a list of strings"
    if labels is not None and (
        not isinstance(labels, list) or not all(isinstance(v, str) for v in labels)
    ):
        return "labels is not a list of strings"
    if not isinstance(record.get("label", ""), str):
        return "label is not a string"
    if record["kind"] == "upsert" and (
        len(texts) != len(ids) or (labels is not None and len(labels) != len(ids))
    ):
        return "ids, texts and labels differ in length"
    metadata = record.get("metadata")
    if metadata is not None and (
        not isinstance(metadata, list)
        or len(metadata) != len(ids)
        or not all(isinstance(fields, dict) for fields in metadata)
    ):
        return "metadata is not one object per id"
    return None


class Journal:
    """Append-only log of acknowledged, not yet published changes (one process at a time).

    The file holds a header line, then one record a line, each framed with its CRC-32
    (`_journal_line`); `records` mirrors it in memory (seq -> record), so rewrites never
    re-read or re-parse the file.

    The journal knows its own length: each rewrite (at open, after a commit, after a
    rejection) writes a header naming the sequence numbers it holds (`seqs`, as ranges)
    and the one the next append gets (`next`); appends follow in order. So a line
    removed from the middle, a file cut short inside what the last rewrite wrote, or an
    emptied file is a known loss, named by sequence number, not a journal that reads
    as if nothing were missing. (Appends after the last rewrite cut from the end look
    like a crash mid-append: the fsync-per-append design cannot tell them apart without
    a second write per append.)

    Read at open: a last line without its newline is an append torn by a crash (never
    acknowledged: the acknowledgement follows the fsync of the whole line) and is
    dropped. A record that parses but can never apply goes to `REJECTED` with the
    reason. Anything else (an unreadable line, missing records) is damage and may hold
    acknowledged writes: a copy of the file is kept (`<journal>.damaged-<time>`) and
    the journal refuses to open (`JournalDamaged`), unless `salvage`, which keeps the
    readable entries, moves the unreadable lines to `REJECTED` and names what it could
    not recover there and in the log.

    A journal of the format before the header (`LEGACY_JOURNAL`) is read once and
    rewritten in this one; plain-JSON lines (older still) are read only from a legacy
    file with no framed line.
    """

    def __init__(self, index_dir: Path, salvage: bool = False):
        self.path = Path(index_dir) / JOURNAL
        self._lock_file = open(Path(index_dir) / WRITES_LOCK, "a+")  # noqa: SIM115
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise WritesUnavailable(
                f"another siamese-serve takes writes for {index_dir}; send writes there"
            ) from None
        legacy = Path(index_dir) / LEGACY_JOURNAL
        try:
            if self.path.is_file():
                self.records, self._next = self._read(salvage)
            elif legacy.is_file():
                self.records = _read_legacy(legacy, salvage)
                self._next = max(self.records, default=0) + 1
            else:
                self.records, self._next = {}, 1
        except BaseException:
            self._lock_file.close()
            raise
        # rewritten at once: a line torn by a crash mid-append (never acknowledged) must
        # not stay, or the next append would continue it and be unreadable at replay
        self._fd: int | None = None
        #: why appends are refused: a failed append whose bytes could not be cut back
        self._broken: str | None = None
        self._rewrite()
        legacy.unlink(missing_ok=True)  # its records are in the journal now

    @property
    def entries(self) -> list[tuple[int, Change]]:
        return [(seq, _change(record)) for seq, record in self.records.items()]

    def _read(self, salvage: bool) -> tuple[dict[int, dict], int]:
        """(records, next seq) of the journal file; JournalDamaged on damage."""
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        lines.pop()  # after the last newline: empty, or an append torn by a crash
        header = None
        if lines:
            try:
                header = _header(_read_journal_line(lines[0]))
            except (UnicodeDecodeError, ValueError):
                header = None
        if header is None:
            # no header: emptied, cut inside it, or overwritten. Nothing can say what
            # it held; a salvage keeps whatever records still read
            expected: list[int] = []
            next_seq = 1
            body = list(enumerate(lines, start=1))
            problems = [
                "its header line is missing or unreadable"
                if lines
                else "it is empty (a journal always holds its header line)"
            ]
        else:
            expected, next_seq = header
            body = list(enumerate(lines[1:], start=2))
            problems = []
        records, unreadable, invalid, accounted = _parse_records(body, plain=False)
        lost = _missing(expected, next_seq, accounted)
        if unreadable:
            problems.append(_unreadable_text(unreadable))
        if lost:
            problems.append(f"records {_ranges_text(lost)} are missing")
        if problems:
            invalid += _damaged(self.path, data, problems, lost, unreadable, len(records), salvage)
        if invalid:
            _set_aside(self.path.parent, invalid)
        highest = max([*accounted, *lost, next_seq - 1], default=0)
        return dict(sorted(records.items())), highest + 1

    def append(self, change: Change) -> int:
        """Durably record `change`; returns its sequence number (the acknowledgement)."""
        seq = self._next
        record = {
            "seq": seq,
            "kind": change.kind,
            "ids": list(change.ids),
            "texts": list(change.texts),
            "labels": list(change.labels) if change.labels is not None else None,
            "label": change.label,
        }
        if change.metadata is not None:
            record["metadata"] = list(change.metadata)
        self._append(_journal_line(record))
        # only now: a failed append takes no number (the next record must follow on)
        self._next += 1
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
        opened = os.fstat(self._fd)
        if not self._still_at_its_path(opened):
            # appending to a deleted (or replaced) file succeeds and reaches no one: an
            # acknowledged write would live only as long as this process
            raise OSError(
                f"the write journal {self.path} was deleted or replaced under the server "
                "(its index directory removed or moved?): writes are refused; restore the "
                "index directory and restart the server"
            )
        before = opened.st_size
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

    def _still_at_its_path(self, opened: os.stat_result) -> bool:
        """Whether the open journal is still the file at `path` (not unlinked, not
        replaced by another)."""
        try:
            at_path = os.stat(self.path)
        except FileNotFoundError:
            return False
        return opened.st_nlink > 0 and (opened.st_dev, opened.st_ino) == (
            at_path.st_dev,
            at_path.st_ino,
        )

    def drop_through(self, seq: int) -> None:
        """Forget entries up to `seq` (they are in a published version)."""
        self.records = {s: r for s, r in self.records.items() if s > seq}
        self._rewrite()

    def reject(self, seq: int, reason: str) -> None:
        """Move entry `seq` to the rejected file (appended, fsynced), then drop it."""
        with open(self.path.parent / REJECTED, "ab") as handle:
            _append_line(handle, {"rejected": reason, "entry": self.records[seq]})
        del self.records[seq]
        self._rewrite()

    def _rewrite(self) -> None:
        """The file replaced atomically by what `records` holds; reopened for appends."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        header = {"journal": JOURNAL_FORMAT, "seqs": _ranges(self.records), "next": self._next}
        write_bytes_atomic(
            self.path,
            _journal_line(header) + b"".join(_journal_line(r) for r in self.records.values()),
        )
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._broken = None  # the file is whole again

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._lock_file.close()


def _parse_records(numbered_lines, plain: bool):
    """(records by seq, unreadable (line number, bytes), invalid (record, why), every
    seq seen) of journal lines; `plain`: unframed JSON lines are read too."""
    records: dict[int, dict] = {}
    unreadable: list[tuple[int, bytes]] = []
    invalid: list[tuple[object, str]] = []
    accounted: set[int] = set()  # seqs whose line was there, applicable or not
    for number, line in numbered_lines:
        try:
            record = _read_journal_line(line, plain=plain)
        except (UnicodeDecodeError, ValueError):
            unreadable.append((number, line))
            continue
        seq = record.get("seq") if isinstance(record, dict) else None
        if isinstance(seq, int) and seq > 0:
            accounted.add(seq)
        reason = why_invalid(record)
        if reason is not None or record["seq"] in records:
            invalid.append((record, reason or f"seq {record['seq']} repeated"))
            continue
        records[record["seq"]] = record
    return records, unreadable, invalid, accounted


def _read_legacy(path: Path, salvage: bool) -> dict[int, dict]:
    """The records of a journal written before the header (no length to check): CRC
    lines, or plain JSON lines in a file that has no CRC line (a file was always
    rewritten whole in one format). Damage is refused as in `Journal`."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    lines.pop()
    plain = not any(line[:1] != b"{" for line in lines if line)
    records, unreadable, invalid, _ = _parse_records(enumerate(lines, start=1), plain=plain)
    if unreadable:
        problems = [_unreadable_text(unreadable)]
        invalid += _damaged(path, data, problems, [], unreadable, len(records), salvage)
    if invalid:
        _set_aside(path.parent, invalid)
    return dict(sorted(records.items()))


def _unreadable_text(unreadable: list[tuple[int, bytes]]) -> str:
    lines = ", ".join(str(n) for n, _ in unreadable[:10])
    return f"{len(unreadable)} unreadable line(s) (line {lines})"


def _damaged(
    path: Path,
    data: bytes,
    problems: list[str],
    lost: list[int],
    unreadable: list[tuple[int, bytes]],
    readable: int,
    salvage: bool,
) -> list[tuple[object, str]]:
    """A damaged journal: keep a copy and log; raise JournalDamaged unless salvaging,
    when the unreadable lines and the missing seqs are returned, to be set aside (what
    could not be recovered, named)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    copy = path.with_name(f"{path.name}.damaged-{stamp}")
    write_bytes_atomic(copy, data)
    said = "; ".join(problems)
    log.error(
        "journal_damaged",
        extra={
            "fields": {
                "path": str(path),
                "copy": str(copy),
                "problems": said,
                "missing_seqs": _ranges_text(lost),
                "unreadable_lines": len(unreadable),
                "readable_entries": readable,
                "salvage": salvage,
            }
        },
    )
    if not salvage:
        raise JournalDamaged(
            f"the write journal {path} is damaged: {said}; acknowledged writes may "
            f"be lost. A copy is in {copy}. Look at it, then start with "
            f"--salvage-journal to keep the {readable} readable entries (what cannot be "
            f"recovered is named in {REJECTED} and the log)"
        )
    log.error(
        "journal_salvaged",
        extra={
            "fields": {
                "path": str(path),
                "kept_entries": readable,
                "not_recovered_seqs": _ranges_text(lost),
                "not_recovered_lines": [n for n, _ in unreadable][:100],
            }
        },
    )
    aside: list[tuple[object, str]] = [
        ({"line": n, "bytes": line.decode("utf-8", "backslashreplace")}, "unreadable")
        for n, line in unreadable
    ]
    if lost:
        aside.append(({"seqs": _ranges(lost)}, "missing: not recovered"))
    return aside


def _set_aside(directory: Path, invalid: list[tuple[object, str]]) -> None:
    with open(directory / REJECTED, "ab") as handle:
        for entry, reason in invalid:
            _append_line(handle, {"rejected": reason, "entry": entry})
    log.error(
        "journal_entries_rejected",
        extra={"fields": {"path": str(directory / JOURNAL), "entries": len(invalid)}},
    )


def _header(record: object) -> tuple[list[int], int] | None:
    """(seqs the last rewrite wrote, the seq the first append after it got) of a header
    record; None if `record` is not one."""
    if not isinstance(record, dict) or record.get("journal") != JOURNAL_FORMAT:
        return None
    ranges, next_seq = record.get("seqs"), record.get("next")
    if not isinstance(next_seq, int) or next_seq < 1 or not isinstance(ranges, list):
        return None
    seqs: list[int] = []
    for pair in ranges:
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, int) for v in pair)
        ):
            return None
        seqs.extend(range(pair[0], pair[1] + 1))
    return seqs, next_seq


def _missing(expected: list[int], next_seq: int, seen: set[int]) -> list[int]:
    """Seqs that should be in the journal and are not: any the header names, and any
    gap among the appends after it (next, next + 1, ... up to the last one seen)."""
    lost = [seq for seq in expected if seq not in seen]
    appended = sorted(seq for seq in seen if seq >= next_seq)
    if appended:
        lost.extend(seq for seq in range(next_seq, appended[-1]) if seq not in seen)
    return lost


def _ranges(seqs) -> list[list[int]]:
    """Sorted seqs as inclusive [first, last] runs: [1, 2, 3, 7] -> [[1, 3], [7, 7]]."""
    runs: list[list[int]] = []
    for seq in sorted(seqs):
        if runs and seq == runs[-1][1] + 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    return runs


def _ranges_text(seqs) -> str:
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in _ranges(seqs))


def _line(record: dict) -> bytes:
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


def _journal_line(record: dict) -> bytes:
    """A journal record framed with its CRC-32: `<8 hex digits> <JSON>\n`. A flipped bit
    inside a value still parses as JSON; the checksum makes it damage, not a wrong write."""
    payload = json.dumps(record, ensure_ascii=False).encode("utf-8")
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def _read_journal_line(line: bytes, plain: bool = False) -> dict:
    """The record of one journal line; ValueError when its checksum or JSON is wrong.
    With `plain`, lines without a checksum (journals written before it) are read as
    plain JSON; otherwise such a line is damage (an edited line must not be taken as a
    different write)."""
    if plain and line[:1] == b"{":
        record = json.loads(line.decode("utf-8"))
    else:
        checksum, _, payload = line.partition(b" ")
        if len(checksum) != 8 or int(checksum, 16) != zlib.crc32(payload):
            raise ValueError("checksum mismatch")
        record = json.loads(payload.decode("utf-8"))
    return record  # a value that is not a record is for why_invalid to name


def _append_line(handle, record: dict) -> None:
    """Append one record to a binary file opened for appending, durably."""
    handle.write(_line(record))
    handle.flush()
    os.fsync(handle.fileno())


def _change(record: dict) -> Change:
    labels = record.get("labels")
    metadata = record.get("metadata")
    return Change(
        record["kind"],
        tuple(record.get("ids", ())),
        tuple(record.get("texts", ())),
        tuple(labels) if labels is not None else None,
        record.get("label", ""),
        tuple(metadata) if metadata is not None else None,
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
        salvage_journal: bool = False,
    ):
        self.index_dir = Path(index_dir)
        self._salvage = salvage_journal
        self.policy = policy
        self._model_for_writes = model_for_writes
        self._published = published  # called with the new version (the server swaps it in)
        self._options = options
        # a server may start before the index directory exists (it waits for a build):
        # the journal is then opened with the first write
        self.journal: Journal | None = (
            Journal(index_dir, salvage_journal) if self.index_dir.is_dir() else None
        )
        self._cond = threading.Condition()
        self._committed_through = 0
        self._waiting = 0
        self._oldest: float | None = (
            time.monotonic() if self.journal and self.journal.records else None
        )
        self._failure: tuple[int, str] | None = None  # (through seq, why) of the last failure
        #: when commits started failing (None: the last one succeeded); GetInfo, metrics
        self.failing_since: float | None = None
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
                self.journal = Journal(self.index_dir, self._salvage)
            if change.kind == "upsert":
                self._refuse_beyond_the_backlog(len(change.ids))
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

    def _refuse_beyond_the_backlog(self, rows: int) -> None:
        """WritesBacklogged when `rows` more upserted rows would take the journal past
        the policy's max_pending_rows (one write is always taken: an empty journal
        takes any call)."""
        assert self.journal is not None
        waiting = sum(
            len(record["ids"])
            for record in self.journal.records.values()
            if record["kind"] == "upsert"
        )
        if waiting and waiting + rows > self.policy.max_pending_rows:
            raise WritesBacklogged(
                f"{waiting:,} upserted rows wait to be committed, the most this server "
                f"holds (--max-pending-rows {self.policy.max_pending_rows:,}): retry in a "
                "moment (nothing of this call was kept), or load a large table with "
                "`siamese-index add`"
            )

    @property
    def last_failure(self) -> str:
        """Why the last commit failed ("" once one succeeds)."""
        failure = self._failure
        return failure[1] if failure is not None else ""

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
                cause = f"{type(error).__name__}: {error}" + disk_full_note(self.index_dir)
                log.error(
                    "commit_failed",
                    extra={
                        "fields": {
                            "index": str(self.index_dir),
                            "writes": len(batch),
                            "error": cause[:500],
                        }
                    },
                )
                with self._cond:
                    self._failure = (through, f"commit failed: {cause}")
                    if self.failing_since is None:
                        self.failing_since = time.time()
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
                self.failing_since = None
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
        try:
            report = apply_changes(self.index_dir, self._model_for_writes(), changes, self._options)
        except ArtifactMismatchError:
            # the current version was made with another model (a re-embedding job
            # published it): serve it, model and index together, then commit onto it
            # with its model, so the write is embedded as the version it joins
            current = layout.current_version(self.index_dir)
            if current is None:
                raise
            self._published(current)
            report = apply_changes(self.index_dir, self._model_for_writes(), changes, self._options)
        self._published(report.version)
        return report
