"""`--help` pages that show each option's default, as every command should.

argparse's ArgumentDefaultsHelpFormatter also prints "(default: None)" on required
options, "(default: False)" on switches, "(default: )" on an empty string, and a
second default after a help text that says its own; this one leaves those out, so a
default is shown exactly where there is one to know, once.
"""

from __future__ import annotations

import argparse


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str | None:
        default = action.default
        empty = default is None or default is False or default == [] or default == ""
        said = "(default:" in (action.help or "")
        if action.required or empty or said or default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)
