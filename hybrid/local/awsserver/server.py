"""Entry point of the emulator subprocess: ``python -m hybrid.local.awsserver.server --port-file PATH``.

Applies the SQS and server fixes and the machine image actions (``image_fixes``: the state folder is the port
file's folder's parent), loads the services the toolkit calls, serves moto on 127.0.0.1 on a free port
(or ``--port``), writes the port to the port file once it is listening, and stops cleanly on SIGTERM or SIGINT.
Once the port file exists, no first call of a service stalls the others (``server_fixes.preload_services``), and
the loaded services are frozen out of the garbage collector (``server_fixes.freeze_heap``).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path

from hybrid.core.files import write_atomically
from hybrid.core.logs import TEXT_FORMAT
from hybrid.local.awsserver import image_fixes, server_fixes, sqs_fixes, wakeup

log = logging.getLogger("hybrid.local.awsserver")
SERVICES = ("ec2", "s3", "sqs", "iam", "sts")  # what the toolkit calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one")
    parser.add_argument("--port-file", required=True, help="where to write the port once listening")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=TEXT_FORMAT)
    os.environ.setdefault("MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR", "false")
    sqs_fixes.apply()
    server_fixes.apply()
    emulator_folder = Path(args.port_file).resolve().parent  # <state_dir>/emulator/
    wakeup.apply(emulator_folder)  # its instance runner listens
    image_fixes.apply(emulator_folder.parent)  # before serving: server fix 5 remembers the actions per class
    server = server_fixes.serve("127.0.0.1", args.port, preload=SERVICES)
    server_fixes.freeze_heap()  # the loaded services stay; no full collection walks them again
    threading.Thread(target=server.serve_forever, name="moto-server", daemon=True).start()
    port = server.server_address[1]
    image_fixes.listening(port)
    write_atomically(Path(args.port_file), str(port).encode())
    log.info("moto %s with SQS and server fixes listening on 127.0.0.1:%s (pid %s)", _moto_version(), port,
             os.getpid())
    _wait_for_signal()
    log.info("stopping")
    server.shutdown()
    return 0


def _wait_for_signal() -> None:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


def _moto_version() -> str:
    import moto

    return moto.__version__


if __name__ == "__main__":
    raise SystemExit(main())
