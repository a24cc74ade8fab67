"""The local server's machine images with bytes, without a server: the console tail, storing a disk for CreateImage
(cache entry or flattened VM overlay, with a fake power-down), the image's state, and export tasks (ids, progress,
shapes, tokens, filters, pages, the conversion and the failure reasons). qemu-img for real where it is needed."""
from __future__ import annotations

import base64
import os
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from hybrid.core.localserver import IMAGE_CACHE_VARIABLE, image_store
from hybrid.local.awsserver import image_fixes
from hybrid.local.awsserver.export_tasks import (ExportImageTask, ExportTasks, matches, new_task_id, page,
                                                 qemu_progress, run_export, tags_of)
from hybrid.local.awsserver.image_store import (BASE_CMDLINE, CONSOLE_TAIL_BYTES, ImageStoreError, StoreJob,
                                                console_tail, encoded_console, image_disk, prune_image_cache,
                                                read_machine, remove_image, store_image)

needs_qemu = pytest.mark.skipif(not shutil.which("qemu-img"),
                                reason="qemu-img is not installed (Debian/Ubuntu package qemu-utils)")
OWNER = ("123456789012", "us-east-1")


def qemu_img(*args: str) -> str:
    return subprocess.run(["qemu-img", *args], check=True, capture_output=True, text=True).stdout


def image_files(folder: Path, cmdline: str | None = None, size: str = "4M") -> Path:
    """A tiny image folder: an empty qcow2, a fake kernel and initrd, and image.json if a cmdline is given."""
    folder.mkdir(parents=True, exist_ok=True)
    qemu_img("create", "-f", "qcow2", str(folder / "disk.qcow2"), size)
    (folder / "vmlinuz").write_bytes(b"kernel")
    (folder / "initrd.img").write_bytes(b"initrd")
    if cmdline is not None:
        (folder / "image.json").write_text(json.dumps({"cmdline": cmdline}))
    return folder


# ---------------------------------------------------------------- console

def test_console_tail_is_the_last_64_kib_of_the_vm_console(tmp_path):
    text = b"".join(b"line %06d\n" % n for n in range(10000))
    (tmp_path / "console.log").write_bytes(text)
    (tmp_path / "worker.log").write_bytes(b"not this")
    tail = console_tail(tmp_path)
    assert len(tail) == CONSOLE_TAIL_BYTES and text.endswith(tail)
    assert base64.b64decode(encoded_console(tail)) == tail


def test_console_of_a_worker_process_is_its_log_and_of_nothing_is_empty(tmp_path):
    assert console_tail(tmp_path) == b"" and encoded_console(b"") == ""
    (tmp_path / "worker.log").write_bytes(b"worker started\n")
    assert console_tail(tmp_path) == b"worker started\n"


def test_machine_record_is_read_or_none(tmp_path):
    assert read_machine(tmp_path) is None
    (tmp_path / "machine.json").write_text("{not json")
    assert read_machine(tmp_path) is None
    (tmp_path / "machine.json").write_text('{"kind": "vm", "pid": 0}')
    assert read_machine(tmp_path) == {"kind": "vm", "pid": 0}


# ---------------------------------------------------------------- storing a disk (CreateImage)

@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(IMAGE_CACHE_VARIABLE, str(folder))
    return folder


def vm_instance(state: Path, instance_id: str, base: Path) -> Path:
    """An instance folder as the runner leaves a VM: machine.json and an overlay on the base image's disk."""
    folder = state / "instances" / instance_id
    folder.mkdir(parents=True)
    qemu_img("create", "-f", "qcow2", "-F", "qcow2", "-b", str(base / "disk.qcow2"), str(folder / "disk.qcow2"))
    (folder / "machine.json").write_text(json.dumps({"kind": "vm", "pid": 0, "image_id": "ami-base",
                                                     "disk": str(base / "disk.qcow2")}))
    return folder


@needs_qemu
def test_a_vm_disk_is_powered_down_flattened_and_cached_by_digest(tmp_path, cache_dir):
    state, base = tmp_path / "state", image_files(tmp_path / "base")
    folder = vm_instance(state, "i-1", base)
    powered = []
    stored = store_image(StoreJob(state, "ami-1", "i-1", folder, read_machine(folder), digest="d1"),
                         lambda f, timeout: powered.append(f) or True)
    assert powered == [folder] and stored == image_store(state) / "ami-1"
    assert "backing-filename" not in json.loads(qemu_img("info", "--output=json", str(stored / "disk.qcow2")))
    record = json.loads((stored / "image.json").read_text())
    assert record["cmdline"] == BASE_CMDLINE and record["digest"] == "d1" and record["source"] == "i-1"
    assert (stored / "vmlinuz").read_bytes() == b"kernel"
    assert sorted(p.name for p in (cache_dir / "d1").iterdir()) == ["disk.qcow2", "image.json", "initrd.img",
                                                                     "vmlinuz"]
    assert [p.name for p in image_store(state).iterdir()] == ["ami-1"]  # no partial folder left


