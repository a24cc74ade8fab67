"""Slow clients: 1,000 connections that send a byte a second (headers or body) while real users post.

Without a buffering front, gunicorn's 128 threads each read one such connection and 129 of them stopped the web
tier answering anyone, /healthz included. With nginx in front they cost nginx a connection each, never a gunicorn
thread: /healthz and a cached upload keep answering in milliseconds.
"""
from __future__ import annotations

import io
import resource
import selectors
import socket
import statistics
import threading
import time

import pytest
import requests

from tests.integration.rig import photo_bytes
from tests.integration.test_web_tier import WebServer

pytestmark = pytest.mark.emulator
ATTACKERS = 1000
BODY_TRICKLERS = 300  # of them: whole headers, then a body byte a second (these count against the per-client cap)
ATTACKER_ADDRESS = "127.0.0.2"  # another loopback address: the per-client cap is by address
MEASURE_SECONDS = 15.0
P99_LIMIT_MS = 100.0


class Trickler:
    """``count`` connections from ``source`` that each send one byte a second, reopened when the server drops them."""

    def __init__(self, port: int, count: int, body_count: int, source: str) -> None:
        self.port, self.count, self.body_count, self.source = port, count, body_count, source
        self.selector = selectors.DefaultSelector()
        self.sockets: list[socket.socket] = []
        self.dropped = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, with_body: bool) -> socket.socket:
        sock = socket.socket()
        sock.bind((self.source, 0))
        sock.settimeout(5)
        sock.connect(("127.0.0.1", self.port))
        if with_body:  # whole headers: nginx now waits for a 1 MB body
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                         b"Content-Length: 1000000\r\n\r\n")
        else:
            sock.sendall(b"POST / HTTP/1.1\r\n")
        sock.setblocking(False)
        return sock

    def start(self) -> "Trickler":
        for i in range(self.count):
            self.sockets.append(self._open(with_body=i < self.body_count))
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            for i, sock in enumerate(self.sockets):
                try:
                    sock.send(b"X" if i < self.body_count else b"x")
                except OSError:  # dropped by the server (its client timeout): come back, as an attacker would
                    self.dropped += 1
                    sock.close()
                    try:
                        self.sockets[i] = self._open(with_body=i < self.body_count)
                    except OSError:
                        pass

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)
        for sock in self.sockets:
            sock.close()


def timed_ms(call) -> float:
    started = time.perf_counter()
    response = call()
    assert response.status_code == 200, response.text
    return (time.perf_counter() - started) * 1000


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


@pytest.fixture
def more_files():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_1000_slow_connections_leave_healthz_and_cached_uploads_answering_in_milliseconds(
        stack, state_dir, tmp_path, more_files):
    rig = stack(worker__idle_timeout="60")
    rig.launch(1)
    server = WebServer(rig, state_dir, tmp_path / "web.log", web__client_timeout="5").start()
    try:
        image = photo_bytes("rocket", (320, 240))
        upload = lambda: requests.post(server.url, files={"inputFile": ("rocket.jpg", io.BytesIO(image))},  # noqa
                                       timeout=60)
        first = upload()
        assert first.status_code == 200 and first.text.startswith("rocket:")
        port = int(server.url.rpartition(":")[2])
        attack = Trickler(port, ATTACKERS, BODY_TRICKLERS, ATTACKER_ADDRESS).start()
        try:
            health, cached = [], []
            with requests.Session() as session:
                deadline = time.monotonic() + MEASURE_SECONDS
                while time.monotonic() < deadline:
                    health.append(timed_ms(lambda: session.get(f"{server.url}/healthz", timeout=5)))
                    cached.append(timed_ms(lambda: session.post(
                        server.url, files={"inputFile": ("rocket.jpg", io.BytesIO(image))}, timeout=5)))
            over_cap = _status_of_one_more_body_request(port)
        finally:
            attack.stop()
    finally:
        server.stop()
    print(f"\n{ATTACKERS} slow connections ({BODY_TRICKLERS} trickling a body), {len(health)} rounds in "
          f"{MEASURE_SECONDS:g} s: /healthz p50 {statistics.median(health):.1f} ms p99 {p99(health):.1f} ms, "
          f"cached upload p50 {statistics.median(cached):.1f} ms p99 {p99(cached):.1f} ms; "
          f"{attack.dropped} slow connections dropped by the client timeout; one more from the same address: "
          f"{over_cap}")
    assert len(health) >= 50
    assert p99(health) < P99_LIMIT_MS and p99(cached) < P99_LIMIT_MS
    assert attack.dropped > 0, "the client timeout drops connections that trickle"
    assert over_cap == 429, "past web.connections_per_client requests in progress, an address gets 429"


def _status_of_one_more_body_request(port: int) -> int:
    """One more whole request from the attackers' address: over the per-client cap (200 bodies in progress) it is
    answered 429 at once."""
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(ATTACKER_ADDRESS, 0)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return int(sock.recv(64).split()[1])
