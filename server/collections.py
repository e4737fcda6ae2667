"""Many collections behind one server (issue 37): each an index with its own model,
versions, writes, reloads and health, served from one port, one set of encoding
processes and one copy of every encoder they share.

    siamese-serve --index DIR                the one collection, named after DIR
    siamese-serve --collections ROOT         every index directory under ROOT, by name
                  [--index DIR] [--default-collection NAME]

A call names its collection (`collection` in every request, or REST's
`/v1/collections/{name}/...`); one that names none reaches the default collection,
so clients written before collections work unchanged. With `--collections`, the
admin calls CreateCollection (an empty index under ROOT that Upsert fills) and
DropCollection (served no more at once; files removed once its in-flight calls are
done) change the set while the server runs; `server.collection_dirs` keeps the root
consistent on disk through a crash at any moment.

Independence: each collection is a `Collection`: its own ServingHolder (reload, hot
model swap), write Committer, reload watcher and health status
(`collection/<name>` in the gRPC health service). One whose model or index cannot be
loaded is NOT_SERVING with the reason (ListCollections, logs); the others serve.
Sharing: models load through `core.encoders.load_encoder`, which hands out one
instance per distinct encoder (weights and settings), so the untuned meaning encoder
every served-space model holds is loaded once, in the server and in each encoding
process; the batcher and its encoding processes are the server's, and schedule
collections fairly (server.batching).
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from siamese_search.core.atomic import atomic_directory
from siamese_search.core.errors import UserError
from siamese_search.indexer import layout
from siamese_search.indexer.options import BuildOptions
from siamese_search.indexer.store import VersionSource
from siamese_search.server import collection_dirs
from siamese_search.server.config import ServerConfig
from siamese_search.server.metrics import CollectionMetrics, Metrics
from siamese_search.server.openapi import NAME_RULE
from siamese_search.server.state import ReloadWatcher, ServingHolder
from siamese_search.server.validation import InvalidRequest
from siamese_search.server.writes import Committer, WritesUnavailable

log = logging.getLogger("siamese.server")

#: how long a dropped collection's files wait for its in-flight calls before removal
DROP_WAIT_SECONDS = 600.0


class CollectionNotFound(Exception):
    """A call names a collection this server does not serve (NOT_FOUND)."""


class CollectionRefused(Exception):
    """A lifecycle call that cannot be done in this state; `code`: the gRPC status name
    (ALREADY_EXISTS, FAILED_PRECONDITION)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def check_name(name: str) -> str:
    """A collection name: letters, digits, '_' and '-', starting with a letter or a
    digit, at most 63 characters; so never a path ('..', '/', '.hidden')."""
    if not isinstance(name, str) or not collection_dirs.VALID_NAME.match(name):
        raise InvalidRequest(f"collection name {name!r:.80} is not one: {NAME_RULE}")
    return name


def name_for(index_dir: Path) -> str:
    """The collection name of an index directory served with --index: its own name
    when that is a valid one, else "default"."""
    name = Path(index_dir).absolute().name
    return name if collection_dirs.VALID_NAME.match(name) else "default"


@dataclass(eq=False)
class Collection:
    """One served collection and its parts (None parts: it could not be loaded)."""

    name: str
    index_dir: Path | None
    source: VersionSource
    holder: ServingHolder | None = None
    #: the write committer, or why writes are off (a message for FAILED_PRECONDITION)
    writes: Committer | str = ""
    watcher: ReloadWatcher | None = None
    #: why nothing can serve at all (its model could not be loaded)
    error: str | None = None
    metrics: CollectionMetrics | None = None

    @property
    def serving(self) -> bool:
        return self.holder is not None and self.holder.current is not None

    @property
    def problem(self) -> str:
        """Why it is not serving, or the last reload that failed ("" when none)."""
        if self.error:
            return self.error
        if self.holder is not None and self.holder.last_error:
            return self.holder.last_error
        if self.index_dir is not None and not Path(self.index_dir).is_dir():
            return (
                f"the index directory {self.index_dir} is gone: the loaded version still "
                "answers searches, writes are refused; restore it and restart the server"
            )
        return "" if self.serving else "no index version loaded yet"

    def start(self) -> None:
        if self.watcher is not None:
            self.watcher.start()

    def stop(self) -> None:
        """Stop its watcher and committer and retire what it serves (closed once its
        last in-flight call is done)."""
        if self.watcher is not None:
            self.watcher.stop()
        if isinstance(self.writes, Committer):
            self.writes.stop()
        if self.holder is not None:
            self.holder.close()


