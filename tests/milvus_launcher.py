"""Runs a Milvus standalone server from the `milvus` PyPI package, in its own virtualenv.

    <milvus venv>/bin/python tests/milvus_launcher.py DATA_DIR

Prints one JSON line {"port": ..., "pid": ...} once Milvus answers its health check,
then waits. SIGTERM or SIGINT stop Milvus: SIGTERM, then a kill if it has not exited
after STOP_WAIT_SECONDS. Started by tests/milvus_service.py; this file imports only the
`milvus` package, not our code.
"""

import json
import signal
import sys
import threading

from milvus import MilvusServer, MilvusServerConfig

COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")
#: Milvus 2.3.5's own stop hangs once it has served collections (its query node keeps
#: retrying the coordinators it has just stopped: 3 stops of 3 here were killed at 60 s),
#: so it gets this long and is then killed. A kill leaves its etcd session for its TTL
#: (30 s): a data directory reused sooner than that trips over it; tests use fresh ones.
STOP_WAIT_SECONDS = 5


def main() -> int:
    config = MilvusServerConfig(data_dir=sys.argv[1])
    for component in COMPONENTS:  # the address each component tells the others
        config.set(f"{component}.ip", "127.0.0.1")
    server = MilvusServer(config, wait_for_started=False)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    server.start()
    process = server.server_proc
    try:
        server.wait_started(timeout=180_000)
        print(json.dumps({"port": server.listen_port, "pid": process.pid}), flush=True)
        while not stopping.wait(0.5):
            if process.poll() is not None:
                print(f"milvus exited with {process.returncode}", file=sys.stderr, flush=True)
                return 1
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_WAIT_SECONDS)
            except Exception:
                process.kill()
                process.wait()
        server.server_proc = None  # already stopped; keep its stop() from killing again
    return 0


if __name__ == "__main__":
    sys.exit(main())
