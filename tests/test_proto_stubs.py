"""The committed gRPC stubs are what the .proto generates (no drift, no hand edits).

Version stamps are set aside: a newer grpcio-tools writes its own version into the
stubs (`GRPC_GENERATED_VERSION`, the protobuf runtime check) without any change of
the contract, and that alone must not fail the suite.
"""

from __future__ import annotations

import re

import pytest

from siamese_search.server.generate_stubs import OUT, generate
from tests.conftest import ROOT

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


def test_the_contract_compiles_from_proto_alone(tmp_path):
    """`proto/` is self-contained (google/api vendored): protoc with `-I proto` and
    nothing else (protoc's own well-known types aside) compiles the service, as an
    independent client's toolchain would (grpcurl -proto, buf, @grpc/proto-loader)."""
    import subprocess
    import sys

    from siamese_search.server.generate_stubs import PROTO, PROTO_ROOT

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"--descriptor_set_out={tmp_path / 'out.desc'}",
            "--include_imports",
            str(PROTO),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    from google.protobuf import descriptor_pb2

    files = descriptor_pb2.FileDescriptorSet.FromString((tmp_path / "out.desc").read_bytes())
    names = {f.name for f in files.file}
    assert {"google/api/annotations.proto", "google/api/http.proto"} <= names


def test_the_vendored_google_protos_are_unchanged_copies():
    from siamese_search.server.generate_stubs import PROTO_ROOT, VENDORED, installed_google_proto

    for name in VENDORED:
        assert (PROTO_ROOT / name).read_bytes() == installed_google_proto(name).read_bytes(), (
            f"proto/{name} differs from googleapis-common-protos' copy: copy it again"
        )
    assert "Apache License" in (PROTO_ROOT / "google" / "LICENSE").read_text()


@pytest.mark.slow
def test_a_node_client_built_from_proto_alone_calls_the_server(
    tmp_path, trained_model, sample_train
):
    """@grpc/proto-loader with includeDirs ['proto'] and nothing else: the contract
    compiles outside Python (it did not once the REST annotations were added)."""
    import json
    import os
    import shutil
    import subprocess

    from siamese_search.client import SearchClient
    from siamese_search.core.model_artifact import load_model
    from siamese_search.core.tables import Columns
    from siamese_search.indexer.build import BuildOptions, build_index
    from siamese_search.server.app import SearchServer
    from siamese_search.server.config import ServerConfig

    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("NODE.JS IS NOT INSTALLED: the Node client test did not run")
    modules = tmp_path / "node"
    modules.mkdir()
    install = subprocess.run(
        ["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(modules)]
        + ["@grpc/grpc-js@1", "@grpc/proto-loader@0.8"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    index = tmp_path / "index"
    columns = Columns(text="text", label="class")
    options = BuildOptions(show_progress=False)
    build_index(index, load_model(trained_model), sample_train, columns, options)
    server = SearchServer(ServerConfig(index_dir=index, port=0)).start()
    try:
        target = f"127.0.0.1:{server.port}"
        run = subprocess.run(
            ["node", str(ROOT / "tests" / "node_client.js"), target],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "NODE_PATH": str(modules / "node_modules")},
        )
        assert run.returncode == 0, run.stderr[-2000:]
        answer = json.loads(run.stdout.strip().splitlines()[-1])
        with SearchClient(target) as client:
            expected = [n.id for n in client.search("Fix crash when saving a file", k=3).neighbors]
        assert answer == {"count": "100", "neighbors": expected}
    finally:
        server.stop(0)
