"""`siamese-query`: a command-line client for a running siamese-serve.

    siamese-query --target 127.0.0.1:50051 "fix crash on startup" -k 5
    siamese-query "fix crash on startup" "speed up the parser" --predict --json
    git log --format=%s | siamese-query - --predict     # one query per line of stdin
    siamese-query "printer jam" --filter '{"must": [{"key": "site", "match": {"value": "lyon"}}]}'

Several texts go in SearchBatch / PredictBatch calls (split at the server's limit).
Built on the typed client (`siamese_search.client.SearchClient`): timeouts, and
retries with backoff when the server is restarting or at its admission limit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import grpc
from google.protobuf import json_format

from siamese_search.client import SearchClient
from siamese_search.core.cli_help import DefaultsHelpFormatter


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
    parser.add_argument(
        "--collection", default="", help="the collection to query (default: the server's default)"
    )
    parser.add_argument("-k", type=int, default=5, help="neighbours to return / that vote")
    parser.add_argument("--predict", action="store_true", help="predict a label")
    parser.add_argument("--info", action="store_true", help="show model and index information")
    parser.add_argument("--labels", nargs="+", default=[], help="only neighbours with these labels")
    parser.add_argument(
        "--min-score", type=float, help="minimum cosine similarity (default: no threshold)"
    )
    parser.add_argument(
        "--filter",
        metavar="JSON",
        help="only examples passing this filter, a JSON object {must, should, must_not} of "
        "field tests {key, match: {value | any}} or {key, range: {gt, gte, lt, lte}} on "
        "metadata fields, label or id (docs/serving.md); @FILE reads it from a file",
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


def read_filter(given: str | None) -> dict | None:
    """--filter's JSON object (from the argument, or the file after '@'); ValueError
    says what to fix."""
    if given is None:
        return None
    text = given
    if given.startswith("@"):
        path = Path(given[1:])
        if not path.is_file():
            raise ValueError(f"{path}: no such file (--filter @FILE)")
        text = path.read_text("utf-8")
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--filter is not JSON ({error}); quote it for the shell") from None
    if not isinstance(spec, dict):
        raise ValueError('--filter must be a JSON object, e.g. {"must": [{"key": ...}]}')
    return spec


def _threshold_note(args) -> str:
    if args.min_score is None:
        return "no neighbours (the index is empty or no example passes the labels or filter given)"
    return f"no neighbour reached --min-score {args.min_score}"


#: a neighbour's text is shown up to this many characters (--json gives all of it)
SHOWN_CHARS = 300


#: bidirectional-text controls, which reorder what a terminal shows (U+202A-E, U+2066-9)
_BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _safe(text: str) -> str:
    """`text` for a terminal: control characters and bidi controls as escapes
    (`\\x1b`, `\\n`, `\\u202e`). A stored text is anyone's who could write to the
    index, and printed raw, an escape sequence in it recoloured, retitled or rewrote
    the terminal of whoever listed it, and its line breaks split the listing."""
    if text.isprintable():
        return text
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if char in _BIDI or unicodedata.category(char) in ("Cc", "Zl", "Zp")
        else char
        for char in text
    )


def _shown(text: str) -> str:
    """A stored text as a line of the listing: a long one (an index may hold whole
    documents) cut, saying how long it is."""
    if len(text) <= SHOWN_CHARS:
        return _safe(text)
    return f"{_safe(text[:SHOWN_CHARS])}... ({len(text):,} characters; --json shows all)"


def _print_neighbors(neighbors, args) -> None:
    if not neighbors:
        print(f"     ({_threshold_note(args)})")
    for rank, n in enumerate(neighbors, start=1):
        label = f"[{_safe(n.label)}] " if n.label else ""
        print(f"{rank:>3}. {n.score:6.3f}  {label}{_shown(n.text)}  (id {_safe(n.id)})")


def _abstention_note(result, args) -> str:
    if args.min_score is not None or not result.neighbors:
        return _threshold_note(args)
    return (
        f"none of these; the nearest texts voted {result.voted_label!r}, but the model's "
        "abstention rule found them too far or the vote too unsure"
    )


def _print_prediction(result, args) -> None:
    shown = _safe(result.label) or f"(abstained: {_abstention_note(result, args)})"
    print(
        f"label {shown}  confidence {result.confidence:.3f}  (index version {result.index_version})"
    )
    _print_neighbors(result.neighbors, args)


def _ask(client: SearchClient, args, texts: list[str], where: dict | None) -> list:
    """Typed results, one per text (a single text goes as Search / Predict)."""
    common = {"k": args.k, "min_score": args.min_score, "filter": where}
    if args.predict:
        if len(texts) == 1:
            return [client.predict(texts[0], **common)]
        return client.predict_many(texts, **common)
    if len(texts) == 1:
        return [client.search(texts[0], labels=args.labels, **common)]
    return client.search_many(texts, labels=args.labels, **common)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    texts = read_texts(args.texts, sys.stdin)
    if not args.info and not texts:
        print("error: give one or more query TEXTs ('-' for stdin), or --info", file=sys.stderr)
        return 2
    if args.predict and args.labels:
        print(
            "error: --labels filters Search only; Predict votes among all labels "
            "(drop --predict to search within labels)",
            file=sys.stderr,
        )
        return 2
    try:
        where = read_filter(args.filter)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    token = os.environ.get("SIAMESE_TOKEN")
    if args.token_file:
        if not args.token_file.is_file():
            print(f"error: {args.token_file}: no such file (--token-file)", file=sys.stderr)
            return 2
        token = args.token_file.read_text("utf-8").strip()
    client = SearchClient(
        args.target,
        token=token,
        ca_cert=args.tls_ca,
        timeout=args.timeout,
        collection=args.collection,
    )
    try:
        if args.info:
            info = client.info()
            payload = json_format.MessageToDict(info.raw, preserving_proto_field_name=True)
            print(json.dumps(payload, indent=2))
            return 0
        if client.batch_size > 1 and len(texts) > 1:
            client.batch_size = max(1, client.info().max_batch)
        results = _ask(client, args, texts, where)
    except grpc.RpcError as error:
        print(f"error: {error.code().name}: {_safe(error.details() or '')}", file=sys.stderr)
        return 1
    finally:
        client.close()
    if args.json:
        answers = [dataclasses.asdict(r) for r in results]
        print(json.dumps(answers[0] if len(answers) == 1 else {"results": answers}, indent=2))
        return 0
    for number, (text, result) in enumerate(zip(texts, results, strict=True)):
        if len(texts) > 1:
            print(f"{chr(10) if number else ''}> {_safe(text)}")
        if args.predict:
            _print_prediction(result, args)
        else:
            print(f"index version {result.index_version}")
            _print_neighbors(result.neighbors, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
