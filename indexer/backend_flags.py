"""The `--backend` flags, shared by `siamese-index` and `siamese-serve`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from siamese_search.core.errors import UserError
from siamese_search.indexer.backends.milvus_backend import MilvusTarget, default_name

TOKEN_VARIABLE = "SIAMESE_MILVUS_TOKEN"


def add_backend_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=["faiss", "milvus"],
        default="faiss",
        help="faiss: the index directory alone; milvus: each version is also in Milvus "
        "(its rows in the index's data collection, a head collection per version), the "
        "current one under an alias that servers follow",
    )
    parser.add_argument(
        "--milvus-uri",
        help="the Milvus server, http://HOST:19530 (https:// for TLS); the token, if any, "
        f"comes from ${TOKEN_VARIABLE}",
    )
    parser.add_argument(
        "--milvus-collection",
        metavar="ALIAS",
        help="the alias naming the index in Milvus; version heads are ALIAS_v000001, "
        "..., rows in ALIAS_g000001 (default: the index directory's name)",
    )
    parser.add_argument(
        "--milvus-ca-cert", type=Path, help="CA certificate for an https:// Milvus URI"
    )


def milvus_target(args, index_dir: Path | None) -> MilvusTarget | None:
    """The Milvus target the flags name, or None for the FAISS backend."""
    if args.backend != "milvus":
        if args.milvus_uri or args.milvus_collection:
            raise UserError("--milvus-uri and --milvus-collection need --backend milvus")
        return None
    if not args.milvus_uri:
        raise UserError("--backend milvus needs --milvus-uri, e.g. http://127.0.0.1:19530")
    name = args.milvus_collection
    if name is None:
        if index_dir is None:
            raise UserError("--backend milvus needs --milvus-collection ALIAS (the index's name)")
        name = default_name(index_dir)
    return MilvusTarget(
        uri=args.milvus_uri,
        name=name,
        token=os.environ.get(TOKEN_VARIABLE) or None,
        ca_cert=args.milvus_ca_cert,
    )
