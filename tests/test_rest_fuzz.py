"""Schemathesis against the running gateway's own `/openapi.json`: every default check
(no server error, documented status codes and content types, responses that match
their schemas, schema-valid requests accepted and schema-violating ones refused,
405 with an Allow header for undeclared methods). A bounded, seeded run: the same
examples every time.

The server runs with character limits under which its token limits cannot be reached
(a character is at most 4 SentencePiece tokens), since no JSON Schema can state a
token count; the document it serves states every other rule (server/openapi.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from siamese_search.server.config import Limits
from tests.test_rest_gateway import _start, index_dir  # noqa: F401 - the fixture

FUZZ_LIMITS = Limits(
    max_k=20,
    max_batch=8,
    max_text_chars=100,
    max_text_tokens=512,
    max_call_chars=800,
    max_call_tokens=4096,
)

pytestmark = pytest.mark.slow  # ~60 s of fuzzing: CI (make test-all) runs it


def test_schemathesis_finds_nothing(index_dir, tmp_path):  # noqa: F811 - the fixture
    writable = tmp_path / "index"
    shutil.copytree(index_dir, writable)  # the fuzzer writes and deletes examples
    running = _start(writable, limits=FUZZ_LIMITS)
    try:
        url = f"http://127.0.0.1:{running.http_port}/openapi.json"
        command = [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            url,
            "--max-examples=25",
            "--seed=1",
            "--generation-deterministic",
            "--request-timeout=30",
            "--continue-on-failure",
            "--no-color",
        ]
        run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    finally:
        running.stop(0)
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-2000:]
