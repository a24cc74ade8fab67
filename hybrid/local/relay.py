"""The local AWS server offered inside the OpenStack fixture's namespace: a TCP relay.

A server on the local OpenStack reaches nothing on this machine but what is offered inside the fixture's namespace
(``minicloud-ext``): its router's SNAT leads there and no further. The relay listens there, on the external
network's gateway address, and forwards each connection to the local AWS server on this machine's loopback. The
listening socket is made inside the namespace and the outgoing ones outside it (``hybrid.core.netns``), so nothing
is routed and the namespace keeps no route out.

Run as ``python -m hybrid.local.relay --namespace NS --listen IP:PORT --to 127.0.0.1:PORT --state-dir DIR``; the
state folder is on its command line so that ``hybrid local down`` finds it among the folder's processes.
"""
from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
from collections.abc import Sequence

from hybrid.core import netns

log = logging.getLogger(__name__)
BUFFER = 1 << 16


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def pump(source: socket.socket, sink: socket.socket) -> None:
    """Copies bytes until ``source`` closes, then half-closes ``sink`` so the other side sees the end."""
    try:
        while data := source.recv(BUFFER):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def serve_connection(client: socket.socket, target: tuple[str, int]) -> None:
    try:
        upstream = socket.create_connection(target, timeout=10)
    except OSError as exc:
        log.warning("cannot reach %s:%d: %s", *target, exc)
        client.close()
        return
    upstream.settimeout(None)
    back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
    back.start()
    pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def serve(server: socket.socket, target: tuple[str, int], stop: threading.Event) -> None:
    server.settimeout(0.5)
    while not stop.is_set():
        try:
            client, _ = server.accept()
        except TimeoutError:
            continue
        client.settimeout(None)
        threading.Thread(target=serve_connection, args=(client, target), daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybrid.local.relay", description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", required=True, help="network namespace to listen in")
    parser.add_argument("--listen", required=True, type=address, help="IP:PORT inside the namespace")
    parser.add_argument("--to", required=True, type=address, help="IP:PORT on this machine (loopback)")
    parser.add_argument("--state-dir", required=True, help="the local stack's state folder (names the relay)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s relay %(levelname)s %(message)s")
    server = netns.listen(*args.listen, namespace=args.namespace)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log.info("relaying %s:%d in namespace %s to %s:%d", *args.listen, args.namespace, *args.to)
    print("ready", flush=True)
    serve(server, args.to, stop)
    server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
