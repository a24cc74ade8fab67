"""The web tier as users meet it: gunicorn started by `hybrid web`, multipart posts over HTTP, real workers on
local instances, the local AWS server underneath."""
from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.integration.rig import photo_bytes

pytestmark = pytest.mark.timeout(400)
PHOTOS = ("coffee", "chelsea", "rocket", "astronaut")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WebServer:
    """`hybrid web` as a subprocess on a free loopback port."""

    def __init__(self, rig, state_dir, log_path, **overrides: str) -> None:
        self.rig, self.state_dir, self.log_path = rig, state_dir, log_path
        self.url = f"http://127.0.0.1:{free_port()}"
        self.args = [sys.executable, "-m", "hybrid", "--state-dir", str(state_dir), "--stack", rig.settings.stack,
                     "--set", f"web.bind={self.url[7:]}"]
        for key, value in overrides.items():
            self.args += ["--set", f"{key.replace('__', '.')}={value}"]
        self.process: subprocess.Popen | None = None
        self.command = ["web"]

    def start(self) -> "WebServer":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.args + self.command, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, "AWS_EC2_METADATA_DISABLED": "true"})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if requests.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return self
            except requests.RequestException:
                time.sleep(0.2)
        raise AssertionError(f"web tier did not come up; log:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def post(self, name: str, data: bytes, field: str = "inputFile", json: bool = False, timeout: float = 120):
        headers = {"Accept": "application/json"} if json else {}
        return requests.post(self.url, files={field: (name, io.BytesIO(data), "image/jpeg")}, headers=headers,
                             timeout=timeout)


@pytest.fixture
def web(stack, state_dir, tmp_path):
    servers = []

    def make(rig=None, **overrides):
        rig = rig or stack(worker__idle_timeout="120")
        servers.append(WebServer(rig, state_dir, tmp_path / f"web-{len(servers)}.log", **overrides))
        return servers[-1].start()
    yield make
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def images_and_labels():
    """100 distinct JPEGs (4 photos, 25 sizes each) and the label the model itself gives each."""
    from app_tier.classifier import load_classifier

    images = {f"{name}_{i:02d}": photo_bytes(name, (300 + 7 * i, 240 + 5 * i)) for name in PHOTOS for i in range(25)}
    classifier = load_classifier("auto", 1)
    names = list(images)
    labels = [p.label for p in classifier.classify([images[n] for n in names])]
    return images, dict(zip(names, labels))


def post_all(server, images, concurrency=100, json=False):
    with ThreadPoolExecutor(concurrency) as pool:
        futures = {name: pool.submit(server.post, f"{name}.jpg", data, json=json) for name, data in images.items()}
        return {name: future.result() for name, future in futures.items()}


def test_100_concurrent_posts_are_answered_right_and_then_from_the_cache_after_a_restart(
        web, stack, images_and_labels):
    images, labels = images_and_labels
    rig = stack(worker__idle_timeout="120")
    rig.launch(4)
    server = web(rig)
    answers = post_all(server, images)
    assert {n: r.status_code for n, r in answers.items()} == {n: 200 for n in images}
    assert {n: r.text for n, r in answers.items()} == {n: f"{n}:{labels[n]}" for n in images}
    assert all(r.headers["Content-Type"].startswith("text/plain") for r in answers.values())

    server.stop()
    rig.aws.terminate_instances()
    assert rig.depth(rig.requests) == (0, 0)
    server = web(rig)
    again = post_all(server, images, json=True)
    assert {n: (r.json()["label"], r.json()["cached"]) for n, r in again.items()} == \
        {n: (labels[n], True) for n in images}
    assert rig.depth(rig.requests) == (0, 0), "cache hits touch no queue"
    status = requests.get(f"{server.url}/status", timeout=5).json()
    assert status["cache"]["entries"] >= 100 and status["cache"]["hits"] == 100


def test_identical_images_in_flight_share_one_request(web, stack):
    rig = stack(worker__idle_timeout="120")
    server = web(rig)
    data = photo_bytes("coffee", (333, 222))
    with ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(server.post, f"copy{i}.jpg", data, json=True) for i in range(10)]
        deadline = time.monotonic() + 20
        while rig.depth(rig.requests)[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)
        assert rig.depth(rig.requests) == (1, 0), "one request message for ten identical uploads"
        rig.launch(1)
        answers = [f.result() for f in futures]
    assert {a.json()["label"] for a in answers} == {answers[0].json()["label"]}
    assert sorted(a.json()["name"] for a in answers) == sorted(f"copy{i}" for i in range(10))
    assert sum(a.json()["shared"] for a in answers) == 9


def test_no_answer_in_time_is_a_504_and_the_late_answer_is_still_cached(web, stack):
    rig = stack(worker__idle_timeout="120")
    server = web(rig, web__request_timeout="1.5")
    data = photo_bytes("rocket", (320, 260))
    late = server.post("rocket.jpg", data)
    assert late.status_code == 504 and "no answer from the app tier within 1.5 s" in late.text
    rig.launch(1)
    deadline = time.monotonic() + 90
    while requests.get(f"{server.url}/status", timeout=5).json()["cache"]["entries"] == 0:
        assert time.monotonic() < deadline, "the late reply never reached the cache"
        time.sleep(0.3)
    again = server.post("rocket.jpg", data, json=True)
    assert again.status_code == 200 and again.json()["cached"] is True


def test_bad_input_gets_a_clear_4xx_and_enqueues_nothing(web, stack):
    rig = stack(worker__idle_timeout="120")
    server = web(rig, web__max_upload_bytes="200000")
    photo = photo_bytes("coffee")
    cases = {
        "no file": requests.post(server.url, data={"note": "hello"}, timeout=10),
        "empty": server.post("empty.jpg", b""),
        "not an image": server.post("notes.jpg", b"%PDF-1.4 definitely not pixels"),
        "truncated": server.post("cut.jpg", photo[: len(photo) // 3]),
        "too big": server.post("huge.jpg", photo_bytes("astronaut", (2000, 2000))),
        "two files": requests.post(server.url, files=[("inputFile", ("a.jpg", photo)), ("myfile", ("b.jpg", photo))],
                                   timeout=10),
    }
    statuses = {case: response.status_code for case, response in cases.items()}
    assert statuses == {"no file": 400, "empty": 400, "not an image": 415, "truncated": 400, "too big": 413,
                        "two files": 400}
    assert all(r.text.startswith("error: ") and len(r.text) > 20 for r in cases.values())
    assert rig.depth(rig.requests) == (0, 0)
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
    rig.launch(1)
    for filename in ("../../etc/passwd.jpg", "a\x01b\nc.jpg", "x" * 1000 + ".jpg", "..\\..\\boot.jpg"):
        answer = server.post(filename, photo)
        name = answer.text.split(":")[0]
        assert answer.status_code == 200 and "/" not in name and "\\" not in name and ".." not in name
        assert all(ch.isprintable() for ch in name) and len(name) <= 120


def test_operations_endpoints(web, stack):
    server = web(stack(worker__idle_timeout="120"))
    assert requests.get(f"{server.url}/healthz", timeout=5).text == "ok\n"
    status = requests.get(f"{server.url}/status", timeout=5).json()
    assert set(status) >= {"queues", "fleet", "cache", "in_flight"}
    assert status["queues"]["requests"] == {"visible": 0, "in_flight": 0}
    metrics = requests.get(f"{server.url}/metrics", timeout=5).text
    assert "# TYPE hybrid_web_request_seconds histogram" in metrics and "hybrid_web_cache_entries" in metrics
    assert "curl -F inputFile=@" in requests.get(server.url, timeout=5).text
