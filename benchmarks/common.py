"""Helpers shared by the benchmark scripts of this folder (``bench_aws``, ``bench_app_tier``, ``bench_autoscale``,
``bench_web``): progress lines, percentiles and tables, facts about this machine, the photos, and the local AWS side
(the project's emulator, a stack on it, app-tier instances, leftover processes).

How the scripts import it: each one is run as ``.venv/bin/python benchmarks/bench_<name>.py`` from the repository
root. Each inserts its own folder at the front of ``sys.path`` (``sys.path.insert(0, str(Path(__file__).resolve()
.parent))``; when run as a script Python already puts it there) and then does ``import common``, so this also works
as ``python -m benchmarks.bench_<name>`` and from any working directory. ``hybrid``, ``app_tier`` and ``web_tier``
come from the project (installed editable in the venv; the scripts also put the repository root on ``sys.path``).
Project modules, boto3, PIL and scikit-image are imported inside the functions that need them, so importing this
module stays cheap (``bench_app_tier``'s model-only child imports it too); the one exception is
``hybrid.core.procs`` (no third-party import), whose ``cpu_seconds`` the scripts call as ``common.cpu_seconds``.

Processes are found with the project's own helpers: ``hybrid.local.stack.processes_of(state_dir)`` (command lines naming
the state folder) and ``hybrid.local.instance_folders.worker_processes(state_dir)`` (the runner's pid files; a worker
forked by the runner has its runner's command line, which does not name its instance).
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import io
import math
import platform
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from hybrid.core.procs import cpu_seconds  # noqa: F401 - user + system CPU seconds of a pid, 0.0 once it is gone

PHOTOS = ("coffee", "chelsea", "rocket", "astronaut")
"""Real photos shipped with scikit-image (``skimage.data.<name>()``)."""
JPEG_QUALITY = 92

_T0 = time.perf_counter()


def ignore(_line: str) -> None:
    """A ``report`` callback that drops its line."""


# ---------------------------------------------------------------- progress, statistics, tables

def since_start() -> float:
    """Seconds since this module was imported (that is, since the script started)."""
    return time.perf_counter() - _T0


def progress(step: str) -> None:
    """A progress line on stderr, stamped with the seconds since the start."""
    print(f"  {since_start():6.1f} s  {step}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (fraction in 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def table(header: list[str], rows: list[list[str]]) -> str:
    """A text table: first column left-aligned, the others right-aligned, a dashed line under the header."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ---------------------------------------------------------------- this machine

def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def package_version(name: str) -> str:
    """The installed version of a distribution, or ``not installed``."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# ---------------------------------------------------------------- photos

def photo_jpeg(name: str, size: tuple[int, int] | None = None) -> bytes:
    """One of ``PHOTOS`` as JPEG (quality ``JPEG_QUALITY``, PIL), resized to ``size`` (width, height) if given."""
    from PIL import Image
    from skimage import data

    image = Image.fromarray(getattr(data, name)()).convert("RGB")
    if size is not None:
        image = image.resize(size)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


# ---------------------------------------------------------------- plain boto3 on the local server

def local_client(url: str, service: str, config: Any = None) -> Any:
    """A plain boto3 client of the local AWS server at ``url`` (dummy credentials, us-east-1)."""
    import boto3

    return boto3.client(service, endpoint_url=url, region_name="us-east-1", aws_access_key_id="test",
                        aws_secret_access_key="test", config=config)


def upload_image(s3: Any, bucket: str, data: bytes) -> str:
    """Puts an image under ``sha256/<hex>`` (the web tier's input key); returns the key."""
    import hashlib

    key = f"sha256/{hashlib.sha256(data).hexdigest()}"
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    return key


def send_bodies(sqs: Any, queue_url: str, bodies: Sequence[str]) -> None:
    """One ``send_message_batch`` of up to 10 message bodies; raises if any entry failed."""
    reply = sqs.send_message_batch(QueueUrl=queue_url, Entries=[
        {"Id": str(n), "MessageBody": body} for n, body in enumerate(bodies)])
    if reply.get("Failed"):
        raise RuntimeError(f"send_message_batch failed: {reply['Failed']}")


def delete_received(sqs: Any, queue_url: str, messages: Sequence[dict[str, Any]]) -> None:
    """Deletes messages just received (``receive_message``'s ``Messages``) in one call; nothing to do if none."""
    if messages:
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)])


