"""Encoding in worker processes: a batch's encode + head run off the server's GIL.

Why: numpy releases and retakes the GIL around each of the ~60 array operations of one
forward pass of the embedded encoder. In a serving process, gRPC's Python threads
want the GIL too, so a batch thread waited for it after almost every operation: two
threads encoding batches of two texts beside a Python thread used ~5.1 ms of CPU a
batch against 3.5 ms alone, and under 8 concurrent clients a batch took ~14 ms of
wall time for ~8 ms of CPU. An encoder in a process of its own has its own GIL
(bench/serving.py measures what that does to calls/s).

One worker process per batch thread. A worker runs `model.embed` exactly as the server
would (same code, same BLAS thread count), so its vectors are bit-identical. It loads
a model directory on its first request for it, keeps the two it used last (a model
swap brings a second one), and refuses a directory whose fingerprint is no longer the
one the server loaded (files changed under the server: an error, never vectors of
another model). A worker that dies (killed, out of memory) is started again and the
batch is tried once more on the new one. Workers start in their own session (a
signal to the server's process group is the server's to handle) and exit when the
server closes their socket, which the kernel does if the server is killed.

Protocol: a socketpair per worker, `multiprocessing.connection.Connection` on each
end (pickled messages, only ever between this server and its own children).
Request: (model directory, model fingerprint, texts); reply: ("ok", vectors) or
("error", exception); None asks the worker to exit.
"""

from __future__ import annotations

import logging
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection

import numpy as np

log = logging.getLogger("siamese.server")

#: seconds workers are given to finish a batch and exit when asked, then killed
EXIT_WAIT = 1.0


class EncoderProcessDied(RuntimeError):
    """A worker process ended while it had a batch (killed, out of memory)."""


class _Worker:
    """One worker process and the server's end of its socket."""

    def __init__(self, slot: int, threads: int):
        self.slot = slot
        ours, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "siamese_search.server.encode_worker",
                    str(theirs.fileno()),
                    str(threads),
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            theirs.close()
        self.connection = Connection(ours.detach())

    def embed(self, directory: str, fingerprint: str, texts: list[str]) -> np.ndarray:
        try:
            self.connection.send((directory, fingerprint, texts))
            status, value = self.connection.recv()
        except (EOFError, OSError) as error:
            raise EncoderProcessDied(
                f"encoding process {self.slot} (pid {self.process.pid}) ended: {error!r}"
            ) from None
        if status == "error":
            raise value
        return value


class EncoderProcesses:
    """`count` worker processes embedding batches; `embed` may be called from several
    threads at once (each call has a worker to itself).

    Workers sit in numbered slots; a slot is free when it is on the `_free` queue, and
    a dead worker is replaced in its slot, so whoever holds a slot holds its current
    worker."""

    def __init__(self, count: int, threads: int):
        self._threads = threads
        self._lock = threading.Lock()  # guards self.workers and self._closed
        self.workers = [_Worker(slot, threads) for slot in range(count)]
        self._free: queue.Queue[int] = queue.Queue()
        for slot in range(count):
            self._free.put(slot)
        self._closed = False

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [worker.process.pid for worker in self.workers]

    def embed(self, model, texts: Sequence[str]) -> np.ndarray:
        """`model.embed(texts)`, computed in a worker process."""
        if self._closed:
            raise RuntimeError("the server is stopping")
        slot = self._free.get()
        try:
            return self._embed_in(slot, model, list(texts))
        finally:
            self._free.put(slot)

    def warm(self, model, all_at_once: bool = False) -> None:
        """Make every worker load `model` before it serves. A model swap warms one
        worker at a time so the others keep serving; before anything serves
        (`all_at_once`: the server is starting) they all load together, which cuts the
        time to SERVING by about a worker's load."""
        if all_at_once:
            slots = [self._free.get() for _ in range(len(self.workers))]
            try:
                with ThreadPoolExecutor(len(slots), thread_name_prefix="warm") as pool:
                    warming = [
                        pool.submit(self._embed_in, slot, model, ["warm-up query"])
                        for slot in slots
                    ]
                    for done in warming:
                        done.result()
            finally:
                for slot in slots:
                    self._free.put(slot)
            return
        pending = set(range(len(self.workers)))
        while pending:
            slot = self._free.get()
            try:
                if slot in pending:
                    self._embed_in(slot, model, ["warm-up query"])
                    pending.discard(slot)
            finally:
                self._free.put(slot)

    def _embed_in(self, slot: int, model, texts: list[str]) -> np.ndarray:
        """Embed on the worker in `slot` (held by the caller); a dead one is replaced
        and the texts sent once more."""
        try:
            return self.workers[slot].embed(str(model.directory), model.fingerprint, texts)
        except EncoderProcessDied as error:
            if self._closed:  # killed by close(): the server is stopping
                raise RuntimeError("the server is stopping") from None
            log.error("encoder_process_died", extra={"fields": {"error": str(error)}})
            worker = self._replace(slot)
            return worker.embed(str(model.directory), model.fingerprint, texts)

    def _replace(self, slot: int) -> _Worker:
        with self._lock:
            if self._closed:  # close() has taken its list of workers to stop
                raise RuntimeError("the server is stopping")
            dead = self.workers[slot]
            dead.process.kill()
            dead.process.wait()
            dead.connection.close()
            self.workers[slot] = _Worker(slot, self._threads)
            return self.workers[slot]

    def close(self, wait: float = EXIT_WAIT) -> None:
        """Ask each worker to exit once its batch is done; any still busy after `wait`
        seconds, or slow to exit, is killed (shutdown stays within --grace + ~1 s)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers = list(self.workers)
        deadline = time.monotonic() + wait
        for _ in workers:  # a worker is ours once no batch holds its slot
            try:
                slot = self._free.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            try:
                workers[slot].connection.send(None)
            except OSError:
                pass  # already gone
        for worker in workers:
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
            worker.connection.close()
