"""Dynamic batching: concurrent calls share one encode + head + FAISS call.

TensorFlow Serving's batching scheduler, reduced to what a CPU text encoder needs.
Calls put *jobs* (a few texts each) on one queue; a batch thread takes the first job
and then every job already queued, up to `max_batch_texts` texts, waiting at most
`max_wait` seconds for more, and runs them as one batch: one `model.embed` over all
their texts, one `index.search` per distinct label filter (with the largest `k` and
lowest `min_score` asked, then cut to each job's own), one record lookup. Each job
gets its own vectors, hits or error; a job whose caller has gone (cancelled, out of
time) is dropped when the batch is formed, so an abandoned call costs at most the
batch already running.

With encoding processes (server.encode_processes, the default) a batch thread's encode
+ head run in a worker process while it waits, off the server's GIL; a lone call run
inline encodes in this process (nothing to share the GIL with, no hop to pay).

Why it pays: encoding 8 texts at once costs ~1.6 ms a text here against ~3.9 ms
alone (bench/serving.py measures what it does to calls/s). With `max_wait` 0 (the
default) a lone caller never waits: batches form only from calls that queued while
the previous batch ran, so single-client latency stays that of an unbatched call.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from siamese_search.indexer.metadata import Filter
from siamese_search.indexer.store import Hit
from siamese_search.server.encode_processes import EncoderProcesses
from siamese_search.server.state import Serving

log = logging.getLogger("siamese.server")


class CallGone(Exception):
    """The caller was cancelled or ran out of time before its job was done."""

    def __init__(self, expired: bool):
        super().__init__("deadline exceeded" if expired else "the call was cancelled")
        self.expired = expired


@dataclass(eq=False)
class _Job:
    serving: Serving
    texts: Sequence[str]
    #: 0: embed only; otherwise search with these settings
    k: int
    labels: tuple[str, ...]
    min_score: float
    #: True while the caller still wants the answer (the gRPC context's is_active)
    wanted: Callable[[], bool]
    deadline: float | None  # time.monotonic() after which the answer is useless
    #: only rows passing this filter (indexer.metadata); None: every row
    where: Filter | None = None
    done: threading.Event = field(default_factory=threading.Event)
    vectors: np.ndarray | None = None
    hits: list[list[Hit]] | None = None
    error: BaseException | None = None
    abandoned: bool = False

    def gone(self) -> bool:
        if self.abandoned or not self.wanted():
            return True
        return self.deadline is not None and time.monotonic() >= self.deadline

    def finish(self, error: BaseException | None = None) -> None:
        self.error = error
        self.done.set()


@dataclass(frozen=True)
class BatchSettings:
    #: texts one batch encodes at most (TF Serving's max_batch_size)
    max_batch_texts: int = 32
    #: seconds the batch thread waits for more jobs once it has one (batch_timeout)
    max_wait: float = 0.0
    #: threads running batches (TF Serving's num_batch_threads): one a core, each
    #: encoding on the server's --threads BLAS threads (1); numpy frees the GIL
    threads: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))
    #: texts of one call per job; a larger call is sent as several jobs, one at a time,
    #: so it shares the batch threads with other calls and stops between its pieces
    piece_texts: int = 16
    #: worker processes that encode (server.encode_processes: off the server's GIL);
    #: one a batch thread. 0: batch threads encode in the server process
    processes: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))


class FairQueue:
    """Jobs queued per collection and taken round-robin: a collection with a hundred
    calls queued does not make another's one call wait behind them all (issue 37).
    Within a collection, first in, first out; `None` (stop) is taken before any job."""

    def __init__(self):
        self._lanes: dict[str, deque] = {}
        self._turns: deque[str] = deque()  # lanes with jobs, in the order they are served
        self._stop = False
        self._ready = threading.Condition()

    def put(self, job: _Job | None) -> None:
        with self._ready:
            if job is None:
                self._stop = True
            else:
                lane = job.serving.lane
                if lane not in self._lanes:
                    self._lanes[lane] = deque()
                if not self._lanes[lane]:
                    self._turns.append(lane)
                self._lanes[lane].append(job)
            self._ready.notify()

    def get(self, timeout: float | None = None, lane: str | None = None) -> _Job | None:
        """The next job in turn; with `lane`, the next of that lane only (a batch is
        one collection's: different models share no encode)."""
        with self._ready:

            def ready() -> bool:
                return self._stop or (
                    bool(self._lanes.get(lane)) if lane is not None else bool(self._turns)
                )

            if not self._ready.wait_for(ready, timeout):
                raise queue.Empty
            if self._stop:
                return None
            if lane is None:
                lane = self._turns.popleft()
            else:
                self._turns.remove(lane)
            jobs = self._lanes[lane]
            job = jobs.popleft()
            if jobs:
                self._turns.append(lane)  # its next job waits for the other lanes' turns
            else:
                del self._lanes[lane]
            return job

    def get_nowait(self, lane: str | None = None) -> _Job | None:
        return self.get(timeout=0, lane=lane)

    def empty(self) -> bool:
        with self._ready:
            return not self._turns and not self._stop


class Batcher:
    """The queue and the threads that run batches; `search` blocks the calling (gRPC
    worker) thread until its answer is ready."""

    def __init__(
        self,
        settings: BatchSettings = BatchSettings(),
        metrics=None,
        thread_setup: Callable[[], None] | None = None,
        blas_threads: int = 1,
    ):
        """`thread_setup` runs first in each batch thread: OpenMP's thread count is a
        per-thread setting, so FAISS's must be set in the thread that searches.
        `blas_threads`: each encoding process's BLAS threads (the server's --threads)."""
        self.settings = settings
        self.encoders = (
            EncoderProcesses(settings.processes, blas_threads) if settings.processes > 0 else None
        )
        self._thread_setup = thread_setup
        self._set_up = threading.local()  # which threads ran thread_setup
        self._count_lock = threading.Lock()
        self._running = 0  # jobs being run, by batch threads or inline
        self._queue = FairQueue()
        self._metrics = metrics
        self._threads = [
            threading.Thread(target=self._run, name=f"batch-{i}", daemon=True)
            for i in range(settings.threads)
        ]
        for thread in self._threads:
            thread.start()

    # ---- the caller's side -------------------------------------------------------
    def search(
        self,
        serving: Serving,
        texts: Sequence[str],
        k: int,
        labels: Sequence[str],
        min_score: float,
        wanted: Callable[[], bool],
        deadline: float | None,
        where: Filter | None = None,
    ) -> tuple[np.ndarray, list[list[Hit]]]:
        """Vectors and top-k hits for `texts` (k 0: vectors only), among the rows
        passing `where`; raises CallGone or the job's error."""
        vectors, hits = [], []
        for start in range(0, len(texts), self.settings.piece_texts):
            job = _Job(
                serving,
                texts[start : start + self.settings.piece_texts],
                k,
                tuple(labels),
                min_score,
                wanted,
                deadline,
                where,
            )
            self._wait(job)
            assert job.vectors is not None
            vectors.append(job.vectors)
            hits.extend(job.hits or [])
        return np.concatenate(vectors), hits

    def _wait(self, job: _Job) -> None:
        if job.gone():
            raise CallGone(expired=job.wanted())
        if not self._run_inline_if_idle(job):
            self._queue.put(job)
            # wake up now and then to notice a cancelled caller (gRPC gives no handle)
            while not job.done.wait(0.05):
                if job.gone():
                    job.abandoned = True
                    raise CallGone(expired=job.wanted())
        if job.error is not None:
            raise job.error

    def _run_inline_if_idle(self, job: _Job) -> bool:
        """With nothing queued or running, run the job in the caller's thread: there is
        nothing to batch it with, and the hand-off to a batch thread and back costs a
        lone call two thread switches (its latency is then that of an unbatched call)."""
        with self._count_lock:
            if self._running or not self._queue.empty():
                return False
            self._running += 1
        try:
            self._prepare_thread()
            # in this process: with nothing else running there is no GIL to share, and
            # the hop to an encoding process would only add to a lone call's latency
            self._run_batch([job], encoders=None)
        finally:
            with self._count_lock:
                self._running -= 1
        return True

    def _prepare_thread(self) -> None:
        if self._thread_setup is not None and not getattr(self._set_up, "done", False):
            self._thread_setup()
            self._set_up.done = True

    # ---- the batch thread's side ----------------------------------------------------
    def _take_batch(self, first: _Job) -> list[_Job]:
        batch, texts = [first], len(first.texts)
        give_up = time.monotonic() + self.settings.max_wait
        while texts < self.settings.max_batch_texts:
            try:
                remaining = give_up - time.monotonic()
                lane = first.serving.lane  # one collection's jobs: they share an encode
                job = (
                    self._queue.get(timeout=remaining, lane=lane)
                    if remaining > 0
                    else self._queue.get_nowait(lane)
                )
            except queue.Empty:
                break
            if job is None:  # stop: finish this batch, then let the thread end
                break
            batch.append(job)
            texts += len(job.texts)
        return batch

    def _run(self) -> None:
        self._prepare_thread()
        while True:
            first = self._queue.get()
            if first is None:  # stop (every thread sees it)
                return
            batch = self._take_batch(first)
            with self._count_lock:
                self._running += len(batch)
            try:
                self._run_batch(batch, self.encoders)
            finally:
                with self._count_lock:
                    self._running -= len(batch)

    def _run_batch(self, batch: list[_Job], encoders: EncoderProcesses | None) -> None:
        live = []
        for job in batch:
            if job.gone():
                job.finish(CallGone(expired=job.wanted()))
            else:
                live.append(job)
        by_serving: dict[int, list[_Job]] = {}
        for job in live:  # a swap between calls can put two snapshots in one batch
            by_serving.setdefault(id(job.serving), []).append(job)
        for jobs in by_serving.values():
            self._run_jobs(jobs, encoders)

    def warm(self, model, all_at_once: bool = False) -> None:
        """Load `model` in every encoding process before it serves (start, swap);
        `all_at_once` when nothing serves yet (EncoderProcesses.warm)."""
        if self.encoders is not None:
            self.encoders.warm(model, all_at_once)

    def _run_jobs(self, jobs: list[_Job], encoders: EncoderProcesses | None) -> None:
        try:
            _embed_together(jobs, encoders)
        except Exception as error:
            if len(jobs) == 1:
                jobs[0].finish(error)
                return
            for job in jobs:  # one bad job must not fail the others: retry each alone
                self._run_jobs([job], encoders)
            return
        if self._metrics is not None:
            self._metrics.batch_texts.observe(sum(len(job.texts) for job in jobs))
        searching = [job for job in jobs if job.k > 0]
        by_filter: dict[tuple[tuple[str, ...], str], list[_Job]] = {}
        for job in searching:
            scope = (job.labels, job.where.key if job.where is not None else "")
            by_filter.setdefault(scope, []).append(job)
        for group in by_filter.values():
            try:
                _search_together(group)
            except Exception as error:  # e.g. an unknown label: only this filter's jobs
                for job in group:
                    job.finish(error)
                continue
            for job in group:
                job.finish()
        for job in jobs:
            if job.k == 0:
                job.finish()

    def stop(self, wait: float = 1.0) -> None:
        """Stop the batch threads and encoding processes within about `wait` seconds:
        by now the server has drained its calls (--grace), so a batch still running
        has nobody waiting for it."""
        deadline = time.monotonic() + wait
        self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if self.encoders is not None:
            self.encoders.close(wait=max(0.1, deadline - time.monotonic()))


def _embed_together(jobs: list[_Job], encoders: EncoderProcesses | None) -> None:
    """One embed call over every job's texts (in an encoding process if there are
    any); each job gets its rows."""
    model = jobs[0].serving.model
    texts = [text for job in jobs for text in job.texts]
    vectors = model.embed(texts) if encoders is None else encoders.embed(model, texts)
    start = 0
    for job in jobs:
        job.vectors = vectors[start : start + len(job.texts)]
        start += len(job.texts)


def _search_together(jobs: list[_Job]) -> None:
    """One index search for jobs sharing a label filter: the largest k and lowest
    min_score asked, then each job's hits cut to its own k and min_score. Hits come
    best first, so the cut is exact for flat and IVF indexes; HNSW searches a beam of
    max(efSearch, k), the same one for any k up to efSearch (64)."""
    index = jobs[0].serving.index
    k = max(job.k for job in jobs)
    min_score = min(job.min_score for job in jobs)
    vectors = np.concatenate([job.vectors for job in jobs if job.vectors is not None])
    found = index.search(
        vectors, k, labels=list(jobs[0].labels), min_score=min_score, where=jobs[0].where
    )
    start = 0
    for job in jobs:
        rows = found[start : start + len(job.texts)]
        start += len(job.texts)
        job.hits = [[hit for hit in row if hit.score >= job.min_score][: job.k] for row in rows]