@needs_qemu
def test_the_kernel_command_line_follows_the_booted_image(tmp_path, cache_dir):
    state, base = tmp_path / "state", image_files(tmp_path / "baked", cmdline="root=/dev/vda ro quiet")
    folder = vm_instance(state, "i-2", base)
    stored = store_image(StoreJob(state, "ami-2", "i-2", folder, read_machine(folder)), lambda f, t: True)
    assert json.loads((stored / "image.json").read_text())["cmdline"] == "root=/dev/vda ro quiet"
    assert not cache_dir.exists()  # no digest, no cache entry


@needs_qemu
def test_a_vm_that_does_not_power_off_stores_nothing(tmp_path, cache_dir):
    state, base = tmp_path / "state", image_files(tmp_path / "base")
    folder = vm_instance(state, "i-3", base)
    with pytest.raises(ImageStoreError, match="did not power off"):
        store_image(StoreJob(state, "ami-3", "i-3", folder, read_machine(folder)), lambda f, t: False)
    assert list(image_store(state).iterdir()) == []


@needs_qemu
def test_a_cache_restored_builder_copies_the_cache_entry(tmp_path, cache_dir):
    image_files(cache_dir / "d9", cmdline=BASE_CMDLINE)
    state = tmp_path / "state"
    folder = state / "instances" / "i-4"
    folder.mkdir(parents=True)
    machine = {"kind": "vm", "pid": 0, "from_cache": "d9"}
    stored = store_image(StoreJob(state, "ami-4", "i-4", folder, machine, digest="d9"),
                         lambda f, t: pytest.fail("a cache-restored builder has no VM to power down"))
    assert image_disk(state, "ami-4") == stored / "disk.qcow2"
    assert remove_image(state, "ami-4") and image_disk(state, "ami-4") is None and not remove_image(state, "ami-4")


def test_a_missing_cache_entry_fails_clearly(tmp_path, cache_dir):
    machine = {"kind": "vm", "pid": 0, "from_cache": "gone"}
    with pytest.raises(ImageStoreError, match="lacks disk.qcow2"):
        store_image(StoreJob(tmp_path, "ami-5", "i-5", tmp_path, machine), lambda f, t: True)


@needs_qemu
def test_the_image_becomes_available_or_failed_with_the_reason(tmp_path, cache_dir, monkeypatch):
    image_files(cache_dir / "d7", cmdline=BASE_CMDLINE)
    ok, bad = SimpleNamespace(id="ami-ok", state="pending"), SimpleNamespace(id="ami-bad", state="pending")
    image_fixes.store_in_background(ok, StoreJob(tmp_path, "ami-ok", "i-6", tmp_path, {"from_cache": "d7"}),
                                    {"ami-ok": ok})
    image_fixes.store_in_background(bad, StoreJob(tmp_path, "ami-bad", "i-7", tmp_path, {"from_cache": "nope"}),
                                    {"ami-bad": bad})
    assert ok.state == "available" and image_disk(tmp_path, "ami-ok")
    assert bad.state == "failed" and "lacks disk.qcow2" in bad.state_reason["Message"]


@needs_qemu
def test_an_image_deregistered_while_stored_loses_its_disk(tmp_path, cache_dir):
    image_files(cache_dir / "d8", cmdline=BASE_CMDLINE)
    ami = SimpleNamespace(id="ami-gone", state="pending")
    image_fixes.store_in_background(ami, StoreJob(tmp_path, "ami-gone", "i-8", tmp_path, {"from_cache": "d8"}), {})
    assert image_disk(tmp_path, "ami-gone") is None


# ---------------------------------------------------------------- export tasks

def task(**fields) -> ExportImageTask:
    return ExportImageTask(**{"task_id": new_task_id(), "image_id": "ami-1", "disk_format": "VMDK",
                              "bucket": "b", "prefix": "exports/", "owner": OWNER, **fields})


def test_task_ids_and_keys_are_named_as_aws_names_them():
    made = task()
    assert re.fullmatch(r"export-ami-[0-9a-f]{17}", made.task_id)
    assert made.key == f"exports/{made.task_id}.vmdk"


def test_qemu_progress_is_the_last_percentage_seen():
    assert qemu_progress("    (0.00/100%)\r    (12.50/100%)\r") == 12.5
    assert qemu_progress("    (100.00/100%)\n") == 100.0
    assert qemu_progress("nothing here") is None


