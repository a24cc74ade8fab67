"""The web tier's front as clients meet it: nginx's own answers are the web tier's plain-text errors, /status is the
machine's own, and nginx lives and dies with `hybrid web`."""
from __future__ import annotations

import signal
import socket
import time

import pytest
import requests

from hybrid.core import procs
from tests.integration.test_web_tier import WebServer

pytestmark = pytest.mark.emulator


@pytest.fixture
def server(stack, state_dir, tmp_path):
    made = WebServer(stack(), state_dir, tmp_path / "web.log", web__max_upload_bytes="100000").start()
    yield made
    made.stop()


def raw_get(url: str, path: str, source: str) -> bytes:
    host, port = url[7:].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5, source_address=(source, 0)) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return b"".join(iter(lambda: sock.recv(4096), b""))


def test_status_and_metrics_are_refused_from_any_address_but_the_machine_s_own(server):
    for path in ("/status", "/metrics"):
        assert raw_get(server.url, path, "127.0.0.1").startswith(b"HTTP/1.1 200")
    for path in ("/status", "/metrics", "/status/", "//status", "/%73tatus", "/metrics?x=1"):  # no way around it
        refused = raw_get(server.url, path, "127.0.0.2")
        assert refused.startswith(b"HTTP/1.1 403"), refused[:200]
        assert refused.endswith(b"error: this path answers only on the web tier's own machine (127.0.0.1)\n")
    assert raw_get(server.url, "/healthz", "127.0.0.2").startswith(b"HTTP/1.1 200")


def test_a_body_over_the_limit_is_refused_by_nginx_with_the_web_tier_s_message(server):
    reply = requests.post(server.url, files={"inputFile": ("big.jpg", b"x" * 300_000)}, timeout=10)
    assert reply.status_code == 413
    assert reply.text == "error: the request body is larger than the 100000-byte limit\n"


def test_nginx_lives_and_dies_with_hybrid_web(server, state_dir):
    fronts = [pid for pid in procs.pids() if (procs.cmdline(pid) or [""])[0].startswith("nginx: master")
              and str(state_dir.resolve()) in " ".join(procs.cmdline(pid) or [])]
    assert len(fronts) >= 1
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(procs.is_alive(pid) for pid in fronts):
        time.sleep(0.1)
    assert not any(procs.is_alive(pid) for pid in fronts), "nginx outlived the web tier that started it"
