"""Encoding on Ray Data: the expensive step of a build, spread over an actor pool.

`siamese-index build --engine ray` (and `add`) reads and checks the table exactly as
the local build does (same columns, bad-row rules and duplicate ids: `indexer.build`
does that in the driver, where it is cheap: ~100k rows/s against ~1,300 texts/s of
encoding a core), and hands the accepted texts to Ray in windows. Each window is a
Ray Dataset whose rows are the build's chunks of texts, each encoded by one call of an
actor pool (`map_batches`), exactly as the local build encodes it, so the vectors are
bit-identical to a local build's: one model per actor, loaded once from the model
directory's files shipped through Ray's object store (so a cluster needs no shared
filesystem), with its BLAS and OpenMP threads set deliberately. Vectors stream back
with their chunk's position and the driver writes them, in input order, into the
staging version with the same writer, and publishes it by the same atomic rules as a
local build: a killed job publishes nothing.

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from siamese_search.core.errors import UserError

#: CPUs one encoding actor reserves (less than 1: see the module docstring)
ACTOR_CPUS = 0.9
#: texts handed to Ray at once (at least one list per actor); a window is one Ray
#: Dataset (a few seconds of work)
WINDOW_TEXTS = 16_384


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


class _EmbedActor:
    """One Ray actor: the model, rebuilt from its files, embedding batches of texts."""

    def __init__(self, files, threads: int):
        import tempfile

        import ray

        from siamese_search.core.model_artifact import load_model
        from siamese_search.core.native_threads import limit_native_threads

        if isinstance(files, ray.ObjectRef):  # Ray Data passes constructor args as given
            files = ray.get(files)
        limit_native_threads(threads)
        # removed with the actor (the model is loaded into memory from it)
        self._directory = tempfile.TemporaryDirectory(prefix="siamese-model-")
        for name, data in files.items():
            target = Path(self._directory.name) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        self.model = load_model(self._directory.name, threads=threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One list of texts (a chunk of the table) -> its vectors, as raw bytes.

        The whole list goes through `embed_unique`, exactly as a local build embeds
        it: the encoder's batches (and so its padding) are the same, and the vectors
        are bit-identical to the local build's (BLAS thread counts do not change them;
        batch composition would, in the last bits)."""
        texts = [str(text) for text in batch["texts"][0]]
        vectors = np.ascontiguousarray(self.model.embed_unique(texts), dtype=np.float32)
        # object dtype: a fixed-width bytes array would drop trailing zero bytes
        return {
            "position": batch["position"],
            "vectors": np.array([vectors.tobytes()], dtype=object),
        }


class RayEmbedder:
    """Embeds lists of texts on a Ray actor pool, in order; a context manager that
    starts (or connects to) Ray and shuts down what it started."""

    def __init__(self, model, settings: RaySettings):
        self.model = model
        self.settings = settings
        self._started = False

    def __enter__(self) -> RayEmbedder:
        try:
            import ray
        except ImportError:
            raise UserError(
                "--engine ray needs Ray Data: pip install 'siamese-search[ray]' "
                "(or 'ray[data]>=2.60')"
            ) from None
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if not ray.is_initialized():
            try:
                if self.settings.address is None:
                    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
                else:
                    ray.init(address=self.settings.address, log_to_driver=False)
            except Exception as error:  # ConnectionError, RuntimeError, ValueError ...
                where = self.settings.address or "a local cluster"
                raise UserError(f"cannot start Ray on {where}: {error}") from None
            self._started = True
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False  # the build shows its own
        self._files = ray.put(_model_files(Path(self.model.directory)))
        return self

    def __exit__(self, *exc_info) -> None:
        import ray

        if self._started:
            ray.shutdown()

    def embed(self, text_lists: Iterator[list[str]]) -> Iterator[np.ndarray]:
        """One array of unit vectors per list, in order. Lists are gathered into
        windows of about WINDOW_TEXTS texts and at least one list per actor, each run
        as one Ray Dataset whose rows are whole lists (one actor call each)."""
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
        import ray

        dim = self.model.dim
        results: list[np.ndarray] = [np.zeros((0, dim), np.float32) for _ in window]
        # each row carries its list's position in the window, so rows may finish in
        # any order and every list still gets its own vectors
        rows = [{"position": i, "texts": texts} for i, texts in enumerate(window) if texts]
        if rows:
            dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
            encoded = dataset.map_batches(
                _EmbedActor,
                fn_constructor_args=(self._files, self.settings.threads_per_actor),
                batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=self.settings.actors),
                num_cpus=ACTOR_CPUS,
                batch_format="numpy",
            )
            for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
                for position, raw in zip(batch["position"], batch["vectors"], strict=True):
                    vectors = np.frombuffer(raw, dtype=np.float32).reshape(-1, dim)
                    results[int(position)] = vectors
        for texts, vectors in zip(window, results, strict=True):
            if len(vectors) != len(texts):
                raise RuntimeError(
                    f"Ray returned {len(vectors)} vectors for {len(texts)} texts; nothing was "
                    "published: run the job again"
                )
            yield vectors
