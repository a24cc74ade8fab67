"""VM Import/Export's export-image tasks on the local server (moto has none): an AMI's disk from the image store,
converted with ``qemu-img`` and uploaded to S3 as AWS does, at ``s3://<S3Bucket>/<S3Prefix><task id>.<format>``.

A task is ``active`` (StatusMessage ``validating``, ``converting``, ``uploading``; Progress "0".."100") until it is
``completed``, or ``deleted`` with the reason in StatusMessage. Conversion and upload run on a thread of their own;
the tasks live in the server's memory only, as its other resources do.
"""
from __future__ import annotations

import logging
import re
import secrets
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hybrid.aws.images import export_key

log = logging.getLogger(__name__)
TASK_PREFIX = "export-ami-"
CONVERT_OPTIONS = {  # DiskImageFormat -> qemu-img's output format
    "VMDK": ["-O", "vmdk", "-o", "subformat=streamOptimized"],
    "RAW": ["-O", "raw"],
    "VHD": ["-O", "vpc"],
}
CONVERT_SHARE = 50  # the conversion is the first half of the progress, the upload the second
PROGRESS_PATTERN = re.compile(r"\((\d+(?:\.\d+)?)/100%\)")
Upload = Callable[[Path, str, str, Callable[[int], None]], None]  # (file, bucket, key, on_bytes)


def new_task_id() -> str:
    """``export-ami-`` and 17 hex digits, as AWS names them."""
    return TASK_PREFIX + secrets.token_hex(9)[:17]


def qemu_progress(text: str) -> float | None:
    """The last percentage in ``qemu-img convert -p``'s output (``    (42.17/100%)``), as 0..100; None if none."""
    found = PROGRESS_PATTERN.findall(text)
    return float(found[-1]) if found else None


@dataclass
class ExportImageTask:
    """One task, as DescribeExportImageTasks reports it; ``owner`` is the (account, region) that started it."""

    task_id: str
    image_id: str
    disk_format: str
    bucket: str
    prefix: str
    owner: tuple[str, str] = ("", "")
    role_name: str = ""
    description: str = ""
    tags: list[dict[str, str]] = field(default_factory=list)
    status: str = "active"
    message: str = "validating"
    progress: int = 0

    @property
    def key(self) -> str:
        return export_key(self.prefix, self.task_id, self.disk_format)

    def advance(self, message: str, progress: float) -> None:
        """Still active: a step and its progress (never backwards, never 100 before it completes)."""
        self.message, self.progress = message, max(self.progress, min(99, int(progress)))

    def complete(self) -> None:
        self.status, self.message, self.progress = "completed", "", 100

    def fail(self, reason: str) -> None:
        self.status, self.message = "deleted", reason

    def described(self) -> dict[str, Any]:
        """The task in DescribeExportImageTasks' shape (a completed task has no message and no progress)."""
        location = {"S3Bucket": self.bucket, "S3Prefix": self.prefix}
        shown: dict[str, Any] = {"ExportImageTaskId": self.task_id, "ImageId": self.image_id, "Status": self.status,
                                 "Tags": self.tags, "S3ExportLocation": location}
        if self.description:
            shown["Description"] = self.description
        if self.status == "active":
            shown["Progress"] = str(self.progress)
        if self.message:
            shown["StatusMessage"] = self.message
        return shown

    def started(self) -> dict[str, Any]:
        """The task in ExportImage's reply shape."""
        return {**self.described(), "DiskImageFormat": self.disk_format, "RoleName": self.role_name}