def test_progress_moves_forward_and_stops_short_of_100_until_completed():
    made = task()
    made.advance("converting", 40)
    made.advance("converting", 10)
    made.advance("uploading", 100)
    assert (made.status, made.message, made.progress) == ("active", "uploading", 99)
    made.complete()
    shown = made.described()
    assert shown["Status"] == "completed" and "Progress" not in shown and "StatusMessage" not in shown


def test_shapes_are_those_of_the_ec2_api():
    made = task(role_name="vmimport", description="d", tags=[{"Key": "k", "Value": "v"}])
    made.advance("converting", 20)
    assert made.described() == {
        "ExportImageTaskId": made.task_id, "ImageId": "ami-1", "Description": "d", "Status": "active",
        "StatusMessage": "converting", "Progress": "20", "Tags": [{"Key": "k", "Value": "v"}],
        "S3ExportLocation": {"S3Bucket": "b", "S3Prefix": "exports/"}}
    assert made.started()["DiskImageFormat"] == "VMDK" and made.started()["RoleName"] == "vmimport"
    made.fail("uploading failed: NoSuchBucket")
    assert made.described()["Status"] == "deleted" and "Progress" not in made.described()


def test_tags_come_from_the_export_image_task_specification():
    specs = [{"ResourceType": "export-image-task", "Tags": [{"Key": "hybrid:stack", "Value": "s"}]},
             {"ResourceType": "image", "Tags": [{"Key": "other", "Value": "x"}]}]
    assert tags_of(specs) == [{"Key": "hybrid:stack", "Value": "s"}] and tags_of([]) == []


def test_filters_by_tag_image_and_status():
    made = task(tags=[{"Key": "hybrid:stack", "Value": "s"}])
    assert matches(made, [{"Name": "tag:hybrid:stack", "Values": ["s"]}, {"Name": "status", "Values": ["active"]}])
    assert matches(made, [{"Name": "tag-key", "Values": ["hybrid:stack"]}, {"Name": "image-id", "Values": ["ami-1"]}])
    assert not matches(made, [{"Name": "tag:hybrid:stack", "Values": ["other"]}])
    assert not matches(made, [{"Name": "status", "Values": ["completed"]}])


def test_a_client_token_returns_the_same_task_and_owners_see_their_own():
    tasks = ExportTasks()
    first, new = tasks.add(task(), "token")
    again, new_again = tasks.add(task(), "token")
    other, _ = tasks.add(task(owner=("210987654321", "us-east-1")), "token")
    assert new and not new_again and again is first and other is not first
    assert tasks.describe(OWNER) == [first] and tasks.describe(OWNER, ["export-ami-unknown"]) == []


def test_pages_follow_the_next_token():
    items = list(range(5))
    assert page(items, 2, None) == ([0, 1], "2")
    assert page(items, 2, "4") == ([4], None)
    assert page(items, None, None) == (items, None)


@needs_qemu
def test_an_export_converts_to_stream_optimised_vmdk_and_uploads(tmp_path):
    disk = image_files(tmp_path / "image")
    uploads, made = [], task()

    def upload(path, bucket, key, on_bytes):
        info = json.loads(qemu_img("info", "--output=json", str(path)))
        uploads.append((bucket, key, info["format"], info["format-specific"]["data"]["create-type"]))
        on_bytes(path.stat().st_size)

    run_export(made, disk / "disk.qcow2", tmp_path / "work", upload)
    assert uploads == [("b", made.key, "vmdk", "streamOptimized")]
    assert made.status == "completed" and list((tmp_path / "work").iterdir()) == []


@needs_qemu
def test_a_failed_upload_deletes_the_task_with_the_reason(tmp_path):
    disk = image_files(tmp_path / "image")
    made = task()

    def upload(path, bucket, key, on_bytes):
        raise RuntimeError("NoSuchBucket: b")

    run_export(made, disk / "disk.qcow2", tmp_path / "work", upload)
    assert made.status == "deleted" and made.message == "uploading failed: NoSuchBucket: b"


def test_a_failed_conversion_deletes_the_task_with_qemus_reason(tmp_path):
    made = task()
    run_export(made, tmp_path / "missing.qcow2", tmp_path / "work", lambda *a: pytest.fail("nothing to upload"))
    assert made.status == "deleted" and made.message.startswith("converting failed:")


def test_the_image_cache_keeps_only_its_newest_entries(cache_dir):
    for age, name in enumerate(("d-new", "d-mid", "d-old")):
        entry = cache_dir / name
        entry.mkdir(parents=True)
        os.utime(entry, (1_000_000 - age * 100, 1_000_000 - age * 100))

    removed = prune_image_cache(keep=2)

    assert [p.name for p in removed] == ["d-old"]
    assert sorted(p.name for p in cache_dir.iterdir()) == ["d-mid", "d-new"]
