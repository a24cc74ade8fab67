"""`hybrid workload` against a real HTTP server on 127.0.0.1 started by the test: multipart posts over keep-alive
connections, retries on 503 and on a dropped connection, no retry on a 4xx or a 504, exit codes, the JSON report."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections import Counter
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from hybrid.cli.workload import workload

pytestmark = pytest.mark.timeout(120)
LABELS = {"good_a": "tabby", "good_b": "espresso", "good_c": "space shuttle", "wrong": "goldfish",
          "flaky": "tench", "dropped": "jellyfish", "rejected": "zebra", "gateway": "pizza"}


class FakeWebTier(ThreadingHTTPServer):
    """Answers "name:label" from LABELS, with scripted misbehaviour per image name:

    wrong     a wrong label                     flaky     503 twice, then the answer
    dropped   the first time: the connection closed with no answer, then the answer
    rejected  always 422                        gateway   always 504
    A post whose file is not in ``field`` gets 400."""

    daemon_threads = True

    def __init__(self, field: str = "inputFile") -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.field = field
        self.hits: Counter[str] = Counter()
        self.fields: Counter[str] = Counter()
        self.connections: set[tuple[str, int]] = set()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def record(self, name: str, field: str, client: tuple[str, int]) -> int:
        """Counts one post; returns how many posts of this name came so far, this one included."""
        with self.lock:
            self.hits[name] += 1
            self.fields[field] += 1
            self.connections.add(client)
            return self.hits[name]

    def reply_for(self, name: str, hit: int) -> tuple[int, str] | None:
        if name == "dropped" and hit == 1:
            return None
        if name == "flaky" and hit <= 2:
            return 503, "error: the service is unavailable"
        if name == "rejected":
            return 422, "error: the app tier could not classify this image"
        if name == "gateway":
            return 504, "error: no answer in time"
        label = LABELS.get(name, "unknown")
        return 200, f"{name}:{'not-' + label if name == 'wrong' else label}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeWebTier

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        field, filename = the_one_file(self.headers["Content-Type"], body)
        name = Path(filename).stem
        hit = self.server.record(name, field, self.client_address)
        if field != self.server.field:
            return self.answer(400, f"error: no file in field {self.server.field}")
        reply = self.server.reply_for(name, hit)
        if reply is None:
            self.close_connection = True
            return None
        return self.answer(*reply)

    def answer(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:
        pass


def the_one_file(content_type: str, body: bytes) -> tuple[str, str]:
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    parts = list(message.iter_parts())
    assert len(parts) == 1, "one file per request"
    return parts[0].get_param("name", header="content-disposition"), parts[0].get_filename()


@pytest.fixture
def serve():
    servers: list[FakeWebTier] = []

    def start(field: str = "inputFile") -> FakeWebTier:
        servers.append(FakeWebTier(field))
        threading.Thread(target=servers[-1].serve_forever, daemon=True).start()
        return servers[-1]
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def image_folder(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(b"\x89PNG\r\n\x1a\n" + name.encode() * 50)
    (folder / "notes.txt").write_text("not an image")
    return folder


def labels_csv(tmp_path: Path) -> Path:
    path = tmp_path / "expected.csv"
    path.write_text("name,label\n" + "".join(f"{n},{label}\n" for n, label in LABELS.items()))
    return path


def test_a_mixed_run_retries_what_it_should_and_reports_every_request(serve, tmp_path):
    server = serve()
    images = image_folder(tmp_path, "good_a.jpg", "good_b.PNG", "wrong.jpg", "flaky.jpeg", "dropped.webp",
                          "rejected.gif", "gateway.bmp")
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(workload, ["--url", server.url, "--images", str(images), "--concurrency", "4",
                                           "--expected", str(labels_csv(tmp_path)), "--report", str(report_path)])

    assert result.exit_code == 1, result.output
    assert "7 requests to" in result.output and "correct 4   wrong 1   failed 2   (retries 3)" in result.output
    assert "wrong   wrong.jpg: expected 'wrong:goldfish', got 'wrong:not-goldfish' (200)" in result.output
    assert "failed  rejected.gif: expected 'rejected:zebra'" in result.output
    assert "labels were not checked" not in result.output
    assert server.hits == {"good_a": 1, "good_b": 1, "wrong": 1, "flaky": 3, "dropped": 2, "rejected": 1,
                           "gateway": 1}

    report = json.loads(report_path.read_text())
    by_name = {r["name"]: r for r in report["records"]}
    assert {n: (r["outcome"], r["status"], r["attempts"]) for n, r in by_name.items()} == {
        "good_a": ("correct", 200, 1), "good_b": ("correct", 200, 1), "wrong": ("wrong", 200, 1),
        "flaky": ("correct", 200, 3), "dropped": ("correct", 200, 2), "rejected": ("failed", 422, 1),
        "gateway": ("failed", 504, 1)}
    assert by_name["good_b"]["answer"] == "good_b:espresso" and by_name["good_b"]["expected"] == "good_b:espresso"
    assert all(r["started_at"] <= r["finished_at"] for r in report["records"])
    summary = report["summary"]
    assert (summary["requests"], summary["correct"], summary["wrong"], summary["failed"]) == (7, 4, 1, 2)
    assert summary["labels_checked"] is True and summary["throughput_rps"] > 0
    assert summary["total_s"] == pytest.approx(max(r["finished_at"] for r in report["records"])
                                               - min(r["started_at"] for r in report["records"]), abs=1e-3)
    assert [e["name"] for e in report["examples"]] == ["gateway", "rejected", "wrong"]


def test_an_all_correct_run_exits_0_with_another_field_over_keep_alive_connections(serve, tmp_path):
    server = serve(field="myfile")
    images = image_folder(tmp_path, "good_a.jpg", "good_b.jpg", "good_c.jpg")
    command = [sys.executable, "-c", "from hybrid.cli.workload import workload; workload()", "--url", server.url,
               "--images", str(images), "--field", "myfile", "--requests", "12", "--concurrency", "3"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "correct 12   wrong 0   failed 0" in result.stdout and "labels were not checked" in result.stdout
    assert result.stderr == "", "no progress bar when stderr is not a terminal"
    assert server.fields == {"myfile": 12} and server.hits == {"good_a": 4, "good_b": 4, "good_c": 4}
    assert len(server.connections) <= 3, "each thread keeps its connection alive"


def test_the_wrong_field_is_a_4xx_that_fails_without_retries(serve, tmp_path):
    server = serve(field="myfile")
    images = image_folder(tmp_path, "good_a.jpg")
    result = CliRunner().invoke(workload, ["--url", server.url, "--images", str(images)])
    assert result.exit_code == 1
    assert "failed 1" in result.output and "no file in field myfile" in result.output
    assert server.fields == {"inputFile": 1}


def test_no_server_at_all_fails_each_request_after_its_retries(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    images = image_folder(tmp_path, "good_a.jpg", "good_b.jpg")
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(workload, ["--url", url, "--images", str(images), "--retries", "1",
                                           "--report", str(report_path)])
    assert result.exit_code == 1 and "failed 2" in result.output
    records = json.loads(report_path.read_text())["records"]
    assert [(r["status"], r["attempts"], r["answer"].split(":")[0]) for r in records] == \
        [(None, 2, "ConnectionError")] * 2


def test_json_prints_the_summary_on_stdout(serve, tmp_path):
    server = serve(field="inputFile")
    images = image_folder(tmp_path, "good_a.jpg", "good_b.jpg")
    result = CliRunner().invoke(workload, ["--url", server.url, "--images", str(images), "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["summary"]["correct"] == 2 and printed["summary"]["requests"] == 2 and printed["examples"] == []