def tags_of(tag_specifications: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The tags of an ExportImage's TagSpecifications for ``export-image-task``."""
    return [{"Key": t["Key"], "Value": t.get("Value", "")} for spec in tag_specifications or []
            if spec.get("ResourceType") == "export-image-task" for t in spec.get("Tags", [])]


def matches(task: ExportImageTask, filters: list[dict[str, Any]]) -> bool:
    """Whether a task passes every filter: ``tag:<key>``, ``tag-key``, ``image-id``, ``status``."""
    tags = {t["Key"]: t["Value"] for t in task.tags}
    for each in filters or []:
        name, values = each.get("Name", ""), set(each.get("Values", []))
        if name.startswith("tag:"):
            found = tags.get(name[4:])
        elif name == "tag-key":
            found = next((k for k in tags if k in values), None)
        else:
            found = {"image-id": task.image_id, "status": task.status}.get(name)
        if found not in values:
            return False
    return True


class ExportTasks:
    """The server's export tasks, by id; ClientToken makes a repeated ExportImage return the same task."""

    def __init__(self) -> None:
        self._tasks: dict[str, ExportImageTask] = {}
        self._by_token: dict[tuple[tuple[str, str], str], str] = {}
        self._lock = threading.Lock()

    def add(self, task: ExportImageTask, client_token: str = "") -> tuple[ExportImageTask, bool]:
        """Records a task; returns it and True, or the task of the same ClientToken and False."""
        with self._lock:
            earlier = self._by_token.get((task.owner, client_token)) if client_token else None
            if earlier:
                return self._tasks[earlier], False
            self._tasks[task.task_id] = task
            if client_token:
                self._by_token[(task.owner, client_token)] = task.task_id
            return task, True

    def describe(self, owner: tuple[str, str], task_ids: list[str] | None = None,
                 filters: list[dict[str, Any]] | None = None) -> list[ExportImageTask]:
        """The owner's tasks, oldest first; unknown ids are left out."""
        with self._lock:
            tasks = list(self._tasks.values())
        return [t for t in tasks if t.owner == owner and (not task_ids or t.task_id in task_ids)
                and matches(t, filters or [])]


def page(items: list[Any], max_results: int | None, next_token: str | None) -> tuple[list[Any], str | None]:
    """One page of ``items``: the token is the index of the next item."""
    start = int(next_token) if next_token and next_token.isdigit() else 0
    end = start + max_results if max_results else len(items)
    return items[start:end], (str(end) if end < len(items) else None)


def run_export(task: ExportImageTask, disk: Path, work_dir: Path, upload: Upload) -> None:
    """Converts the disk and uploads it; the task says how far it got, and why it was deleted if it failed."""
    converted = work_dir / f"{task.task_id}.{task.disk_format.lower()}"
    try:
        task.advance("converting", 0)
        convert(disk, converted, task.disk_format, lambda pct: task.advance("converting", pct * CONVERT_SHARE / 100))
        size = converted.stat().st_size
        task.advance("uploading", CONVERT_SHARE)
        sent = [0]

        def on_bytes(count: int) -> None:
            sent[0] += count
            task.advance("uploading", CONVERT_SHARE + (100 - CONVERT_SHARE) * sent[0] / max(size, 1))

        upload(converted, task.bucket, task.key, on_bytes)
        task.complete()
        log.info("export %s of %s completed: s3://%s/%s (%d bytes)", task.task_id, task.image_id, task.bucket,
                 task.key, size)
    except Exception as exc:  # noqa: BLE001 - any failure ends the task, with its reason, as AWS's would
        task.fail(f"{task.message} failed: {exc}")
        log.warning("export %s of %s failed: %s", task.task_id, task.image_id, exc)
    finally:
        converted.unlink(missing_ok=True)


def convert(disk: Path, target: Path, disk_format: str, on_progress: Callable[[float], None]) -> None:
    """``qemu-img convert -p`` of ``disk`` into ``target``, reporting its percentage as it goes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    command = ["qemu-img", "convert", "-p", *CONVERT_OPTIONS[disk_format], str(disk), str(target)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    while chunk := process.stdout.read1(256).decode(errors="replace"):  # type: ignore[attr-defined]
        found = qemu_progress(chunk)
        if found is not None:
            on_progress(found)
    errors = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.wait() != 0:
        raise RuntimeError(f"qemu-img convert exited with {process.returncode}: {errors.strip()[-500:]}")


def start_export(task: ExportImageTask, disk: Path, work_dir: Path, upload: Upload) -> threading.Thread:
    """Runs the task on a thread of its own."""
    thread = threading.Thread(target=run_export, args=(task, disk, work_dir, upload), name=task.task_id,
                              daemon=True)
    thread.start()
    return thread
