"""Scroll's page tokens: each names the index version the scroll reads and the last
position it gave (`<version>.<position>`), so that every live example comes exactly
once across the pages of
one scroll, whatever is written meanwhile (the version is immutable; a write makes a
new one). A page whose version is no longer current is read from the version's own
directory, retained by the index (`--keep`); one already pruned (or never made) is
NOT_FOUND, as an unknown label is: start the scroll again.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from siamese_search.indexer import layout
from siamese_search.indexer.store import IndexVersion, open_index
from siamese_search.server.validation import InvalidRequest


class VersionGone(Exception):
    """The version a page token names was pruned."""


#: what a page token looks like: `<version>.<last position given>`, plain (the served
#: REST schema states it; nothing in it is secret: it names rows the caller read)
TOKEN_PATTERN = r"^[0-9]{1,12}\.[0-9]{1,18}$"
_TOKEN = re.compile(TOKEN_PATTERN)


def token(version: str, after: int) -> str:
    return f"{version}.{int(after)}"


def read_token(page_token: str) -> tuple[str | None, int]:
    """(version, last position given) of a token; (None, -1) for the first page."""
    if not page_token:
        return None, -1
    if not _TOKEN.match(page_token):
        raise InvalidRequest(
            "page_token is not one this server gave; send the next_page_token of the "
            "previous page, or none to start"
        )
    version, _, after = page_token.partition(".")
    return version.zfill(6), int(after)


@contextmanager
def version_for(current: IndexVersion, name: str | None, source) -> Iterator[IndexVersion]:
    """The version a page reads: the current one, or the retained one a token names."""
    if name is None or name == current.name:
        yield current
        return
    directory = layout.version_dir(source.index_dir, name)
    if name not in layout.list_versions(source.index_dir) or not directory.is_dir():
        raise VersionGone(
            f"the page token names version {name}, which the index does not hold (pruned "
            "since the scroll's first page: the index keeps its --keep newest versions); "
            "start the scroll again"
        )
    with open_index(directory, load_indexes=False, cache=source.segments) as version:
        yield version
