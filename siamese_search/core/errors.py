"""Errors that mean "the user gave us something we cannot use".

Every command-line entry point catches `UserError` and prints its message (which
says what was expected, what was found and what to do) instead of a traceback.
Anything else that escapes is a bug in siamese-search, not bad input.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable
from typing import Protocol


class UserError(Exception):
    """Bad input or configuration; the message tells the user what to fix."""


class DataError(UserError):
    """An input table is missing, unreadable or has rows that cannot be used."""


class ArtifactMismatchError(UserError):
    """A model or index was made with something other than what it is used with."""


class DamagedArtifactError(UserError):
    """A stored file no longer holds what was written: changed or damaged on disk
    after it was checked and opened (a server answers DATA_LOSS)."""


class CliMain(Protocol):
    """A console script's entry point: `main()` reads sys.argv, `main([...])` a list."""

    def __call__(self, argv: list[str] | None = None) -> int: ...


_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free space and run it again (nothing was published)",
    errno.EDQUOT: "the disk quota is used up: free space and run it again",
    errno.EACCES: "permission denied: run as a user who may write there, or choose another path",
    errno.EPERM: "operation not permitted: check the path's owner and mode",
    errno.ENOTDIR: "a file stands where a directory is expected: check the path",
    errno.EISDIR: "a directory stands where a file is expected: check the path",
    errno.EEXIST: (
        "something already stands at that path (a file where a directory is to be "
        "made?): choose another path"
    ),
    errno.EROFS: "the file system is read-only: choose another path",
    errno.EADDRINUSE: "the address is in use: is another server on that port?",
}


def describe_os_error(error: OSError) -> str:
    """An OSError as the path and cause a person can act on (never a traceback)."""
    where = f"{error.filename}: " if error.filename else ""
    cause = error.strerror or str(error)
    hint = _OS_HINTS.get(error.errno or -1)
    return f"{where}{cause}" + (f" ({hint})" if hint else "")


def run_cli(main: Callable[[list[str] | None], int]) -> CliMain:
    """Wrap a console-script `main` so bad input ends with a message and exit code 2.

    Set SIAMESE_DEBUG=1 to see the traceback of unexpected errors as well.
    """

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted: nothing was written", file=sys.stderr)
            return 130
        except OSError as error:  # disk full, permissions, a file where a folder should be
            print(f"error: {describe_os_error(error)}", file=sys.stderr)
            return 2
        except Exception as error:  # a bug: say so plainly, keep the trace on request
            if os.environ.get("SIAMESE_DEBUG"):
                raise
            print(
                f"internal error: {type(error).__name__}: {error}\n"
                "This is a bug in siamese-search; rerun with SIAMESE_DEBUG=1 for the traceback.",
                file=sys.stderr,
            )
            return 1

    return wrapper
