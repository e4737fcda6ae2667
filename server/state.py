"""What is serving right now, and how a new index version replaces it without a gap.

A `Serving` snapshot (model + index version) is immutable; each request reads
`holder.current` once and uses that snapshot throughout, so it never sees a mix of
versions. A reload loads and warms the new version *beside* the old one and then
swaps one reference (TensorFlow Serving's availability-preserving policy). A version
built with another model (a retrain, then a re-index) brings that model in beside the
old one: it is loaded from the directory the version's manifest records, checked
against the version's model fingerprint, warmed, and swapped together with the index,
so the retrain -> re-index cycle needs no restart. A version that fails to load, or
whose model is missing or is not the one it was built with, is refused and logged
while the old pair keeps serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from siamese_search.core.errors import UserError
from siamese_search.core.model_artifact import EmbeddingModel
from siamese_search.core.provenance import utc_now
from siamese_search.indexer.store import DirectorySource, ServedVersion, VersionSource
from siamese_search.server.metrics import CollectionMetrics

log = logging.getLogger("siamese.server")


@dataclass(eq=False)
class Serving:
    """A model + index version pair, with a count of the calls that use it.

    TensorFlow Serving's servable handles: a call `enter()`s the snapshot it reads
    and `exit()`s when done; a replaced snapshot is `retire()`d and its index version
    closed (file hold, SQLite handles, memory maps) when its last call is done.
    """

    model: EmbeddingModel
    index: ServedVersion
    loaded_at: str
    #: the collection it serves (the batcher takes collections' jobs in turn)
    lane: str = ""
    _calls: int = 0
    _retired: bool = False
    _closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def enter(self) -> None:
        with self._lock:
            self._calls += 1

    def exit(self) -> None:
        with self._lock:
            self._calls -= 1
            close = self._retired and self._calls == 0
        if close:
            self._close()

    def retire(self) -> None:
        with self._lock:
            self._retired = True
            close = self._calls == 0
        if close:
            self._close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.index.close()


@dataclass(frozen=True)
class ReloadOutcome:
    changed: bool
    version: str | None
    message: str


def warm_up(
    model,
    index: ServedVersion,
    warm_model: Callable[[EmbeddingModel, bool], None] | None = None,
    first: bool = False,
) -> None:
    """Touch every code path once so the first real request is not the slow one;
    `warm_model` loads the model wherever else it runs (the encoding processes), all
    at once on the `first` load (nothing is serving that it could slow down)."""
    if warm_model is not None:
        warm_model(model, first)
    vectors = model.embed(["warm-up query"])
    index.search(vectors, k=min(10, max(index.count, 1)))
    if index.has_labels and index.label_names:
        index.search(vectors, k=1, labels=index.label_names[:1])


class ServingHolder:
    def __init__(
        self,
        source: VersionSource | Path,
        model: EmbeddingModel,
        load_model: Callable[[Path], EmbeddingModel] | None = None,
    ):
        #: where versions come from: an index directory's CURRENT, or a Milvus alias
        #: (`MilvusSource`); anything with current_name / open_current / location
        self.source: VersionSource = DirectorySource(source) if isinstance(source, Path) else source
        #: the collection it serves (server.collections), for logs and the batcher
        self.name = ""
        #: the model of the last version loaded (a new version may bring another)
        self.model = model
        #: loads a model directory (with the server's thread settings); None: no swap
        self._load_model = load_model
        self._current: Serving | None = None
        #: the snapshot replaced last (its `closed` says its last call is done)
        self.last_retired: Serving | None = None
        self._reload_lock = threading.Lock()
        self._swap_lock = threading.Lock()  # held for a pointer read or write only
        self._refused: str | None = None  # a version refused once is not retried by polling
        #: why the last reload failed (None once one succeeds), for GetInfo and errors
        self.last_error: str | None = None
        self.last_error_at: str | None = None
        #: called with True once something is serving (the app turns health SERVING)
        self.on_serving: Callable[[bool], None] | None = None
        self.metrics: CollectionMetrics | None = None  # set by the app
        #: loads a model in the encoding processes before it serves (set by the app)
        #: (model, first load) -> None
        self.warm_model: Callable[[EmbeddingModel, bool], None] | None = None

    @property
    def current(self) -> Serving | None:
        return self._current

    def record_error(self, message: str | None) -> None:
        """Remember why the last reload failed; None: the last one succeeded."""
        self.last_error = message
        self.last_error_at = utc_now() if message is not None else None
        if self.metrics:
            self.metrics.reload_failing.set(0 if message is None else 1)

    def acquire(self) -> Serving | None:
        """The current snapshot, entered (the caller must `exit()` it), or None."""
        with self._swap_lock:
            serving = self._current
            if serving is not None:
                serving.enter()
            return serving

    def _swap(self, serving: Serving | None) -> None:
        with self._swap_lock:
            previous, self._current = self._current, serving
        if previous is not None:
            self.last_retired = previous
            previous.retire()  # closed now, or when its last in-flight call is done

    def close(self) -> None:
        """Retire what is serving (at shutdown)."""
        self._swap(None)

    def reload(self, forced: bool = True) -> ReloadOutcome:
        """Load CURRENT if it names a version other than the one serving.

        `forced` (admin call, SIGHUP) retries a version that was refused before;
        the polling watcher does not, so a bad version is logged once, not every poll.
        """
        with self._reload_lock:
            serving = self._current
            name = None
            try:
                name = self.source.current_name()
                if name is None:
                    raise UserError(f"{self.source.location} has no current version yet")
                if serving is not None and serving.index.name == name:
                    return ReloadOutcome(False, name, f"version {name} is already serving")
                if not forced and name == self._refused:
                    return ReloadOutcome(
                        False,
                        serving.index.name if serving else None,
                        f"version {name} was refused before",
                    )
                index = self.source.open_current()
                try:
                    model = self._model_for(index)
                    warm_up(model, index, self.warm_model, first=serving is None)
                except BaseException:
                    index.close()
                    raise
            except Exception as error:  # keep serving the old version whatever went wrong
                self._refused = name
                # None: CURRENT itself named no version this index holds
                what = f"new index version {name}" if name else "the index's current version"
                message = f"refused {what}: {error}"
                self.record_error(message)
                log.error(
                    "reload_refused", extra={"fields": {"version": name, "error": str(error)}}
                )
                if self.metrics:
                    self.metrics.reloaded("refused")
                return ReloadOutcome(False, serving.index.name if serving else None, message)
            model_changed = model is not self.model
            self.model = model
            self._swap(Serving(model, index, utc_now(), lane=self.name))
            self.record_error(None)
            if self.on_serving is not None:
                self.on_serving(True)
            log.info(
                "index_loaded",
                extra={
                    "fields": {
                        "version": index.name,
                        "count": index.count,
                        "type": index.kind,
                        "previous": serving.index.name if serving else None,
                        "model": model.fingerprint,
                        "model_changed": model_changed,
                    }
                },
            )
            if self.metrics:
                self.metrics.reloaded("loaded")
                self.metrics.observe_index(index)
            return ReloadOutcome(True, index.name, f"now serving version {index.name}")

    def _model_for(self, index: ServedVersion) -> EmbeddingModel:
        """The model `index` was built with: the one serving, or the one its manifest
        names (loaded now, beside the serving one), checked by fingerprint."""
        if index.model_fingerprint == self.model.fingerprint or self._load_model is None:
            index.check_model(self.model)  # refuses a mismatch when no swap is possible
            return self.model
        directory = Path(index.manifest["model"].get("directory") or "")
        if not (directory / "manifest.json").is_file():
            raise UserError(
                f"index version {index.name} was built with model {index.model_fingerprint} "
                f"from {directory}, which is not there (the serving model is "
                f"{self.model.fingerprint}); put the model back or rebuild the index with "
                "the serving model"
            )
        log.info(
            "model_loading",
            extra={"fields": {"directory": str(directory), "for_version": index.name}},
        )
        model = self._load_model(directory)
        index.check_model(model)  # a retrained-in-place directory no longer matches
        return model


class ReloadWatcher(threading.Thread):
    """Polls where the current version is named (CURRENT, or a Milvus alias) and
    reloads when it changes."""

    def __init__(self, holder: ServingHolder, interval: float):
        super().__init__(name="index-reload-watcher", daemon=True)
        self.holder = holder
        self.interval = interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        failures = 0
        while not self._stop_event.wait(self.interval * min(2**failures, 30)):
            try:
                serving = self.holder.current
                name = self.holder.source.current_name()
                if name is not None and (serving is None or serving.index.name != name):
                    self.holder.reload(forced=False)
                failures = 0
            except Exception as error:  # an unreadable CURRENT must not stop the watcher
                failures += 1
                self.holder.record_error(f"cannot read {self.holder.source.location}: {error}")
                log.error(
                    "reload_watch_failed",
                    extra={"fields": {"error": str(error), "retry_in_polls": 2**failures}},
                )

    def stop(self) -> None:
        self._stop_event.set()
