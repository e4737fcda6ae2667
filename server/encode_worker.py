"""An encoding worker process (see server.encode_processes): `python -m
siamese_search.server.encode_worker FD THREADS`, FD its end of the server's socket."""

from __future__ import annotations

import signal
import sys
from collections import OrderedDict
from multiprocessing.connection import Connection

#: models kept loaded, the least recently used dropped first: every collection's
#: serving model and the ones swaps bring (models share equal encoders: load_encoder)
MODELS_KEPT = 16


def serve(connection: Connection, threads: int) -> None:
    from siamese_search.core.model_artifact import SiameseModel, load_model

    models: OrderedDict[str, SiameseModel] = OrderedDict()
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):  # the server has gone
            return
        if request is None:
            return
        directory, fingerprint, texts = request
        reply: tuple[str, object]
        try:
            model = models.get(directory)
            if model is None or model.fingerprint != fingerprint:
                model = load_model(directory, threads=threads)
                if model.fingerprint != fingerprint:
                    raise RuntimeError(
                        f"the model files in {directory} changed after the server loaded "
                        "them; restart the server or reload a version built with this model"
                    )
                models[directory] = model
                while len(models) > MODELS_KEPT:
                    models.popitem(last=False)
            models.move_to_end(directory)
            reply = ("ok", model.embed(texts))
        except Exception as error:  # the server's batch gets the error, not a dead worker
            reply = ("error", error)
        try:
            connection.send(reply)
        except (OSError, ValueError):
            return
        except Exception:  # an exception that does not pickle
            connection.send(("error", RuntimeError(str(reply[1]))))


def main() -> None:
    # Ctrl-C in a terminal reaches the whole foreground group: the server decides
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fd, threads = int(sys.argv[1]), int(sys.argv[2])
    from siamese_search.core.native_threads import limit_native_threads

    limit_native_threads(threads)  # before numpy starts its BLAS threads
    serve(Connection(fd), threads)


if __name__ == "__main__":
    main()
