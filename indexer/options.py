"""What a write is asked to do (BuildOptions) and what it did (BuildReport)."""

from __future__ import annotations

from dataclasses import dataclass, field

from siamese_search.core.errors import UserError
from siamese_search.core.tables import RowProblem
from siamese_search.indexer import layout
from siamese_search.indexer.backends import INDEX_KINDS, check_params
from siamese_search.indexer.backends.milvus_backend import MilvusTarget
from siamese_search.indexer.ray_engine import RaySettings


@dataclass
class BuildOptions:
    index_type: str = "auto"
    index_params: dict | None = None
    keep_versions: int = layout.DEFAULT_KEEP_VERSIONS
    strict: bool = False
    chunk_rows: int = 8192
    show_progress: bool = True
    #: `build` onto a directory that already has versions (a new version; old ones stay)
    replace: bool = False
    #: how long to wait for another writer of the same index directory (0: fail at once)
    wait_seconds: float = layout.DEFAULT_WAIT_SECONDS
    #: where texts are embedded: "local" (this process) or "ray" (indexer.ray_engine)
    engine: str = "local"
    ray: RaySettings = field(default_factory=RaySettings)
    #: also serve each version from Milvus (each write's delta into the index's data
    #: collection, a head per version, an alias to the current one); None: the index
    #: directory alone (FAISS)
    milvus: MilvusTarget | None = None
    #: metadata fields to index for filters (`--index-metadata`), beside those the
    #: index already declared (a declaration is kept by every later write)
    index_metadata: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.index_type not in INDEX_KINDS:
            raise UserError(f"--index-type must be one of {', '.join(INDEX_KINDS)}")
        check_params(self.index_params or {})  # before any text is embedded
        if self.keep_versions < 1:
            raise UserError("--keep must be at least 1 (the current version)")
        if self.engine not in ("local", "ray"):
            raise UserError(f"--engine must be local or ray, not {self.engine!r}")
        if self.ray.actors < 1 or self.ray.threads_per_actor < 1:
            raise UserError("--ray-actors and --ray-threads must be at least 1")


@dataclass
class BuildReport:
    version: str
    count: int
    added: int
    removed: int
    index_type: str
    problems: list[RowProblem] = field(default_factory=list)
    seconds: float = 0.0
    #: rows a re-embedding took from what a stopped run of it embedded (indexer.resume)
    reused: int = 0