class CollectionOpener:
    """Builds a collection's parts with the server's settings (model loading, batcher
    warm-up, write committer, reload watcher, metrics, health)."""

    def __init__(
        self,
        config: ServerConfig,
        warm_model,
        metrics: Metrics,
        on_health: Callable[[str, bool], None],
    ):
        self.config = config
        self.warm_model = warm_model
        self.metrics = metrics
        self.on_health = on_health

    def open(
        self, name: str, index_dir: Path | None, source: VersionSource, model_dir: Path | None
    ) -> Collection:
        """A collection for this index; one whose model cannot be loaded is returned
        with its `error` (NOT_SERVING), never raised: the others must still serve."""
        from siamese_search.core.model_artifact import load_model

        collection = Collection(name, index_dir, source, metrics=self.metrics.collection(name))
        threads = self.config.threads
        try:
            directory = Path(model_dir) if model_dir is not None else source.model_directory()
            model = load_model(directory, threads=threads)
        except Exception as error:  # a missing or damaged model, an unreadable index
            collection.error = f"cannot load collection {name}: {error}"
            log.error(
                "collection_failed", extra={"fields": {"collection": name, "error": str(error)}}
            )
            self.on_health(name, False)
            return collection
        holder = ServingHolder(
            source,
            model,
            # without a pinned model the collection follows the model each version was
            # built with (hot swap on retrain)
            load_model=(
                None if model_dir is not None else lambda d: load_model(d, threads=threads)
            ),
        )
        holder.name = name
        holder.metrics = collection.metrics
        holder.warm_model = self.warm_model
        holder.on_serving = lambda serving: self.on_health(name, serving)
        collection.holder = holder
        outcome = holder.reload()
        if not outcome.changed:
            log.warning(
                "no_index_at_start",
                extra={"fields": {"collection": name, "message": outcome.message}},
            )
            self.on_health(name, False)
        collection.writes = self._writes(collection)
        if self.config.reload_interval > 0:
            collection.watcher = ReloadWatcher(holder, self.config.reload_interval)
        return collection

    def _writes(self, collection: Collection) -> Committer | str:
        """The collection's write committer, or why writes are off."""
        config = self.config
        if not config.writes:
            return "this server takes no writes (started with --no-writes)"
        if collection.index_dir is None:
            return (
                "this server serves a Milvus alias without an index directory, so it takes "
                "no writes; send them to the server (or siamese-index) that has --index"
            )
        holder = collection.holder
        assert holder is not None

        def published(version: str) -> None:
            outcome = holder.reload(forced=True)
            serving = holder.current
            if serving is None or serving.index.name != version:
                raise RuntimeError(
                    f"version {version} was published but not loaded: {outcome.message}"
                )

        try:
            committer = Committer(
                Path(collection.index_dir),
                config.commit_policy,
                model_for_writes=lambda: holder.model,
                published=published,
                options=BuildOptions(show_progress=False, milvus=_milvus_for(config, collection)),
                salvage_journal=config.salvage_journal,
            )
        except WritesUnavailable as error:
            log.warning(
                "writes_off",
                extra={"fields": {"collection": collection.name, "reason": str(error)}},
            )
            return str(error)
        metrics = collection.metrics
        assert metrics is not None
        metrics.commit_failing.set_function(lambda: float(committer.failing_since is not None))
        metrics.pending_writes.set_function(
            lambda: float(len(committer.journal.records)) if committer.journal else 0.0
        )
        return committer


def _milvus_for(config: ServerConfig, collection: Collection):
    """The Milvus alias a collection's writes go to (None: FAISS only)."""
    source = collection.source
    return getattr(source, "target", None) if config.milvus is not None else None


