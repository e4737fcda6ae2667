"""The committed gRPC stubs are what the .proto generates (no drift, no hand edits).

Version stamps are set aside: a newer grpcio-tools writes its own version into the
stubs (`GRPC_GENERATED_VERSION`, the protobuf runtime check) without any change of
the contract, and that alone must not fail the suite.
"""

from __future__ import annotations

import re

from siamese_search.server.generate_stubs import OUT, generate

_VERSION_STAMPS = [
    re.compile(r"^# Protobuf Python Version: .*$", re.MULTILINE),
    re.compile(r"^GRPC_GENERATED_VERSION = .*$", re.MULTILINE),
    re.compile(r"_runtime_version\.ValidateProtobufRuntimeVersion\(.*?\)", re.DOTALL),
]


def without_version_stamps(text: str) -> str:
    for stamp in _VERSION_STAMPS:
        text = stamp.sub("<version>", text)
    return text


def test_committed_stubs_match_the_proto():
    for name, text in generate().items():
        committed = without_version_stamps((OUT / name).read_text())
        assert committed == without_version_stamps(text), (
            f"server/generated/{name} is stale: "
            "run `python -m siamese_search.server.generate_stubs`"
        )


def test_version_stamps_are_all_that_is_set_aside():
    committed = (OUT / "search_pb2_grpc.py").read_text()
    assert "GRPC_GENERATED_VERSION" in committed
    edited = committed.replace("def Search(", "def Searched(")
    assert without_version_stamps(edited) != without_version_stamps(committed)
