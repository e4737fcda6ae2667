"""`siamese-index`: build, extend and prune versioned FAISS indexes of reference texts.

siamese-index build  --model M --data FILE --out INDEX_DIR [--index-type auto|flat|hnsw|...]
siamese-index add    --index INDEX_DIR --data FILE [--upsert] [--model M]
siamese-index delete --index INDEX_DIR --ids ID [ID ...] | --ids-file FILE
siamese-index compact --index INDEX_DIR   (the live rows as one segment)
siamese-index info   --index INDEX_DIR
siamese-index list   --index INDEX_DIR   (versions, and what stopped jobs kept)
siamese-index discard-kept --index INDEX_DIR   (delete what stopped jobs kept)
siamese-index export --index INDEX_DIR --out FILE   (live rows: id, label, text)
siamese-index reembed --index INDEX_DIR --model NEW (every live row with another model)
siamese-index retrain --index INDEX_DIR --out NEW_MODEL [-- TRAIN FLAGS] (train, re-embed)
any writer: --backend milvus --milvus-uri URI also serves each version from Milvus
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from siamese_search.core.cli_help import DefaultsHelpFormatter
from siamese_search.core.encoders.base import add_runtime_flag, apply_runtime_flag
from siamese_search.core.errors import UserError, run_cli
from siamese_search.core.tables import Columns, describe_problems, table_columns
from siamese_search.indexer import layout
from siamese_search.indexer.backend_flags import add_backend_flags, milvus_target
from siamese_search.indexer.backends import INDEX_KINDS
from siamese_search.indexer.build import (
    add_to_index,
    build_index,
    carried_index_settings,
    delete_from_index,
)
from siamese_search.indexer.compaction import compact_index
from siamese_search.indexer.metadata import RECORD_FIELDS, check_key
from siamese_search.indexer.options import BuildOptions
from siamese_search.indexer.ray_engine import RaySettings
from siamese_search.indexer.resume import discard_kept_work, kept_work
from siamese_search.indexer.store import model_directory_of, open_index, resolve_version_dir
from siamese_search.indexer.versions import list_index_versions, rollback


def _add_data_flags(parser: argparse.ArgumentParser, carried: bool) -> None:
    """Table flags; `carried` (add): unset columns are the ones the index was built with."""
    as_built = " (default: as the index was built)" if carried else ""
    parser.add_argument("--data", required=True, type=Path, help="CSV, JSONL or Parquet table")
    parser.add_argument(
        "--text-column",
        default=None if carried else "text",
        help="column holding the texts" + as_built,
    )
    parser.add_argument(
        "--label-column",
        default=None if carried else "label",
        help="column holding the labels" + as_built,
    )
    parser.add_argument(
        "--no-labels",
        action="store_true",
        help="the table has no labels (the index then serves search only)",
    )
    parser.add_argument(
        "--metadata-columns",
        default="",
        metavar="A,B,C",
        help="columns whose values become each row's metadata fields, typed as the "
        "table types them (JSON Lines, Parquet: numbers, booleans, lists; CSV: strings); "
        "Search / Predict / Scroll filter on them",
    )
    parser.add_argument(
        "--index-metadata",
        default="",
        metavar="A,B",
        help="metadata fields to index for filters (a filter on them reads an index "
        "instead of every row's fields); kept by every later write of the index",
    )
    parser.add_argument(
        "--id-column",
        help="column of unique ids (default: a column named 'id' if there is one"
        + (", or as the index was built" if carried else "")
        + "; else the row number)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="fail on any unusable row instead of skipping and reporting it",
    )


def _add_wait_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        type=float,
        default=layout.DEFAULT_WAIT_SECONDS,
        metavar="SECONDS",
        help="how long to wait for another writer of the same index (0: fail at once)",
    )


def _add_engine_flags(parser: argparse.ArgumentParser) -> None:
    settings = RaySettings()
    parser.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="where texts are embedded: this process, or a Ray Data actor pool "
        "(rows are read, checked and published here either way)",
    )
    parser.add_argument(
        "--ray-address",
        help="an existing Ray cluster (e.g. ray://head:10001, or 'auto'); "
        "default: start a local one for this job (README: it listens on every interface)",
    )
    parser.add_argument(
        "--ray-actors", type=int, default=settings.actors, help="encoding actors (one model each)"
    )
    parser.add_argument(
        "--ray-threads",
        type=int,
        default=settings.threads_per_actor,
        help="BLAS threads in each actor",
    )


def _add_common_flags(parser: argparse.ArgumentParser) -> None:
    _add_wait_flag(parser)
    add_backend_flags(parser)
    add_runtime_flag(parser)
    parser.add_argument(
        "--index-type",
        default="auto",
        choices=INDEX_KINDS,
        help="auto: flat up to 50k vectors, HNSW up to 2M, IVF-SQ8 beyond; add and delete "
        "keep the type and --index-param values the current version was built with",
    )
    parser.add_argument(
        "--index-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an index parameter (M, ef_search, nlist, nprobe, ...)",
    )
    parser.add_argument(
        "--keep",
        type=int,
        default=layout.DEFAULT_KEEP_VERSIONS,
        help="versions to keep, the current one included",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="siamese-index",
        description=__doc__.splitlines()[0],
        formatter_class=DefaultsHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser(
        "build",
        formatter_class=DefaultsHelpFormatter,
        help="index a whole table as a new version",
    )
    build.add_argument("--model", required=True, type=Path, help="model directory")
    build.add_argument(
        "--out",
        "--index",
        dest="out",
        required=True,
        type=Path,
        help="index directory (--index, as the other commands name it, works too)",
    )
    build.add_argument(
        "--replace",
        action="store_true",
        help="the directory already has versions: publish this table as a new version "
        "(the old ones stay until pruned; rollback returns to them)",
    )
    _add_data_flags(build, carried=False)
    _add_common_flags(build)
    _add_engine_flags(build)

    add = commands.add_parser(
        "add",
        formatter_class=DefaultsHelpFormatter,
        help="a new version with more rows",
    )
    add.add_argument("--index", required=True, type=Path, help="index directory")
    add.add_argument("--model", type=Path, help="default: the model the index was built with")
    add.add_argument("--upsert", action="store_true", help="replace rows whose ids exist")
    _add_data_flags(add, carried=True)
    _add_common_flags(add)
    _add_engine_flags(add)

    delete = commands.add_parser(
        "delete",
        formatter_class=DefaultsHelpFormatter,
        help="a new version without some ids",
    )
    delete.add_argument("--index", required=True, type=Path, help="index directory")
    delete.add_argument("--model", type=Path, help="default: the model the index was built with")
    delete.add_argument("--ids", nargs="+", default=[], metavar="ID", help="ids to delete")
    delete.add_argument("--ids-file", type=Path, help="one id per line")
    delete.add_argument(
        "--ignore-missing", action="store_true", help="skip ids the index does not hold"
    )
    _add_common_flags(delete)

    compact = commands.add_parser(
        "compact",
        formatter_class=DefaultsHelpFormatter,
        help="a new version holding the live rows as one segment (deleted rows gone, "
        "one index of the requested type)",
    )
    compact.add_argument("--index", required=True, type=Path, help="index directory")
    compact.add_argument("--model", type=Path, help="default: the model the index was built with")
    _add_common_flags(compact)

    export = commands.add_parser(
        "export",
        formatter_class=DefaultsHelpFormatter,
        help="write a version's live rows (id, label, text) to a CSV, JSON Lines or "
        "Parquet file (by its suffix): what Upsert added included",
    )
    export.add_argument("--index", required=True, type=Path, help="index directory")
    export.add_argument("--version", help="a retained version (default: the current one)")
    export.add_argument("--out", required=True, type=Path, help=".csv, .jsonl or .parquet")
    export.add_argument("--quiet", action="store_true", help="no progress bar")

    reembed = commands.add_parser(
        "reembed",
        formatter_class=DefaultsHelpFormatter,
        help="a new version holding every live row embedded with another model (read "
        "from the index itself; servers keep serving and writing meanwhile)",
    )
    reembed.add_argument("--index", required=True, type=Path, help="index directory")
    reembed.add_argument("--model", required=True, type=Path, help="the new model directory")
    _add_common_flags(reembed)
    _add_engine_flags(reembed)

    retrain = commands.add_parser(
        "retrain",
        formatter_class=DefaultsHelpFormatter,
        help="the learning loop in one command: train a model on what the index holds "
        "(siamese-train --from-index), then re-embed every row with it (reembed)",
    )
    retrain.add_argument("--index", required=True, type=Path, help="index directory")
    retrain.add_argument("--out", required=True, type=Path, help="the new model directory")
    retrain.add_argument(
        "train_flags",
        nargs=argparse.REMAINDER,
        help="after --: flags for siamese-train (recipe, --seed, --validation-data, ...)",
    )
    _add_common_flags(retrain)
    _add_engine_flags(retrain)

    info = commands.add_parser(
        "info",
        formatter_class=DefaultsHelpFormatter,
        help="print the current version's manifest",
    )
    info.add_argument("--index", required=True, type=Path, help="index directory")

    listing = commands.add_parser(
        "list",
        formatter_class=DefaultsHelpFormatter,
        help="the retained versions: counts, dates, which is current, which readers hold",
    )
    listing.add_argument("--index", required=True, type=Path, help="index directory")

    discard = commands.add_parser(
        "discard-kept",
        formatter_class=DefaultsHelpFormatter,
        help="delete the vectors stopped build / add / reembed runs kept for their next "
        "run (what `list` shows as kept), refused while such a job runs",
    )
    discard.add_argument("--index", required=True, type=Path, help="index directory")
    _add_wait_flag(discard)

    back = commands.add_parser(
        "rollback",
        formatter_class=DefaultsHelpFormatter,
        help="point CURRENT back at a retained version (servers reload it)",
    )
    back.add_argument("--index", required=True, type=Path, help="index directory")
    back.add_argument(
        "--to", metavar="VERSION", help="the version (default: the newest before the current)"
    )
    _add_wait_flag(back)
    add_backend_flags(back)
    return parser


def _params(pairs: list[str]) -> dict | None:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not value.lstrip("-").isdigit():
            raise UserError(f"--index-param {pair!r}: expected KEY=INTEGER, e.g. nprobe=32")
        params[key] = int(value)
    return params or None


def _options(args) -> BuildOptions:
    index_dir = args.out if args.command == "build" else args.index
    return BuildOptions(
        milvus=milvus_target(args, index_dir),
        index_type=args.index_type,
        index_params=_params(args.index_param),
        keep_versions=args.keep,
        strict=getattr(args, "strict", False),
        show_progress=not args.quiet,
        replace=getattr(args, "replace", False),
        wait_seconds=args.wait,
        index_metadata=_field_names(getattr(args, "index_metadata", ""), "--index-metadata"),
        engine=getattr(args, "engine", "local"),
        ray=RaySettings(
            address=getattr(args, "ray_address", None),
            actors=getattr(args, "ray_actors", RaySettings.actors),
            threads_per_actor=getattr(args, "ray_threads", RaySettings.threads_per_actor),
        ),
    )


def _columns(args, base: dict | None = None) -> Columns:
    """The table's columns: the flags, else (add) as the current version was built, and
    for ids a column named `id` when the table has one. Says what it chose."""
    source = (base or {}).get("source") or {}
    text = args.text_column or source.get("text_column") or "text"
    if args.no_labels:
        label = None
    elif args.label_column is not None:
        label = args.label_column
    elif base is not None:
        label = source.get("label_column", "label" if base.get("labels") else None)
    else:
        label = "label"
    id_column = args.id_column or source.get("id_column")
    if id_column is None and "id" in table_columns(args.data) and text != "id" and label != "id":
        id_column = "id"
        print(f"using the column 'id' of {args.data} as ids (--id-column sets another)")
    fields = _field_names(args.metadata_columns, "--metadata-columns")
    columns = Columns(text=text, label=label, id=id_column, metadata=fields)
    if base is not None and not (args.text_column and (args.label_column or args.no_labels)):
        print(
            f"reading {args.data} as the index was built: text column {text!r}, "
            f"label column {label!r}, id column {id_column!r}"
        )
    return columns


def _field_names(listed: str, flag: str) -> tuple[str, ...]:
    """A flag's comma-separated metadata field names, checked (a record's own field
    named here was refused row by row, leaving an empty index)."""
    fields = tuple(name.strip() for name in listed.split(",") if name.strip())
    for name in fields:
        check_key(name, flag)
        if name in RECORD_FIELDS:
            raise UserError(
                f"{flag}: {name!r} is a record's own field, not a metadata field; "
                f"rename that column of the table (metadata fields take any name but "
                f"{', '.join(RECORD_FIELDS)})"
            )
    return fields


def _current_manifest(index_dir: Path) -> dict:
    """The current version's manifest alone (checked against its checksum), without
    opening its index and records."""
    return layout.read_manifest(resolve_version_dir(index_dir))


def _model_for(args, index_dir: Path):
    from siamese_search.core.model_artifact import load_model

    return load_model(args.model if args.model is not None else model_directory_of(index_dir))


def _report(report, data: Path | None) -> None:
    if report.problems and data is not None:
        print(describe_problems(data, report.problems), file=sys.stderr)
    reused = f", {report.reused} taken from a stopped run" if report.reused else ""
    print(
        f"version {report.version}: {report.count} vectors ({report.index_type}); "
        f"+{report.added} -{report.removed}, {len(report.problems)} row(s) skipped"
        f"{reused}, {report.seconds:.1f} s"
    )


def _retrain(args, options: BuildOptions):
    """siamese-train --from-index in its own process (the indexer never imports the
    trainer: TensorFlow stays out of an install that only indexes and serves), then
    the re-embedding job with the model it wrote."""
    import subprocess

    from siamese_search.core.model_artifact import load_model
    from siamese_search.indexer.reembed import reembed_index

    flags = [flag for flag in args.train_flags if flag != "--"]
    command = [sys.executable, "-m", "siamese_search.trainer.cli", "--from-index"]
    command += [str(args.index), "--out", str(args.out), *flags]
    started = time.perf_counter()
    if subprocess.run(command).returncode != 0:
        raise UserError("siamese-train failed (its message is above); the index is unchanged")
    trained = time.perf_counter() - started
    print(f"trained {args.out} in {trained:.1f} s; re-embedding {args.index} with it")
    return reembed_index(args.index, load_model(args.out), options)


#: what `list` calls each kind of job a workspace is kept for (indexer.resume)
JOB_NAMES = {"reembed": "reembed", "ingest": "build or add"}


def _discard_kept(index_dir: Path, wait: float) -> int:
    """Delete what stopped jobs kept, under both jobs' locks: refused while a reembed
    or compaction runs, and after `wait` s while a build or add does (a running job's
    workspace is in use)."""
    if not index_dir.is_dir():
        raise UserError(f"{index_dir}: no such index directory")
    with layout.compaction_lock(index_dir), layout.writer_lock(index_dir, wait):
        discarded = discard_kept_work(index_dir)
    for kept in discarded:
        print(
            f"deleted {kept.rows} vectors a stopped {JOB_NAMES[kept.kind]} kept in "
            f"{kept.directory} ({kept.megabytes:.0f} MB)"
        )
    if not discarded:
        print(f"{index_dir}: no stopped job kept any vectors")
    return 0


@run_cli
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_runtime_flag(args)
    if args.command == "info":
        with open_index(args.index) as version:
            print(json.dumps({"version": version.name, **version.manifest}, indent=2))
        return 0
    if args.command == "list":
        print(f"{'version':<8} {'vectors':>10}  {'created (UTC)':<25} {'made by':<8} state")
        for v in list_index_versions(args.index):
            state = ", ".join(s for s, on in (("current", v.current), ("held", v.held)) if on)
            print(f"{v.name:<8} {v.count:>10}  {v.created_at:<25} {v.operation:<8} {state}")
        for kept in kept_work(args.index):
            print(
                f"kept by a stopped {JOB_NAMES[kept.kind]}: {kept.rows} vectors in "
                f"{kept.directory} ({kept.megabytes:.0f} MB); the same command run again "
                "takes them, or `siamese-index discard-kept` deletes them"
            )
        return 0
    if args.command == "discard-kept":
        return _discard_kept(args.index, args.wait)
    if args.command == "export":
        from siamese_search.indexer.export import export_version

        exported = export_version(args.index, args.out, args.version, not args.quiet)
        print(f"version {exported.version}: {exported.rows} rows to {exported.path}")
        if exported.fields:
            named = ",".join(exported.fields)
            print(f"metadata fields as columns: build with --metadata-columns {named}")
        for name, column in exported.renamed.items():
            print(
                f"note: metadata field {name!r} written as column {column!r}: {name!r} is "
                "the record's own column (the field was written before such names were "
                "refused)",
                file=sys.stderr,
            )
        if exported.as_text and exported.path.suffix.lower() == ".csv":
            print(
                f"note: fields {', '.join(exported.as_text)} hold numbers, booleans or lists, "
                "written as text (a CSV cell is text, and reads back as a string); export to "
                ".jsonl or .parquet to keep their types",
                file=sys.stderr,
            )
        elif exported.as_text:
            print(
                f"note: fields {', '.join(exported.as_text)} mix kinds of values (e.g. numbers "
                "and text), which a Parquet column cannot: written as JSON text, they read "
                "back as strings; export to .jsonl to keep each value's type",
                file=sys.stderr,
            )
        return 0
    if args.command == "rollback":
        previous, now = rollback(args.index, args.to, args.wait, milvus_target(args, args.index))
        print(f"{args.index}: CURRENT {previous or '(none)'} -> {now}; servers reload it")
        return 0
    options = _options(args)
    if args.command == "build":
        from siamese_search.core.model_artifact import load_model

        columns = _columns(args)
        report = build_index(args.out, load_model(args.model), args.data, columns, options)
        _report(report, args.data)
    elif args.command == "add":
        base = _current_manifest(args.index)
        if args.index_type == "auto":
            kind, params = carried_index_settings(base, options)
            print(f"keeping index type {kind} with parameters {params or 'derived from size'}")
        report = add_to_index(
            args.index,
            _model_for(args, args.index),
            args.data,
            _columns(args, base),
            options,
            upsert=args.upsert,
        )
        _report(report, args.data)
    elif args.command == "reembed":
        from siamese_search.core.model_artifact import load_model
        from siamese_search.indexer.reembed import reembed_index

        report = reembed_index(args.index, load_model(args.model), options)
        _report(report, None)
    elif args.command == "retrain":
        report = _retrain(args, options)
        _report(report, None)
    elif args.command == "compact":
        report = compact_index(args.index, _model_for(args, args.index), options)
        _report(report, None)
    else:
        ids = list(args.ids)
        if args.ids_file:
            if not args.ids_file.is_file():
                raise UserError(f"{args.ids_file}: no such file")
            ids += [
                line.strip()
                for line in args.ids_file.read_text("utf-8").splitlines()
                if line.strip()
            ]
        report = delete_from_index(
            args.index,
            _model_for(args, args.index),
            ids,
            options,
            ignore_missing=args.ignore_missing,
        )
        _report(report, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
