"""`--help` pages that show each option's default, as every command should.

argparse's ArgumentDefaultsHelpFormatter also prints "(default: None)" on required
options and "(default: False)" on switches; this one leaves those out, so a default
is shown exactly where there is one to know.
"""

from __future__ import annotations

import argparse


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str | None:
        empty = action.default is None or action.default is False or action.default == []
        if action.required or empty or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)
