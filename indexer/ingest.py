"""New rows into a version: read in chunks, checked (bad rows, duplicate ids), embedded
here or on Ray, appended in input order."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from siamese_search.core.errors import DataError
from siamese_search.core.model_artifact import EmbeddingModel
from siamese_search.core.tables import (
    Chunk,
    Columns,
    RowProblem,
    Table,
    describe_problems,
    iter_table,
)
from siamese_search.indexer import layout
from siamese_search.indexer.metadata import MetadataError, check_metadata, encode
from siamese_search.indexer.options import BuildOptions
from siamese_search.indexer.resume import Workspace
from siamese_search.indexer.version_writer import VersionWriter


def _chunks_of(
    source: Path | Table,
    columns: Columns,
    options: BuildOptions,
    first_row_id: int,
    records: int,
) -> tuple[Iterator[Chunk], int]:
    """The rows to ingest, in chunks, and how many records that is (for progress:
    the caller counted `records` in a table file)."""
    if isinstance(source, Table):  # already read and checked (siamese-evaluate, writes)
        chunk = Chunk(
            texts=source.texts,
            labels=source.labels if columns.label is not None else None,
            ids=source.ids,
            lines=list(range(1, len(source.texts) + 1)),
            metadata=source.metadata,
        )
        return iter([chunk]), len(chunk)
    return iter_table(source, columns, options.chunk_rows, first_row_id), records


def ingest(
    writer: VersionWriter,
    model: EmbeddingModel,
    source: Path | Table,
    columns: Columns,
    options: BuildOptions,
    first_row_id: int,
    records: int,
    workspace: Workspace | None = None,
) -> tuple[int, list]:
    """Read, check, embed and append new rows. Returns (rows added, row problems).
    `records`: how many records `source` holds (core.tables.count_records); `workspace`:
    where what is embedded is kept for a next run, and what a stopped one embedded
    is found (indexer.resume).

    Ids already written (from the base version, or earlier in the file) are duplicates.
    Rows are checked here whatever the engine; only the embedding runs locally or on
    Ray (`options.engine`), and rows are appended in input order either way.
    """
    problems: list[RowProblem] = []
    added = 0
    chunks, total = _chunks_of(source, columns, options, first_row_id, records)
    name = source.name if isinstance(source, Path) else "rows"
    #: checked, not yet written: a chunk, the rows kept, their stored metadata (None: none)
    accepted: deque[tuple[Chunk, list[int], list[str | None] | None]] = deque()
    pending: set[str] = set()  # their ids: an engine reads ahead of the writer

    def checked_texts() -> Iterator[list[str]]:
        for chunk in chunks:
            problems.extend(chunk.problems)
            keep = []
            fields: list[str | None] = []
            taken = writer.existing_ids(chunk.ids)
            for i, row_id in enumerate(chunk.ids):
                if row_id in pending or row_id in taken:
                    problems.append(RowProblem(chunk.lines[i], f"duplicate id {row_id!r}"))
                    continue
                if chunk.metadata is not None:
                    try:
                        fields.append(encode(check_metadata(chunk.metadata[i])))
                    except MetadataError as error:
                        problems.append(RowProblem(chunk.lines[i], str(error)))
                        continue
                pending.add(row_id)
                keep.append(i)
            accepted.append((chunk, keep, fields if chunk.metadata is not None else None))
            yield [chunk.texts[i] for i in keep]

    bar = tqdm(
        total=total,
        desc=f"indexing {name}" + (" on Ray" if options.engine == "ray" else ""),
        unit="text",
        disable=not options.show_progress,
        mininterval=0.5,
        smoothing=0.1,
    )
    if workspace is not None:
        workspace.attach(writer.new, options.show_progress)
    with bar, embedder(model, options) as embed:
        if workspace is not None:
            embed = workspace.embedding(embed)
        for vectors in embed(checked_texts()):
            chunk, keep, fields = accepted.popleft()
            ids = [chunk.ids[i] for i in keep]
            labels = [chunk.labels[i] for i in keep] if chunk.labels is not None else None
            writer.append(ids, labels, [chunk.texts[i] for i in keep], vectors, fields)
            pending.difference_update(ids)
            added += len(keep)
            if workspace is not None:
                workspace.checkpoint()
            layout.checkpoint("during-ingest")
            bar.update(len(chunk) + len(chunk.problems))
            bar.set_postfix(indexed=writer.count, skipped=len(problems), refresh=False)
    if workspace is not None:
        workspace.checkpoint(force=True)  # a failed publish loses none
    if problems and options.strict:
        raise DataError(
            describe_problems(Path(name), problems)
            + "\n--strict is set: nothing was written. Fix these rows or drop --strict."
        )
    if problems and not added:
        # skipping bad rows keeps the good ones; with none, a `build --replace` would
        # serve an empty index, and an `add` would publish a version that changes nothing
        raise DataError(
            describe_problems(Path(name), problems)
            + "\nNo row is usable: nothing was written. Fix these rows."
        )
    return added, problems


@contextmanager
def embedder(
    model: EmbeddingModel, options: BuildOptions
) -> Iterator[Callable[[Iterator[list[str]]], Iterator[np.ndarray]]]:
    """What turns lists of texts into arrays of vectors, one per list, in order."""
    if options.engine == "ray":
        from siamese_search.indexer.ray_engine import RayEmbedder

        with RayEmbedder(model, options.ray) as ray_embedder:
            yield ray_embedder.embed
        return

    def local(text_lists: Iterator[list[str]]) -> Iterator[np.ndarray]:
        for texts in text_lists:
            yield model.embed_unique(texts) if texts else np.zeros((0, model.dim), np.float32)

    yield local
