"""The committed gRPC stubs are exactly what the .proto generates (no drift, no hand edits)."""

from __future__ import annotations

from server.generate_stubs import OUT, generate


def test_committed_stubs_match_the_proto():
    for name, text in generate().items():
        assert (OUT / name).read_text() == text, (
            f"server/generated/{name} is stale: run `python -m server.generate_stubs`"
        )