def receive_replies(sqs: Any, queue_url: str,
                    clock: Callable[[], float] = time.perf_counter) -> tuple[list[Any], float]:
    """One receive (up to 10, long poll of 1 s) on a response queue: the ``ClassifyReply`` of each message and the
    ``clock`` reading right after the receive returned; the messages are deleted once parsed."""
    from hybrid.core.messages import ClassifyReply

    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    arrived = clock()
    replies = [ClassifyReply.from_body(message["Body"]) for message in messages]
    delete_received(sqs, queue_url, messages)
    return replies, arrived


# ---------------------------------------------------------------- the project's local AWS side

@contextlib.contextmanager
def local_server(state_dir: Path, report: Callable[[str], None] = ignore) -> Iterator[Any]:
    """The project's local AWS server and instance runner (``start_emulator``), yielding its ``EmulatorInfo``;
    stopped on the way out whatever happens, then ``report`` gets a line saying so and how long it took."""
    from hybrid.local.awsserver import start_emulator, stop_emulator

    try:
        yield start_emulator(state_dir)
    finally:
        started = time.perf_counter()
        stopped = stop_emulator(state_dir)
        report(f"emulator stopped: {'yes' if stopped else 'no record'} ({time.perf_counter() - started:.2f} s)")


@contextlib.contextmanager
def aws_stack(settings: Any, report: Callable[[str], None] = ignore) -> Iterator[Any]:
    """The stack's AWS side (``build_aws_stack(settings)``), set up, yielded, and torn down (instances first) on
    the way out; then ``report`` gets a line with what ``down`` did and how long it took."""
    from hybrid.aws.stack import build_aws_stack

    stack = build_aws_stack(settings)
    try:
        stack.up(report=ignore)
        yield stack
    finally:
        started = time.perf_counter()
        lines = stack.down(report=ignore)
        report(f"stack down: {lines[0] if lines else 'done'}, {max(0, len(lines) - 1)} resources handled "
               f"({time.perf_counter() - started:.2f} s)")


def launch_app_tier(ec2: Any, stack: Any, settings: Any, count: int = 1) -> list[str]:
    """Launches ``count`` app-tier instances of the stack as tests/integration/rig.py's ``Stack.launch`` does (its
    image, the stack and role tags, the settings as user data); the runner turns each into a worker process."""
    from hybrid.core.naming import ROLE_APP_TIER, ROLE_TAG, STACK_TAG

    image = next(r["id"] for r in stack.status() if r["kind"] == "image")
    tags = [{"Key": STACK_TAG, "Value": settings.stack}, {"Key": ROLE_TAG, "Value": ROLE_APP_TIER}]
    reply = ec2.run_instances(ImageId=image, MinCount=count, MaxCount=count, InstanceType="t3.micro",
                              UserData=settings.to_json(),
                              TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
    return [i["InstanceId"] for i in reply["Instances"]]


def leftover_processes(state_dir: Path) -> list[tuple[int, str]]:
    """(pid, command line) of every live process of a state folder: those whose command line names it (local
    server, runner, web servers, workers; ``hybrid.local.stack.processes_of``) and any worker its pid file still names."""
    from hybrid.local.instance_folders import worker_processes
    from hybrid.local.stack import processes_of

    found = processes_of(state_dir)
    known = {pid for pid, _ in found}
    found += [(pid, f"worker of {instance_id} (from its pid file)")
              for instance_id, pid in sorted(worker_processes(state_dir).items()) if pid not in known]
    return found


def wait_for_no_leftovers(state_dir: Path, patience: float = 5.0) -> list[tuple[int, str]]:
    """``leftover_processes`` once none is left, or what is still there after ``patience`` seconds."""
    deadline = time.monotonic() + patience
    while True:
        found = leftover_processes(state_dir)
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.2)
