"""What killed atomic_directory writers leave, and who removes it: the next writer of
the same target, or a sweep (a collections server at start), never a living writer's
staging directory, and never a replaced target whose successor is not in place."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from siamese_search.core import atomic
from siamese_search.core.atomic import TMP_PREFIX, atomic_directory, sweep_leftovers
from tests.conftest import ROOT

#: a writer that makes its staging directory, says so, and waits to be killed
WRITER = """
import sys, time
from pathlib import Path
from siamese_search.core.atomic import atomic_directory
with atomic_directory(Path(sys.argv[1])) as staging:
    (staging / "half.bin").write_bytes(b"x" * 1000)
    print(staging.name, flush=True)
    time.sleep(600)
"""


def _writing(target) -> tuple[subprocess.Popen, str]:
    """A writer of `target` in another process, mid-block; the name of its staging."""
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def test_a_killed_writers_staging_goes_and_a_living_ones_stays(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "LEFTOVER_SECONDS", 0.0)  # every staging is old enough
    living, living_staging = _writing(tmp_path / "living")
    killed, killed_staging = _writing(tmp_path / "killed")
    try:
        assert living_staging.startswith(TMP_PREFIX + "living-")
        _kill(killed)
        assert sweep_leftovers(tmp_path) == [killed_staging]
        assert (tmp_path / living_staging / "half.bin").exists()  # its writer holds it
    finally:
        _kill(living)
    assert sweep_leftovers(tmp_path) == [living_staging]
    assert list(tmp_path.iterdir()) == []


def test_the_next_writer_of_a_target_removes_what_a_killed_one_left(tmp_path, monkeypatch):
    """Only the leftovers of its own target: another target's are left to their next
    writer (or a sweep of the whole directory)."""
    monkeypatch.setattr(atomic, "LEFTOVER_SECONDS", 0.0)
    for target in ("model", "other"):
        process, _ = _writing(tmp_path / target)
        _kill(process)
    with atomic_directory(tmp_path / "model") as staging:
        (staging / "whole.bin").write_bytes(b"y")
    staged, whole = sorted(entry.name for entry in tmp_path.iterdir())
    assert whole == "model" and staged.startswith(TMP_PREFIX + "other-")


def test_a_recent_unlocked_staging_directory_is_left_alone(tmp_path):
    """Made a moment ago, its writer may not have taken its lock yet."""
    (tmp_path / f"{TMP_PREFIX}fresh-abc").mkdir()
    assert sweep_leftovers(tmp_path) == []


@pytest.mark.parametrize("successor_in_place", [True, False])
def test_a_replaced_target_moved_aside_goes_only_once_its_successor_is_in_place(
    tmp_path, monkeypatch, successor_in_place
):
    """atomic_directory(overwrite=True) moves the old target into `.tmp-old-*`, renames
    the new one into place, then deletes the old one; killed between the two renames,
    the old one is all there is."""
    monkeypatch.setattr(atomic, "LEFTOVER_SECONDS", 0.0)
    retired = tmp_path / f"{atomic.RETIRED_PREFIX}xyz"
    (retired / "model").mkdir(parents=True)
    if successor_in_place:
        (tmp_path / "model").mkdir()
    assert sweep_leftovers(tmp_path) == ([retired.name] if successor_in_place else [])
    assert retired.exists() != successor_in_place
