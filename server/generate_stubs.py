"""Generate the Python gRPC stubs from proto/ into server/generated/ (never hand-edit them),
and the REST gateway's OpenAPI document (`search.openapi.json`) from the same .proto.

    python -m siamese_search.server.generate_stubs          # regenerate after changing the .proto
tests/test_proto_stubs.py fails when the committed stubs drift from the .proto.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "proto"
PROTO = PROTO_ROOT / "siamese_search" / "v1" / "search.proto"
OUT = ROOT / "server" / "generated"
FILES = ("search_pb2.py", "search_pb2.pyi", "search_pb2_grpc.py")
OPENAPI = "search.openapi.json"


#: google/api/{annotations,http}.proto, vendored unchanged (proto/google/README.md)
VENDORED = ("google/api/annotations.proto", "google/api/http.proto")


def installed_google_proto(name: str) -> Path:
    """The googleapis-common-protos package's copy of a vendored file."""
    import google.api.annotations_pb2 as annotations

    return Path(annotations.__file__).resolve().parents[2] / name


def generate() -> dict[str, str]:
    """Return {file name: contents} of freshly generated stubs."""
    with tempfile.TemporaryDirectory() as tmp:
        # a separate process: grpc_tools' protoc segfaults when TensorFlow's protobuf
        # runtime is loaded in the same process (seen in the test suite)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{PROTO_ROOT}",  # self-contained: google/api is vendored there
                f"--python_out={tmp}",
                f"--descriptor_set_out={tmp}/search.desc",
                "--include_source_info",
                f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}",
                str(PROTO),
            ],
            check=True,
        )
        generated = Path(tmp) / "siamese_search" / "v1"
        files = {name: (generated / name).read_text() for name in FILES}
        descriptor_set = (Path(tmp) / "search.desc").read_bytes()
    from siamese_search.server.openapi import openapi_document

    document = openapi_document(descriptor_set, "siamese-search", "v1")
    files[OPENAPI] = json.dumps(document, indent=2, sort_keys=True) + "\n"
    # protoc writes absolute imports from the proto root; ours live in server.generated
    files["search_pb2_grpc.py"] = re.sub(
        r"^from siamese_search\.v1 import search_pb2",
        "from siamese_search.server.generated import search_pb2",
        files["search_pb2_grpc.py"],
        flags=re.MULTILINE,
    )
    return files


def main() -> int:
    files = generate()
    for name, text in files.items():
        (OUT / name).write_text(text)
    print(f"wrote {', '.join(files)} to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
