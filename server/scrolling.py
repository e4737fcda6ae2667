"""Scroll's page tokens: each names the index version the scroll reads and the last
position it gave (`<version>.<position>.<index>`), so that every live example comes
exactly once across the pages of one scroll, whatever is written meanwhile (the
version is immutable; a write makes a new one). A page whose version is no longer
current is read from the version's own directory, which the scroll holds from
pruning while it goes on (server/scroll_holds.py); one pruned all the same (the
scroll idle past the keep-alive) or never made is NOT_FOUND, as an unknown label is:
start the scroll again.

The last part names the index (the start of its `index_id`, which every version of
an index directory keeps): version numbers start at 1 in every index, so without it a
token from another collection, or from a collection dropped and made again, would
read another index's rows at that position and answer a wrong page in silence.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from siamese_search.indexer.store import ServedVersion, VersionGone
from siamese_search.server.validation import InvalidRequest

#: what a page token looks like: `<version>.<last position given>.<index tag>` (the
#: tag left out by servers before it, and for an index without an id), plain (the
#: served REST schema states it; nothing in it is secret: it names rows the caller read)
TOKEN_PATTERN = r"^[0-9]{1,12}\.[0-9]{1,18}(\.[0-9a-f]{1,16})?$"
#: hex digits of the index's id a token carries
INDEX_TAG_CHARS = 8
_TOKEN = re.compile(TOKEN_PATTERN)
#: what to do about a token unlike TOKEN_PATTERN (the gRPC check's and the REST
#: gateway's message)
TOKEN_RULE = (
    "is not one this server gave; send the next_page_token of the previous page, or none to start"
)


def index_tag(index: ServedVersion) -> str:
    """The part of a token naming the index ("" for an index made before ids were)."""
    return str(index.manifest.get("index_id") or "")[:INDEX_TAG_CHARS].lower()


def token(index: ServedVersion, after: int) -> str:
    tag = index_tag(index)
    return f"{index.name}.{int(after)}" + (f".{tag}" if tag else "")


def read_token(page_token: str, current: ServedVersion) -> tuple[str | None, int]:
    """(version, last position given) of a token for the index `current` belongs to;
    (None, -1) for the first page. A token another index gave is INVALID_ARGUMENT."""
    if not page_token:
        return None, -1
    if not _TOKEN.match(page_token):
        raise InvalidRequest(f"page_token {TOKEN_RULE}")
    version, after, *tag = page_token.split(".")
    if tag and tag[0] != index_tag(current):
        raise InvalidRequest(
            "page_token was given by another index (another collection's scroll, or one "
            "of a collection since dropped and made again); send this collection's "
            "next_page_token, or none to start"
        )
    return version.zfill(6), int(after)


@contextmanager
def version_for(current: ServedVersion, name: str | None, source) -> Iterator[ServedVersion]:
    """The version a page reads: the current one, or the retained one a token names
    (VersionGone once pruned)."""
    if name is None or name == current.name:
        yield current
        return
    try:
        version = source.open_version(name)
    except VersionGone:
        raise VersionGone(
            f"the page token names version {name}, which the index does not hold (pruned "
            "since the scroll's first page: the index keeps its --keep newest versions); "
            "start the scroll again"
        ) from None
    with version:
        yield version
