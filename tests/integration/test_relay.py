"""The relay that offers a server of this machine inside a network namespace (``hybrid.local.relay``), and sockets
made in a namespace by one thread (``hybrid.core.netns``), in a throwaway namespace this test makes and removes.

The namespace has only its own loopback: an HTTP server on this machine's 127.0.0.1 is reachable from inside it only
through the relay, which listens on the namespace's 127.0.0.1. Needs root and ``ip``; skipped otherwise.
"""
from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from hybrid.core import netns
from hybrid.core.errors import ConfigError
from hybrid.core.wait import Poll, wait_for


@pytest.fixture
def namespace():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("making a network namespace needs root and iproute2's ip")
    name = f"hybrid-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


@pytest.fixture
def http_server():
    """An HTTP server on this machine's loopback answering ``hello from the root namespace``."""
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"hello from the root namespace"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def get_inside(namespace: str, url: str) -> str:
    with netns.entered(namespace), urllib.request.urlopen(url, timeout=5) as reply:
        return reply.read().decode()


def test_the_namespace_reaches_this_machine_only_through_the_relay(namespace, http_server, tmp_path):
    port = http_server
    with pytest.raises(urllib.error.URLError):  # the namespace's loopback is its own
        get_inside(namespace, f"http://127.0.0.1:{port}/")
    relay = subprocess.Popen([sys.executable, "-m", "hybrid.local.relay", "--namespace", namespace, "--listen",
                              f"127.0.0.1:{port}", "--to", f"127.0.0.1:{port}", "--state-dir", str(tmp_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert relay.stdout.readline().strip() == "ready"

        def answers() -> Poll[str]:
            try:
                return Poll(get_inside(namespace, f"http://127.0.0.1:{port}/"), done=True)
            except OSError as exc:
                return Poll("", done=False, state=str(exc))

        assert wait_for("the relay to answer", answers, timeout=10, interval=0.1) == "hello from the root namespace"
        # The calling thread is back in its own namespace: the same address here is the server itself.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as reply:
            assert reply.status == 200
        # Many at once (the web tier's threads share it).
        with ThreadPoolExecutor(16) as pool:
            assert set(pool.map(lambda _: get_inside(namespace, f"http://127.0.0.1:{port}/"), range(64))) == {
                "hello from the root namespace"}
    finally:
        relay.terminate()
        relay.wait(10)
    assert relay.returncode == 0


def test_a_missing_namespace_is_a_clear_error():
    with pytest.raises(ConfigError, match="does not exist"):
        netns.connect("127.0.0.1", 9, 1.0, "hybrid-no-such-namespace")


def test_a_thread_that_entered_for_good_stays_there_and_others_do_not(namespace, http_server):
    port = http_server
    seen = {}

    def inside() -> None:
        netns.enter_for_good(namespace)
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            seen["inside"] = "reached"
        except OSError:
            seen["inside"] = "unreachable"

    thread = threading.Thread(target=inside)
    thread.start()
    thread.join()
    assert seen["inside"] == "unreachable"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as reply:
        assert reply.status == 200
