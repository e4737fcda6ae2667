"""The built wheel installs one namespace, `siamese_search`, and nothing generic.

Installs the wheel (no dependencies) into a fresh virtual environment beside a user's
own top-level `server`, `trainer` and `indexer` modules, and imports both sides.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

# modules that import only the standard library and numpy-free kernel parts, so they load
# in a venv without the project's dependencies
STDLIB_ONLY = (
    "siamese_search",
    "siamese_search.core",
    "siamese_search.core.errors",
    "siamese_search.core.atomic",
    "siamese_search.core.provenance",
    "siamese_search.core.cli_help",
    "siamese_search.trainer",
    "siamese_search.indexer",
    "siamese_search.server",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
        + ["--quiet", "--wheel-dir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("siamese_search-*.whl")
    return built


def test_wheel_holds_only_the_namespace_and_every_source_file(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {
        name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")
    }
    assert top_level == {"siamese_search"}
    packaged = {name for name in names if name.endswith(".py")}
    for folder, prefix in (
        ("siamese_search", "siamese_search"),
        ("trainer", "siamese_search/trainer"),
        ("indexer", "siamese_search/indexer"),
        ("server", "siamese_search/server"),
    ):
        for source in (ROOT / folder).rglob("*.py"):
            inside = f"{prefix}/{source.relative_to(ROOT / folder).as_posix()}"
            assert inside in packaged, f"{source} is not in the wheel: list its package"


def test_installs_beside_a_users_own_server_module(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps"]
        + ["--quiet", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )
    user_code = tmp_path / "user_code"
    user_code.mkdir()
    for name in ("server", "trainer", "indexer"):
        (user_code / f"{name}.py").write_text(f'WHO = "the user\'s own {name}"\n')
    imports = "; ".join(f"import {module}" for module in STDLIB_ONLY)
    script = (
        f"{imports}; import server, trainer, indexer; "
        "print(server.WHO, trainer.WHO, indexer.WHO); "
        "print(siamese_search.server.__file__)"
    )
    result = subprocess.run(
        [str(python), "-c", script], cwd=user_code, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert first == "the user's own server the user's own trainer the user's own indexer"
    assert "site-packages/siamese_search/server/__init__.py" in second
