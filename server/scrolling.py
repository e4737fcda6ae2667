"""Scroll's page tokens: each names the index version the scroll reads and the last
position it gave, so that every live example comes exactly once across the pages of
one scroll, whatever is written meanwhile (the version is immutable; a write makes a
new one). A page whose version is no longer current is read from the version's own
directory, retained by the index (`--keep`); one already pruned is a clear
FAILED_PRECONDITION: start the scroll again.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from contextlib import contextmanager

from siamese_search.indexer import layout
from siamese_search.indexer.store import IndexVersion, open_index
from siamese_search.server.validation import InvalidRequest


class VersionGone(Exception):
    """The version a page token names was pruned."""


def token(version: str, after: int) -> str:
    raw = json.dumps({"v": version, "after": int(after)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode("ascii")).decode("ascii")


def read_token(page_token: str) -> tuple[str | None, int]:
    """(version, last position given) of a token; (None, -1) for the first page."""
    if not page_token:
        return None, -1
    try:
        said = json.loads(base64.urlsafe_b64decode(page_token.encode("ascii")))
        version, after = said["v"], said["after"]
        if not (isinstance(version, str) and version.isdigit() and isinstance(after, int)):
            raise ValueError
        return version, after
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeEncodeError):
        raise InvalidRequest(
            "page_token is not one this server gave; send the next_page_token of the "
            "previous page, or none to start"
        ) from None


@contextmanager
def version_for(current: IndexVersion, name: str | None, source) -> Iterator[IndexVersion]:
    """The version a page reads: the current one, or the retained one a token names."""
    if name is None or name == current.name:
        yield current
        return
    directory = layout.version_dir(source.index_dir, name)
    if not directory.is_dir():
        raise VersionGone(
            f"the scroll reads version {name}, which was pruned since its first page "
            "(the index keeps its --keep newest versions); start the scroll again"
        )
    with open_index(directory, load_indexes=False, cache=source.segments) as version:
        yield version
