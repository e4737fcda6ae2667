"""The docs a newcomer walks: every relative link in README.md and docs/ points at a
file that exists (and, with an #anchor, at a heading in it); the README stays short."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import ROOT

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {_slug(m[1]) for m in re.finditer(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def test_every_relative_link_resolves():
    broken = []
    for page in _pages():
        text = FENCE.sub("", page.read_text(encoding="utf-8"))
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+://|^mailto:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move details to docs/"
    text = "\n".join(lines)
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in text, f"README.md does not link docs/{page.name}"


def test_the_readmes_python_example_runs(trained_model, sample_train, tmp_path):
    """The front page's client example, run as written against a real server."""
    import re as regex

    from siamese_search.core.model_artifact import load_model
    from siamese_search.core.tables import Columns
    from siamese_search.indexer.build import BuildOptions, build_index
    from siamese_search.server.app import SearchServer
    from siamese_search.server.config import ServerConfig

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    (example,) = regex.findall(r"```python\n(.*?)```", text, regex.DOTALL)
    index = tmp_path / "index"
    columns = Columns(text="text", label="class")
    build_index(
        index, load_model(trained_model), sample_train, columns, BuildOptions(show_progress=False)
    )
    server = SearchServer(ServerConfig(index_dir=index, port=0)).start()
    try:
        exec(example.replace("127.0.0.1:50051", f"127.0.0.1:{server.port}"), {})  # noqa: S102
    finally:
        server.stop(0)
