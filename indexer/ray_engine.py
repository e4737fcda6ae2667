"""Encoding on Ray Data: the expensive step of a build, spread over an actor pool.

`siamese-index build --engine ray` (and `add`) reads and checks the table exactly as
the local build does (same columns, bad-row rules and duplicate ids: `indexer.build`
does that in the driver, where it is cheap: ~100k rows/s against ~1,300 texts/s of
encoding a core), and hands the accepted texts to Ray in windows. Each window is a
Ray Dataset whose rows are the encoder batches a local build would run (each chunk's
distinct texts, ENCODE_BATCH at a time), encoded on an actor pool (`map_batches`);
the driver applies the head to each whole chunk as a local build does, so the vectors
are bit-identical to a local build's. One model per actor, loaded once from the model
directory's files shipped through Ray's object store (so a cluster needs no shared
filesystem), with its BLAS and OpenMP threads set deliberately. Vectors stream back
with their chunk's position and the driver writes them, in input order, into the
staging version with the same writer, and publishes it by the same atomic rules as a
local build: a killed job publishes nothing. A list goes back to the writer as soon as
its batches are in, so writing overlaps the actors' encoding.

Without an address Ray starts a local cluster (GCS, raylet and worker processes as on
a multi-node one) without dashboard or usage reporting, and stops it at the end; with
`--ray-address` the same job runs on an existing cluster. Ray 2.60 ignores a node
address of 127.0.0.1 for a local cluster (so none is passed): its GCS and raylet
listen on every interface, guarded by Ray's token authentication (on by default).
Pitfall seen on 2 cores: actors asking for a whole CPU each starve Ray Data's read
and split tasks and the job deadlocks, so actors ask for ACTOR_CPUS and the rest of
a CPU stays for the tasks.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from siamese_search.core.encoders.base import (
    ENCODE_BATCH,
    RUNTIME_VARIABLE,
    encoder_runtime,
    unique_texts,
)
from siamese_search.core.errors import UserError

#: CPUs one encoding actor reserves (less than 1: see the module docstring)
ACTOR_CPUS = 0.9
#: texts handed to Ray at once (at least one list per actor); a window is one Ray
#: Dataset (a few seconds of work)
WINDOW_TEXTS = 65_536
#: times a local cluster is started before giving up (see _start_local_cluster)
LOCAL_START_ATTEMPTS = 3


@dataclass(frozen=True)
class RaySettings:
    #: None: start a local cluster; else a Ray address ("ray://host:10001", "auto")
    address: str | None = None
    actors: int = 2
    #: BLAS/OpenMP threads in each actor (1: one actor a core scales best here)
    threads_per_actor: int = 1


def _model_files(model_dir: Path) -> dict[str, bytes]:
    """The model directory's files, to rebuild it inside each actor."""
    files = {}
    for path in sorted(Path(model_dir).rglob("*")):
        if path.is_file():
            files[str(path.relative_to(model_dir))] = path.read_bytes()
    return files


def _start_local_cluster() -> None:
    """Start a local Ray cluster, trying again when it does not come up.

    Ray gives its raylet a fixed 30 s to register with the GCS and then gives up. Seen
    once in CI (a second cluster started in one process right after the first one
    stopped): the raylet never wrote a log line and the start timed out, while the
    next start in the same process, seconds later, worked. A start that failed leaves
    its GCS behind until this process exits (Ray's reaper stops it then), so a retry
    costs memory, not correctness."""
    import ray

    for attempt in range(1, LOCAL_START_ATTEMPTS + 1):
        try:
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
            return
        except Exception as error:  # Ray raises a bare Exception on the timeout
            if attempt == LOCAL_START_ATTEMPTS:
                raise UserError(
                    f"cannot start Ray on a local cluster ({attempt} attempts): {error}"
                ) from None
            print(
                f"Ray's local cluster did not start ({error}); trying again "
                f"({attempt + 1} of {LOCAL_START_ATTEMPTS})",
                file=sys.stderr,
            )


