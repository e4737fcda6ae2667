"""`siamese-query`: a command-line client for a running siamese-serve.

siamese-query --target 127.0.0.1:50051 "fix crash on startup" -k 5
siamese-query --target 127.0.0.1:50051 "fix crash on startup" --predict --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import grpc
from google.protobuf import json_format

from server.generated import search_pb2 as pb
from server.generated import search_pb2_grpc as pb_grpc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="siamese-query", description=__doc__.splitlines()[0])
    parser.add_argument("text", nargs="?", help="the query text")
    parser.add_argument("--target", default="127.0.0.1:50051", help="HOST:PORT of the server")
    parser.add_argument("-k", type=int, default=5, help="neighbours to return / that vote")
    parser.add_argument("--predict", action="store_true", help="predict a label")
    parser.add_argument("--info", action="store_true", help="show model and index information")
    parser.add_argument("--labels", nargs="+", default=[], help="only neighbours with these labels")
    parser.add_argument("--min-score", type=float, help="minimum cosine similarity")
    parser.add_argument("--json", action="store_true", help="print the response as JSON")
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
    parser.add_argument("--tls-ca", type=Path, help="CA certificate to trust (turns TLS on)")
    parser.add_argument("--token-file", type=Path, help="bearer token (or set SIAMESE_TOKEN)")
    return parser


def _channel(args) -> grpc.Channel:
    if args.tls_ca:
        credentials = grpc.ssl_channel_credentials(root_certificates=args.tls_ca.read_bytes())
        return grpc.secure_channel(args.target, credentials)
    return grpc.insecure_channel(args.target)


def _print_neighbors(neighbors) -> None:
    for rank, n in enumerate(neighbors, start=1):
        label = f"[{n.label}] " if n.label else ""
        print(f"{rank:>3}. {n.score:6.3f}  {label}{n.text}  (id {n.id})")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.info and not args.text:
        print("error: give a query TEXT, or --info", file=sys.stderr)
        return 2
    token = os.environ.get("SIAMESE_TOKEN")
    if args.token_file:
        token = args.token_file.read_text("utf-8").strip()
    metadata = [("authorization", f"Bearer {token}")] if token else None
    with _channel(args) as channel:
        stub = pb_grpc.SearchServiceStub(channel)
        try:
            if args.info:
                response = stub.GetInfo(
                    pb.GetInfoRequest(), timeout=args.timeout, metadata=metadata
                )
            elif args.predict:
                request = pb.PredictRequest(text=args.text, k=args.k)
                if args.min_score is not None:
                    request.min_score = args.min_score
                response = stub.Predict(request, timeout=args.timeout, metadata=metadata)
            else:
                request = pb.SearchRequest(text=args.text, k=args.k, labels=args.labels)
                if args.min_score is not None:
                    request.min_score = args.min_score
                response = stub.Search(request, timeout=args.timeout, metadata=metadata)
        except grpc.RpcError as error:
            print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    if args.json or args.info:
        print(
            json.dumps(
                json_format.MessageToDict(response, preserving_proto_field_name=True), indent=2
            )
        )
    elif args.predict:
        shown = response.label or "(abstained: no neighbour reached --min-score)"
        print(
            f"label {shown}  confidence {response.confidence:.3f}  "
            f"(index version {response.index_version})"
        )
        _print_neighbors(response.neighbors)
    else:
        print(f"index version {response.index_version}")
        _print_neighbors(response.neighbors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