class Collections:
    """The collections a server serves, by name, and their lifecycle."""

    def __init__(self, opener: CollectionOpener, root: Path | None, default: str | None):
        self.opener = opener
        #: where CreateCollection makes index directories (None: the set is fixed)
        self.root = Path(root) if root is not None else None
        self.default = default
        self._by_name: dict[str, Collection] = {}
        self._lock = threading.Lock()  # guards the set; never held while loading
        #: names a CreateCollection is making now: a second create of one is refused at
        #: once, as it would be once the first is served (not left to fail in the build)
        self._creating: set[str] = set()

    # ---- building the set at start -----------------------------------------------------

    def add(self, collection: Collection) -> None:
        with self._lock:
            if collection.name in self._by_name:
                raise UserError(
                    f"two collections are named {collection.name}; rename one index directory "
                    "or serve it with --index elsewhere"
                )
            self._by_name[collection.name] = collection

    # ---- reading -------------------------------------------------------------------------

    def get(self, name: str) -> Collection:
        """The collection a call names ("" : the default one)."""
        if not name:
            if self.default is None:
                with self._lock:
                    names = ", ".join(sorted(self._by_name)) or "none"
                raise CollectionNotFound(
                    f"this server has no default collection; name one of: {names} (ListCollections)"
                )
            name = self.default
        else:
            check_name(name)
        with self._lock:
            found = self._by_name.get(name)
        if found is None:
            raise CollectionNotFound(
                f"this server serves no collection {name!r}; ListCollections lists them"
            )
        return found

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_name)

    def all(self) -> list[Collection]:
        with self._lock:
            return [self._by_name[name] for name in sorted(self._by_name)]

    # ---- lifecycle -----------------------------------------------------------------------

    def create(self, name: str, model_dir: str, index_type: str, labels: bool) -> Collection:
        """An empty index under the root with this model, served from now on."""
        check_name(name)
        if self.root is None:
            raise CollectionRefused(
                "FAILED_PRECONDITION",
                "this server was started without --collections ROOT, so it cannot make "
                "collections; restart it with --collections",
            )
        with self._lock:
            if name in self._by_name or name in self._creating:
                raise CollectionRefused("ALREADY_EXISTS", f"collection {name} already exists")
            self._creating.add(name)
        try:
            return self._create(name, model_dir, index_type, labels)
        finally:
            with self._lock:
                self._creating.discard(name)

    def _create(self, name: str, model_dir: str, index_type: str, labels: bool) -> Collection:
        """`create` once it holds the name."""
        from siamese_search.core.model_artifact import load_model
        from siamese_search.core.tables import Columns, Table
        from siamese_search.indexer.build import build_index

        assert self.root is not None
        directory = self.root / name
        if directory.exists():
            raise CollectionRefused(
                "ALREADY_EXISTS",
                f"the collections root already holds a directory {name} (not served: not "
                "an index, or being removed); choose another name",
            )
        if not model_dir or not (Path(model_dir) / "manifest.json").is_file():
            raise CollectionNotFound(
                f"model_directory {model_dir!r:.200} holds no model (no manifest.json) on "
                "this server; give the directory siamese-train wrote"
            )
        # with --backend milvus, served from the alias named after the directory, as
        # after a restart: the empty version is written there too
        source = self.opener.config.source_for(directory)
        milvus = getattr(source, "target", None)
        self._check_alias_free(name, milvus)
        try:
            options = BuildOptions(
                show_progress=False, index_type=index_type or "auto", milvus=milvus
            )
        except UserError as error:
            raise InvalidRequest(str(error)) from None
        model = load_model(Path(model_dir), threads=self.opener.config.threads)
        table = Table(texts=[], labels=[] if labels else None, ids=[])
        columns = Columns(text="text", label="label" if labels else None, id="id")
        try:
            # built aside and renamed into place whole: a crash leaves no half of it
            with atomic_directory(directory) as staging:
                build_index(staging, model, table, columns, options)
        except UserError as error:  # its Milvus alias serves another index
            raise CollectionRefused("FAILED_PRECONDITION", str(error)) from None
        except OSError as error:
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            # another server on this root made the name while this one built it: its
            # directory stays, this one's build is thrown away
            raise CollectionRefused(
                "ALREADY_EXISTS",
                f"collection {name} was made meanwhile by another server on this "
                "collections root; choose another name, or serve it from that server",
            ) from None
        collection = self.opener.open(name, directory, source, None)
        with self._lock:
            self._by_name[name] = collection
        collection.start()
        log.info("collection_created", extra={"fields": {"collection": name, "model": model_dir}})
        return collection

    def _check_alias_free(self, name: str, target) -> None:
        """Refuse a name whose Milvus alias a served collection has already: Milvus
        names turn '-' into '_', so `a-b` and `a_b` would write one alias (the
        writer's claim refused the second, naming a flag API users do not have)."""
        if target is None:
            return
        for other in self.all():
            theirs = getattr(other.source, "target", None)
            if theirs is not None and theirs.name == target.name:
                raise CollectionRefused(
                    "ALREADY_EXISTS",
                    f"collection {other.name} already uses the Milvus alias {target.name} "
                    f"that {name} would have (Milvus names turn '-' into '_'); choose "
                    "another name",
                )

    def drop(self, name: str) -> list[str]:
        """Stop serving `name` now; its files go once its in-flight calls are done."""
        check_name(name)
        if name == self.default:
            raise CollectionRefused(
                "FAILED_PRECONDITION",
                f"collection {name} is the default one; restart the server with another "
                "--default-collection first",
            )
        with self._lock:
            collection = self._by_name.get(name)
        if collection is None:
            raise CollectionNotFound(f"this server serves no collection {name!r}")
        if collection.index_dir is not None and self.root is not None:
            try:  # durable before it is acknowledged: a restart must not serve it again
                collection_dirs.mark_dropped(collection.index_dir)
            except OSError as error:
                raise CollectionRefused(
                    "UNAVAILABLE",
                    f"collection {name} could not be marked dropped ({error.strerror}); "
                    "it is still served: try again once its disk takes writes",
                ) from None
            except UserError:  # its writer lock stayed held
                raise CollectionRefused(
                    "UNAVAILABLE",
                    f"collection {name} is being written (a siamese-index job, or a commit "
                    f"of its writes) and was still after {collection_dirs.DROP_WAIT_SECONDS:g} "
                    "s; it is still served: try again when that is done",
                ) from None
        with self._lock:
            if self._by_name.get(name) is not collection:
                raise CollectionNotFound(f"this server serves no collection {name!r}")
            del self._by_name[name]
            remaining = sorted(self._by_name)
        collection.stop()
        if collection.metrics is not None:
            collection.metrics.remove()
        self.opener.on_health(name, False)
        if collection.index_dir is not None and self.root is not None:
            threading.Thread(
                target=_remove_when_idle,
                args=(collection, collection.index_dir, self.forget_in_backend),
                name=f"drop-{name}",
                daemon=True,
            ).start()
        log.info("collection_dropped", extra={"fields": {"collection": name}})
        return remaining

    def forget_in_backend(self, directory: Path) -> None:
        """With --backend milvus, drop a dropped collection's alias and collections in
        Milvus (named after its directory); without, nothing is kept elsewhere."""
        target = self.opener.config.milvus_target_for(directory)
        if target is None:
            return
        from siamese_search.indexer.backends.milvus_writer import MilvusWriter

        writer = MilvusWriter(target)
        try:
            dropped = writer.remove_all(layout.recorded_index_id(directory))
        finally:
            writer.close()
        log.info("collection_dropped_in_milvus", extra={"fields": {"dropped": dropped}})

    def start(self) -> None:
        for collection in self.all():
            collection.start()

    def stop(self) -> None:
        for collection in self.all():
            collection.stop()


def _remove_when_idle(
    collection: Collection, directory: Path, forget: collection_dirs.Forget
) -> None:
    """Remove a dropped collection once the version it served is closed (its last
    in-flight call done): those calls read its files, or its Milvus collections."""
    holder = collection.holder
    retired = holder.last_retired if holder is not None else None
    collection_dirs.remove(
        directory, forget, lambda: retired is None or retired.closed, wait=DROP_WAIT_SECONDS
    )