class _EmbedActor:
    """One Ray actor: the model, rebuilt from its files, embedding batches of texts."""

    def __init__(self, files, threads: int, runtime: str):
        """`runtime`: the driver's encoder runtime (a remote worker's environment is
        not the driver's)."""
        import tempfile

        import ray

        from siamese_search.core.model_artifact import load_model
        from siamese_search.core.native_threads import limit_native_threads

        if isinstance(files, ray.ObjectRef):  # Ray Data passes constructor args as given
            files = ray.get(files)
        limit_native_threads(threads)
        os.environ[RUNTIME_VARIABLE] = runtime
        # removed with the actor (the model is loaded into memory from it)
        self._directory = tempfile.TemporaryDirectory(prefix="siamese-model-")
        for name, data in files.items():
            target = Path(self._directory.name) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        self.model = load_model(self._directory.name, threads=threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One encoder batch (ENCODE_BATCH distinct texts of a chunk) -> its sentence
        encoders' rows (`SiameseModel.features`), as raw float32 bytes (the driver
        projects them: head and served space)."""
        texts = [str(text) for text in batch["texts"][0]]
        vectors = np.ascontiguousarray(self.model.features(texts), dtype=np.float32)
        # object dtype: a fixed-width bytes array would drop trailing zero bytes
        return {
            "list": batch["list"],
            "start": batch["start"],
            "vectors": np.array([vectors.tobytes()], dtype=object),
        }


class RayEmbedder:
    """Embeds lists of texts on a Ray actor pool, in order; a context manager that
    shuts down the local cluster it started, if any."""

    def __init__(self, model, settings: RaySettings):
        self.model = model
        self.settings = settings
        self._connected = False
        self._started = False

    def __enter__(self) -> RayEmbedder:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UserError(
                "--engine ray needs Ray Data: pip install 'siamese-search[ray]' "
                "(or 'ray[data]>=2.60')"
            ) from None
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        return self

    def __exit__(self, *exc_info) -> None:
        import ray

        if self._started:
            ray.shutdown()

    def _connect(self) -> None:
        """Start a local cluster (no address) or join the given one; ship the model."""
        import ray

        if not ray.is_initialized():
            if self.settings.address is None:
                _start_local_cluster()
            else:
                try:
                    ray.init(address=self.settings.address, log_to_driver=False)
                except Exception as error:  # ConnectionError, RuntimeError, ValueError ...
                    address = self.settings.address
                    raise UserError(f"cannot join Ray at {address}: {error}") from None
            self._started = True
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False  # the build shows its own
        self._files = ray.put(_model_files(Path(self.model.directory)))
        self._connected = True

    def embed(self, text_lists: Iterator[list[str]]) -> Iterator[np.ndarray]:
        """One array of unit vectors per list, in order. Lists are gathered into
        windows of about WINDOW_TEXTS texts and at least one list per actor, each run
        as one Ray Dataset whose rows are encoder batches (one actor call each)."""
        window: list[list[str]] = []
        size = 0
        for texts in text_lists:
            window.append(texts)
            size += len(texts)
            if size >= WINDOW_TEXTS and len(window) >= self.settings.actors:
                yield from self._run_window(window)
                window, size = [], 0
        if window:
            yield from self._run_window(window)

    def _run_window(self, window: list[list[str]]) -> Iterator[np.ndarray]:
        """Encode a window's lists exactly as `embed_unique` encodes each one locally:
        the same distinct texts in the same batches of ENCODE_BATCH (spread over the
        actors), then the head and served space over each whole list here, so the vectors are
        bit-identical to a local build's (BLAS thread counts do not change them; batch
        composition would, in the last bits). Each list is yielded once its batches and
        those of every list before it are in."""
        plans = [unique_texts(texts) for texts in window]
        encoded = [
            np.empty((len(distinct), self.model.feature_dim), np.float32) for distinct, _ in plans
        ]
        rows = [
            {"list": j, "start": start, "texts": distinct[start : start + ENCODE_BATCH]}
            for j, (distinct, _) in enumerate(plans)
            for start in range(0, len(distinct), ENCODE_BATCH)
        ]
        # batches of each list not yet in
        missing = [-(-len(distinct) // ENCODE_BATCH) for distinct, _ in plans]
        yielded = 0

        def store(j: int, start: int, vectors: np.ndarray) -> None:
            encoded[j][start : start + len(vectors)] = vectors
            missing[j] -= 1

        def complete() -> Iterator[np.ndarray]:
            nonlocal yielded
            while yielded < len(window) and missing[yielded] == 0:
                texts, (_, positions) = window[yielded], plans[yielded]
                if texts:
                    yield self.model.project(encoded[yielded][positions])
                else:
                    yield np.zeros((0, self.model.dim), np.float32)
                yielded += 1

        if rows and not self._connected:
            self._connect()
        yield from complete()  # empty lists at the front
        for j, start, vectors in self._encode_on_ray(rows):
            store(j, start, vectors)
            yield from complete()
        if yielded != len(window):
            raise RuntimeError(
                f"Ray returned {len(rows) - sum(missing)} of {len(rows)} batches; nothing "
                "was published: run the job again"
            )

    def _encode_on_ray(self, rows: list[dict]) -> Iterator[tuple[int, int, np.ndarray]]:
        """(list, start, sentence vectors) for each row, in the order actors finish."""
        if not rows:
            return
        import ray

        # each row carries its list and offset, so rows may finish in any order
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
        results = dataset.map_batches(
            _EmbedActor,
            fn_constructor_args=(
                self._files,
                self.settings.threads_per_actor,
                encoder_runtime(),
            ),
            batch_size=1,
            # two rows in flight per actor: the next one is already there when an actor
            # finishes (with one, timestamps logged in the actors showed each idle
            # between rows, waiting for the next to be scheduled),
            # and the first actor up cannot take them all; no more actors than rows (a
            # spare one would only cost its start-up)
            compute=ray.data.ActorPoolStrategy(
                size=min(self.settings.actors, len(rows)), max_tasks_in_flight_per_actor=2
            ),
            num_cpus=ACTOR_CPUS,
            batch_format="numpy",
        )
        dim = self.model.feature_dim
        for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
            for j, start, raw in zip(batch["list"], batch["start"], batch["vectors"], strict=True):
                yield int(j), int(start), np.frombuffer(raw, dtype=np.float32).reshape(-1, dim)
