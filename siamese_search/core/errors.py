"""Errors that mean "the user gave us something we cannot use".

Every command-line entry point catches `UserError` and prints its message (which
says what was expected, what was found and what to do) instead of a traceback.
Anything else that escapes is a bug in siamese-search, not bad input.
"""

from __future__ import annotations

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


class CliMain(Protocol):
    """A console script's entry point: `main()` reads sys.argv, `main([...])` a list."""

    def __call__(self, argv: list[str] | None = None) -> int: ...


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
