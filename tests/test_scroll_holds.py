"""A scroll's version held from pruning (server/scroll_holds.py): until its keep-alive
lapses after the last page, and never more than MAX_HELD versions at once."""

from __future__ import annotations

import pytest

from siamese_search.core.model_artifact import load_model
from siamese_search.core.tables import Columns
from siamese_search.indexer import layout
from siamese_search.indexer.build import BuildOptions, apply_changes, build_index
from siamese_search.indexer.changes import Change
from siamese_search.indexer.store import DirectorySource
from siamese_search.server.scroll_holds import ScrollHolds

QUIET = BuildOptions(show_progress=False)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def index_with_versions(tmp_path, trained_model, sample_train):
    """An index of 4 versions: 000001, then one per write (the index keeps 3)."""
    model = load_model(trained_model)
    index_dir = tmp_path / "index"
    build_index(index_dir, model, sample_train, Columns(text="text", label="class"), QUIET)
    return index_dir, model


def _write(index_dir, model, n: int) -> None:
    for i in range(n):
        change = Change("upsert", (f"w{i}",), (f"Written text {i}",), ("1",))
        apply_changes(index_dir, model, [change], QUIET)


def test_a_held_version_outlives_writes_until_its_keep_alive_lapses(index_with_versions):
    index_dir, model = index_with_versions
    clock = Clock()
    holds = ScrollHolds(keep_alive=60, clock=clock)
    source = DirectorySource(index_dir)
    holds.keep(source, "000001")
    _write(index_dir, model, 4)
    assert "000001" in layout.list_versions(index_dir)  # pruning left it alone
    clock.now = 59.0
    holds.keep(source, "000001")  # another page: held 60 s from now
    clock.now = 100.0
    assert holds.held() == [(source, "000001")]
    clock.now = 120.0
    assert holds.held() == []  # lapsed and let go
    _write(index_dir, model, 1)
    assert "000001" not in layout.list_versions(index_dir)  # the next write prunes it
    holds.keep(source, "000001")  # gone: nothing to hold, the next page says NOT_FOUND
    assert holds.held() == []


def test_at_most_max_held_versions_are_held(index_with_versions):
    index_dir, model = index_with_versions
    _write(index_dir, model, 2)
    clock = Clock()
    holds = ScrollHolds(keep_alive=60, max_held=2, clock=clock)
    source = DirectorySource(index_dir)
    for name in ("000001", "000002", "000003"):
        holds.keep(source, name)
        clock.now += 1
    assert holds.held() == [(source, "000002"), (source, "000003")]  # the first lapsing went
    assert not layout.is_held(layout.version_dir(index_dir, "000001"))
    holds.close()
    assert holds.held() == []
    assert not layout.is_held(layout.version_dir(index_dir, "000003"))
