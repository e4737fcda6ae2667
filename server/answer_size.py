"""An answer's bytes, counted as it is built, against the server's send limit.

A stored text may be megabytes (a table row may hold 16 M characters) and a row's
metadata up to ~4 MB (64 fields, each a list of 64 strings of 1,024 characters), and
an answer holds them once per query that found the row. Building an answer whole and
measuring it afterwards let a 2 KB SearchBatch of 256 queries near 12 stored texts of
1 MB build 3 GB of protobuf: the server peaked at 10.5 GB and kept 3.7 GB, then refused
the answer for its size. Each part is measured as it is made instead, so what is
built stays within the limit (plus one part).
"""

from __future__ import annotations

from google.protobuf.message import Message

#: a part's field tag and length prefix in the answer, at most
FRAMING_BYTES = 8


class AnswerSize:
    """The bytes of the parts of one answer built so far (`limit`: the most it may hold)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.bytes = 0

    def fits(self, part: Message) -> bool:
        """Count `part` (a message going into a repeated field of the answer); whether
        the answer is still within the limit with it."""
        self.bytes += part.ByteSize() + FRAMING_BYTES
        return self.bytes <= self.limit
