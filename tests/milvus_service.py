"""A real Milvus server for tests, benchmarks and trying the Milvus backend locally.

    python tests/milvus_service.py [--data DIR]      # runs until Ctrl-C, prints its URI

`milvus==2.3.5` (the PyPI package that ships the Milvus standalone binary) goes into
its own cached virtualenv: it pins setuptools and marshmallow versions that must not
touch the project's environment. Its components advertise 127.0.0.1; Milvus 2.3.5's
gRPC servers still bind every interface (it has no listen-address setting), so run it
only on a machine whose ports are not reachable from outside, as in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

MILVUS_VERSION = "2.3.5"
REQUIREMENTS = (f"milvus=={MILVUS_VERSION}", "setuptools<81", "marshmallow<4")
LAUNCHER = Path(__file__).with_name("milvus_launcher.py")
START_SECONDS = 240


def venv_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(
        os.environ.get("SIAMESE_MILVUS_VENV")
        or cache / "siamese-search" / f"milvus-{MILVUS_VERSION}"
    )


def ensure_installed() -> Path:
    """The virtualenv's python, installing milvus into it the first time (~10 s)."""
    venv = venv_dir()
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.is_file():
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *REQUIREMENTS,
        ],
        check=True,
    )
    marker.write_text(" ".join(REQUIREMENTS) + "\n")
    return python


@dataclass
class MilvusService:
    process: subprocess.Popen  # the launcher
    port: int
    data_dir: Path
    pid: int  # Milvus's own process

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """SIGTERM to the launcher, which stops Milvus (and kills it if it hangs)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(90)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(data_dir: Path) -> MilvusService:
    """Install if needed, start, and wait until Milvus answers (RuntimeError if not)."""
    python = ensure_installed()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(data_dir / "launcher.log", "w")  # noqa: SIM115 - lives with the process
    process = subprocess.Popen(
        [str(python), str(LAUNCHER), str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        start_new_session=True,  # a Ctrl-C in a test run reaches it through stop() only
    )
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(START_SECONDS)
    if not line or not line[0].strip():
        process.kill()
        process.wait()
        raise RuntimeError(
            f"Milvus did not start within {START_SECONDS} s; see {data_dir / 'launcher.log'} "
            f"and {data_dir / 'logs'}"
        )
    info = json.loads(line[0])
    return MilvusService(process, int(info["port"]), data_dir, int(info["pid"]))


def is_running(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


@dataclass
class ServiceCommand:
    """`python tests/milvus_service.py` running as a child, as a user or a service
    manager runs it; `stop` ends it with SIGTERM, as `kill` or a CI step's timeout does."""

    process: subprocess.Popen
    uri: str
    pid: int  # Milvus's own process

    def stop(self, wait: float = 120) -> bool:
        """SIGTERM to the command; True when Milvus itself stopped within `wait` s.
        (Milvus is killed either way, so a failed check leaves nothing running.)"""
        self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and is_running(self.pid):
            time.sleep(0.5)
        stopped = not is_running(self.pid)
        if not stopped:
            os.kill(self.pid, signal.SIGKILL)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return stopped


def run_command(data_dir: Path) -> ServiceCommand:
    """Start `python tests/milvus_service.py --data DATA_DIR` and wait until it reports
    Milvus up (RuntimeError with its output if it does not)."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--data", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[str] = []

    def read_until_up() -> None:
        for line in process.stdout:
            seen.append(line)
            if line.startswith("Milvus is up at "):
                return

    reader = threading.Thread(target=read_until_up, daemon=True)
    reader.start()
    reader.join(START_SECONDS + 60)
    up = seen and seen[-1].startswith("Milvus is up at ")
    if not up:
        process.kill()
        process.wait()
        raise RuntimeError("".join(seen)[-2000:] or "Milvus did not start (no output)")
    words = seen[-1].split()  # Milvus is up at URI (pid N) after S s; ...
    return ServiceCommand(process, words[4], int(words[6].rstrip(")")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="data directory (default: a temporary one)")
    args = parser.parse_args()
    data = args.data or Path(tempfile.mkdtemp(prefix="milvus-"))
    # SIGTERM (a service manager, `kill`, a CI step's timeout) stops Milvus as Ctrl-C
    # does: it used to end this process and leave Milvus running (its own session)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"starting Milvus {MILVUS_VERSION} (data in {data}) ...", flush=True)
    started = time.monotonic()
    service = start(data)
    print(
        f"Milvus is up at {service.uri} (pid {service.pid}) after "
        f"{time.monotonic() - started:.0f} s; Ctrl-C or SIGTERM stops it",
        flush=True,
    )
    try:
        service.process.wait()
    except KeyboardInterrupt:
        print("stopping Milvus ...")
    finally:
        service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
