"""`siamese-query`: a command-line client for a running siamese-serve.

    siamese-query --target 127.0.0.1:50051 "fix crash on startup" -k 5
    siamese-query "fix crash on startup" "speed up the parser" --predict --json
    git log --format=%s | siamese-query - --predict     # one query per line of stdin

Several texts go in one SearchBatch / PredictBatch call.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from siamese_search.core.cli_help import DefaultsHelpFormatter
from siamese_search.server.generated import search_pb2 as pb
from siamese_search.server.generated import search_pb2_grpc as pb_grpc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="siamese-query",
        description=__doc__.splitlines()[0],
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument(
        "texts", nargs="*", metavar="TEXT", help="query texts; '-' reads one per line from stdin"
    )
    parser.add_argument("--target", default="127.0.0.1:50051", help="HOST:PORT of the server")
    parser.add_argument("-k", type=int, default=5, help="neighbours to return / that vote")
    parser.add_argument("--predict", action="store_true", help="predict a label")
    parser.add_argument("--info", action="store_true", help="show model and index information")
    parser.add_argument("--labels", nargs="+", default=[], help="only neighbours with these labels")
    parser.add_argument(
        "--min-score", type=float, help="minimum cosine similarity (default: no threshold)"
    )
    parser.add_argument("--json", action="store_true", help="print the response as JSON")
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
    parser.add_argument("--tls-ca", type=Path, help="CA certificate to trust (turns TLS on)")
    parser.add_argument("--token-file", type=Path, help="bearer token (or set SIAMESE_TOKEN)")
    return parser


def read_texts(arguments: Sequence[str], stdin) -> list[str]:
    """The query texts: the arguments, with '-' replaced by stdin's non-blank lines."""
    texts: list[str] = []
    for argument in arguments:
        if argument == "-":
            texts.extend(line.rstrip("\r\n") for line in stdin if line.strip())
        else:
            texts.append(argument)
    return texts


def _channel(args) -> grpc.Channel:
    if args.tls_ca:
        credentials = grpc.ssl_channel_credentials(root_certificates=args.tls_ca.read_bytes())
        return grpc.secure_channel(args.target, credentials)
    return grpc.insecure_channel(args.target)


def _threshold_note(args) -> str:
    if args.min_score is None:
        return "no neighbours (the index is empty or the label filter matched nothing)"
    return f"no neighbour reached --min-score {args.min_score}"


def _print_neighbors(neighbors, args) -> None:
    if not neighbors:
        print(f"     ({_threshold_note(args)})")
    for rank, n in enumerate(neighbors, start=1):
        label = f"[{n.label}] " if n.label else ""
        print(f"{rank:>3}. {n.score:6.3f}  {label}{n.text}  (id {n.id})")


def _print_prediction(result, args) -> None:
    shown = result.label or f"(abstained: {_threshold_note(args)})"
    print(
        f"label {shown}  confidence {result.confidence:.3f}  (index version {result.index_version})"
    )
    _print_neighbors(result.neighbors, args)


def _call(stub, args, texts: list[str], metadata) -> Message:
    common = {"timeout": args.timeout, "metadata": metadata}
    if args.info:
        return stub.GetInfo(pb.GetInfoRequest(), **common)
    single = len(texts) == 1
    request: Message
    if args.predict:
        if single:
            request = pb.PredictRequest(text=texts[0], k=args.k)
        else:
            request = pb.PredictBatchRequest(texts=texts, k=args.k)
    elif single:
        request = pb.SearchRequest(text=texts[0], k=args.k, labels=args.labels)
    else:
        request = pb.SearchBatchRequest(texts=texts, k=args.k, labels=args.labels)
    if args.min_score is not None:
        request.min_score = args.min_score
    method = {
        (True, True): stub.Predict,
        (True, False): stub.PredictBatch,
        (False, True): stub.Search,
        (False, False): stub.SearchBatch,
    }[(args.predict, single)]
    return method(request, **common)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    texts = read_texts(args.texts, sys.stdin)
    if not args.info and not texts:
        print("error: give one or more query TEXTs ('-' for stdin), or --info", file=sys.stderr)
        return 2
    token = os.environ.get("SIAMESE_TOKEN")
    if args.token_file:
        if not args.token_file.is_file():
            print(f"error: {args.token_file}: no such file (--token-file)", file=sys.stderr)
            return 2
        token = args.token_file.read_text("utf-8").strip()
    metadata = [("authorization", f"Bearer {token}")] if token else None
    with _channel(args) as channel:
        try:
            response = _call(pb_grpc.SearchServiceStub(channel), args, texts, metadata)
        except grpc.RpcError as error:
            print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    if args.json or args.info:
        payload = json_format.MessageToDict(response, preserving_proto_field_name=True)
        print(json.dumps(payload, indent=2))
        return 0
    results = list(getattr(response, "results", [response]))
    for number, (text, result) in enumerate(zip(texts, results, strict=True)):
        if len(texts) > 1:
            print(f"{chr(10) if number else ''}> {text}")
        if args.predict:
            _print_prediction(result, args)
        else:
            print(f"index version {result.index_version}")
            _print_neighbors(result.neighbors, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
