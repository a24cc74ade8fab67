"""The whole service as an operator runs it (`hybrid local up`, its own state folder and local AWS server), clients
that retry, and what the chaos tests measure: answers and how right they are, the dead-letter queue, launches."""
from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import requests

from hybrid.autoscale.loop import read_timeline
from hybrid.core.localserver import read_record
from hybrid.core.procs import free_port
from hybrid.local.instance_folders import worker_processes

PHOTOS = ("coffee", "chelsea", "astronaut", "rocket")
RETRY_PAUSE = 0.5


def variant(photo: str, number: int) -> bytes:
    """``photo`` with ``number`` in a JPEG comment: other bytes to the cache (a miss), the same pixels to the model
    (so the same label)."""
    from PIL import Image
    from skimage import data

    image = Image.fromarray(getattr(data, photo)()).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92, comment=f"chaos variant {number}".encode())
    return buffer.getvalue()


@dataclass
class Answer:
    """One client's request, retried until it got a 200 or its deadline passed."""

    name: str
    label: str = ""
    attempts: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


class LocalService:
    """`hybrid local up` in a state folder of its own with ``overrides`` (dotted settings), and what a test needs
    around it. The folder has a short path (the web tier's unix socket lives in it) and stays when the test fails."""

    def __init__(self, stack: str, **overrides: str) -> None:
        self.state_dir = Path(tempfile.mkdtemp(prefix="hc-", dir="/tmp"))
        self.stack, self.port = stack, free_port()
        self.overrides = {"web.bind": f"127.0.0.1:{self.port}", "scaling.max_workers": "2",
                          "worker.idle_timeout": "30", **overrides}
        self.url = f"http://127.0.0.1:{self.port}"

    def hybrid(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        sets = [part for key, value in self.overrides.items() for part in ("--set", f"{key}={value}")]
        command = [sys.executable, "-m", "hybrid", "--state-dir", str(self.state_dir), "--stack", self.stack, *sets,
                   *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=240,
                                env={**os.environ, "AWS_EC2_METADATA_DISABLED": "true"})
        if check and result.returncode:
            raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def __enter__(self) -> "LocalService":
        self.hybrid("local", "up")
        return self

    def __exit__(self, failed: object, *exc_info: object) -> None:
        down = self.hybrid("local", "down", check=False)
        assert down.returncode == 0, down.stdout + down.stderr
        if failed is None:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        else:
            print(f"\nthe state folder stays for a look: {self.state_dir}")

    # --- clients
    def ask(self, name: str, image: bytes, timeout: float = 30.0) -> tuple[int, str]:
        try:
            reply = requests.post(f"{self.url}/", files={"inputFile": (name, io.BytesIO(image))}, timeout=timeout)
        except requests.RequestException as exc:
            return 0, f"{type(exc).__name__}"
        return reply.status_code, reply.text.strip()

    def ask_until_answered(self, name: str, image: bytes, deadline: float) -> Answer:
        """Asks, and asks again after any failure (a reset connection, a 5xx), until a 200 or ``deadline``."""
        answer, started = Answer(name), time.monotonic()
        while time.monotonic() < deadline:
            answer.attempts += 1
            status, text = self.ask(name, image, timeout=max(1.0, deadline - time.monotonic()))
            if status == 200:
                answer.label = text.split(":", 1)[1]
                break
            answer.failures.append(f"{status} {text[:60]}")
            time.sleep(RETRY_PAUSE)
        answer.seconds = time.monotonic() - started
        return answer

    def burst(self, images: dict[str, bytes], within: float) -> list[Answer]:
        """One client per image, all at once, each retrying until answered or ``within`` seconds passed."""
        deadline = time.monotonic() + within
        with ThreadPoolExecutor(len(images)) as pool:
            return list(pool.map(lambda item: self.ask_until_answered(*item, deadline), images.items()))

    def start_burst(self, images: dict[str, bytes], within: float) -> "Burst":
        return Burst(self, images, within)

    def labels_of(self, photos: tuple[str, ...] = PHOTOS) -> dict[str, str]:
        """The label of each photo, asked once while nothing is wrong: the right answer for its variants."""
        labels = {}
        for photo in photos:
            status, text = self.ask(f"{photo}.jpg", variant(photo, 0), timeout=120)
            assert status == 200, f"{photo}: {status} {text}"
            labels[photo] = text.split(":", 1)[1]
        return labels

    def get(self, path: str) -> tuple[int, str]:
        try:
            reply = requests.get(f"{self.url}{path}", timeout=30)
        except requests.RequestException as exc:
            return 0, type(exc).__name__
        return reply.status_code, reply.text

    # --- what the tests measure
    def sqs(self):
        record = read_record(self.state_dir)
        assert record, "no local AWS server recorded"
        return boto3.client("sqs", endpoint_url=record.url, region_name="us-east-1", aws_access_key_id="test",
                            aws_secret_access_key="test")

    def dead_letters(self) -> int:
        """Messages in the stack's dead-letter queue, visible or not."""
        sqs = self.sqs()
        url = sqs.get_queue_url(QueueName=f"{self.stack}-requests-dlq")["QueueUrl"]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def request_depth(self) -> tuple[int, int]:
        """Request messages waiting, and received by workers but not deleted yet."""
        sqs = self.sqs()
        url = sqs.get_queue_url(QueueName=f"{self.stack}-requests")["QueueUrl"]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def requests_in_flight(self) -> int:
        return self.request_depth()[1]

    def requests_left(self) -> int:
        return sum(self.request_depth())

    def send_raw(self, bodies: list[str]) -> None:
        sqs = self.sqs()
        url = sqs.get_queue_url(QueueName=f"{self.stack}-requests")["QueueUrl"]
        for body in bodies:
            sqs.send_message(QueueUrl=url, MessageBody=body)

    def launched(self) -> int:
        """Workers the autoscaler launched, from its timeline."""
        path = self.state_dir / "autoscale" / f"{self.stack}-timeline.jsonl"
        return sum(row.get("launch", 0) for row in read_timeline(path)) if path.exists() else 0

    def web_process(self) -> int:
        """The pid of the web-tier process that answers (it holds reply slot 0), however the tier is fronted."""
        lock = self.state_dir / "web" / f"{self.stack}-slot-0.lock"
        inode = lock.stat().st_ino
        for line in Path("/proc/locks").read_text().splitlines():
            match = re.search(r"FLOCK\s+\S+\s+WRITE\s+(\d+)\s+[0-9a-f]+:[0-9a-f]+:(\d+)", line)
            if match and int(match.group(2)) == inode:
                return int(match.group(1))
        raise AssertionError(f"no process holds {lock}")

    def workers(self) -> dict[str, int]:
        return worker_processes(self.state_dir.resolve())


class Burst:
    """A burst running in the background while the test does its fault."""

    def __init__(self, service: LocalService, images: dict[str, bytes], within: float) -> None:
        self.answers: list[Answer] = []
        self._thread = threading.Thread(target=lambda: self.answers.extend(service.burst(images, within)))
        self._thread.start()

    def join(self, timeout: float) -> list[Answer]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the burst did not end"
        return self.answers


def wait_until(condition, timeout: float, interval: float = 0.05) -> float:
    """Polls until ``condition()`` is true; returns the seconds it took, fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "never happened"
        time.sleep(interval)
    return time.monotonic() - started
