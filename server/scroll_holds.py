"""Keeps the version a scroll reads from being pruned while the scroll goes on.

Why: a scroll reads one version (server/scrolling.py), and a server commits a new
version per write by default while keeping the 3 newest (`--commit-rows 1`,
indexer.layout.DEFAULT_KEEP_VERSIONS). Three writes during a scroll made its next page
NOT_FOUND, so under steady writes a scroll of more than a few pages never finished.
As Elasticsearch's scroll keep-alive does, each page answered with a next token holds
its version (a reader's lock, which `prune` leaves alone) until KEEP_ALIVE_SECONDS
after that page; a scroll idle for longer may find its version pruned (NOT_FOUND:
start again). A lapsed hold is let go at the next scroll call (or at stop), so one
may outlive its keep-alive while no scroll runs. At most MAX_HELD versions are held
at once, since each keeps its files on disk: beyond, the hold that would lapse first
is let go.

On Milvus the index directory decides which version heads stay (MilvusWriter.prune):
a server that has the directory holds its version, and so the head; one serving an
alias alone cannot hold anything, and a scroll there may still meet NOT_FOUND.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import IO

from siamese_search.indexer.store import VersionGone, VersionSource

#: how long after its last page a scroll's version stays held
KEEP_ALIVE_SECONDS = 300.0
#: versions held at once, over every collection
MAX_HELD = 16


class ScrollHolds:
    def __init__(
        self,
        keep_alive: float = KEEP_ALIVE_SECONDS,
        max_held: int = MAX_HELD,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.keep_alive = keep_alive
        self.max_held = max_held
        self._clock = clock
        self._lock = threading.Lock()
        #: (source, version name) -> (the hold, when it lapses); a source is keyed by
        #: identity, so a collection dropped and made again under its name is another
        self._held: dict[tuple[object, str], tuple[IO, float]] = {}

    def keep(self, source: VersionSource, name: str) -> None:
        """Hold `source`'s version `name` until KEEP_ALIVE after now (taking the hold
        if it is not held yet). A version gone already is left to the next page's
        NOT_FOUND."""
        key = (source, name)
        with self._lock:
            self._release(self._lapsed())
            until = self._clock() + self.keep_alive
            if key in self._held:
                self._held[key] = (self._held[key][0], until)
                return
        try:
            handle = source.hold_version(name)
        except VersionGone:
            return
        if handle is None:
            return
        with self._lock:
            if key in self._held:  # another page of the scroll took it meanwhile
                handle.close()
                self._held[key] = (self._held[key][0], until)
                return
            self._held[key] = (handle, until)
            if len(self._held) > self.max_held:
                first = min(self._held, key=lambda held: self._held[held][1])
                self._release([first])

    def held(self) -> list[tuple[object, str]]:
        """The (source, version) pairs held now (for tests and metrics)."""
        with self._lock:
            self._release(self._lapsed())
            return list(self._held)

    def close(self) -> None:
        """Let every hold go (the server stops)."""
        with self._lock:
            self._release(list(self._held))

    def _lapsed(self) -> list[tuple[object, str]]:
        now = self._clock()
        return [key for key, (_, until) in self._held.items() if until <= now]

    def _release(self, keys: list[tuple[object, str]]) -> None:
        for key in keys:
            handle, _ = self._held.pop(key)
            handle.close()
