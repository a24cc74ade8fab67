"""The local server's machine images with bytes (the server's side of the runner's file layout, ``hybrid.local``).

Per instance, ``instance_folder(state_dir, id)`` holds what the runner wrote: ``console.log`` (a VM's serial
console) or ``worker.log`` (a local worker process), and for a VM ``machine.json`` and its overlay ``disk.qcow2``.
Per AMI with bytes, ``image_store(state_dir)/<ami id>/`` holds ``disk.qcow2`` (standalone), ``vmlinuz``,
``initrd.img`` and ``image.json``; ``image_cache_dir()/<recipe digest>/`` the same four files, kept across servers.

Pure file work and ``qemu-img`` only: the moto side (which request does what, the AMI's state) is
``hybrid.local.awsserver.image_fixes``.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hybrid.core.localserver import image_cache_dir, image_store
from hybrid.local.machines import BASE_CMDLINE

log = logging.getLogger(__name__)
CONSOLE_TAIL_BYTES = 64 * 1024  # what EC2's GetConsoleOutput returns at most
CONSOLE_FILES = ("console.log", "worker.log")  # a VM's serial console, else a worker process's log
IMAGE_FILES = ("disk.qcow2", "vmlinuz", "initrd.img", "image.json")
BOOT_FILES = ("vmlinuz", "initrd.img")
POWER_DOWN_TIMEOUT = 180.0  # a clean shutdown under TCG emulation takes tens of seconds
QEMU_IMG_TIMEOUT = 3600.0
CACHE_KEEP = 4  # cache entries kept (both tiers of the last two checkouts baked); each is 0.5-1 GB
PowerDown = Callable[[Path, float], bool]


class ImageStoreError(Exception):
    """Storing an image's disk failed; the message says why (it becomes the AMI's StateReason)."""


# ---------------------------------------------------------------- console

def console_tail(folder: Path, limit: int = CONSOLE_TAIL_BYTES) -> bytes:
    """The last ``limit`` bytes of the instance's console (``console.log``, else ``worker.log``); empty if none."""
    for name in CONSOLE_FILES:
        try:
            with open(folder / name, "rb") as console:
                console.seek(max(0, os.fstat(console.fileno()).st_size - limit))
                return console.read(limit)
        except FileNotFoundError:
            continue
    return b""


def encoded_console(tail: bytes) -> str:
    """EC2 returns the console base64-encoded (botocore decodes it)."""
    return base64.b64encode(tail).decode("ascii")


# ---------------------------------------------------------------- machines and images

def read_machine(folder: Path) -> dict | None:
    """The runner's ``machine.json`` of an instance, or None for an instance that is no machine (or unreadable)."""
    try:
        machine = json.loads((folder / "machine.json").read_text())
    except (OSError, ValueError):
        return None
    return machine if isinstance(machine, dict) else None


def image_folder(state_dir: Path, image_id: str) -> Path:
    return image_store(state_dir) / image_id


def image_disk(state_dir: Path, image_id: str) -> Path | None:
    """The image's disk in the store, or None when the image has no bytes."""
    disk = image_folder(state_dir, image_id) / "disk.qcow2"
    return disk if disk.is_file() else None


def remove_image(state_dir: Path, image_id: str) -> bool:
    """Removes the image's folder from the store; False when it had none."""
    folder = image_folder(state_dir, image_id)
    if not folder.exists():
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True


@dataclass(frozen=True)
class StoreJob:
    """One CreateImage's disk to store: the instance's folder and machine record, and its recipe digest if any."""

    state_dir: Path
    image_id: str
    instance_id: str
    folder: Path
    machine: dict
    digest: str = ""


def store_image(job: StoreJob, power_down: PowerDown) -> Path:
    """Stores the instance's disk as the image's: a copy of the cache entry for a cache-restored builder, else the
    VM powered down and its overlay flattened. Written into a hidden folder and renamed, so a half-stored image is
    never seen. Returns the image's folder; raises ``ImageStoreError``."""
    final = image_folder(job.state_dir, job.image_id)
    partial = final.with_name(f".{job.image_id}.{uuid.uuid4().hex[:8]}")
    partial.mkdir(parents=True)
    try:
        cached = job.machine.get("from_cache")
        if cached:
            copy_image_files(image_cache_dir() / str(cached), partial)
        else:
            _store_vm_disk(job, partial, power_down)
        os.replace(partial, final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    if job.digest and not cached:
        cache_image(final, job.digest)
    return final


def _store_vm_disk(job: StoreJob, into: Path, power_down: PowerDown) -> None:
    if not power_down(job.folder, POWER_DOWN_TIMEOUT):
        raise ImageStoreError(f"instance {job.instance_id} did not power off within {POWER_DOWN_TIMEOUT:.0f} s")
    overlay = job.folder / "disk.qcow2"
    if not overlay.is_file():
        raise ImageStoreError(f"instance {job.instance_id} has no disk ({overlay} is missing)")
    booted = booted_image_folder(overlay, job.machine)
    run_qemu_img("convert", "-O", "qcow2", str(overlay), str(into / "disk.qcow2"))
    for name in BOOT_FILES:
        shutil.copyfile(booted / name, into / name)  # a copy: the base image's folder may be rebuilt in place
    record = {"cmdline": boot_cmdline(booted), "digest": job.digest, "source": job.instance_id,
              "created_at": time.time()}
    (into / "image.json").write_text(json.dumps(record, indent=1))


def booted_image_folder(overlay: Path, machine: dict) -> Path:
    """The folder of the image the VM booted (its disk, kernel and initrd): the overlay's backing file's folder,
    else the folder of ``machine.json``'s ``disk``."""
    candidates = [backing_file(overlay), Path(str(machine.get("disk") or ""))]
    for disk in candidates:
        if disk and disk.name and all((disk.parent / name).is_file() for name in BOOT_FILES):
            return disk.parent
    raise ImageStoreError(f"found no kernel and initrd beside the disk that {overlay} was made from "
                          f"(looked beside {', '.join(str(c) for c in candidates if c and c.name)})")


def backing_file(overlay: Path) -> Path | None:
    """The overlay's backing file, as ``qemu-img info`` reports it; None for a standalone disk."""
    info = json.loads(run_qemu_img("info", "--output=json", "-U", str(overlay)))
    found = info.get("full-backing-filename") or info.get("backing-filename")
    if not found:
        return None
    path = Path(found)
    return path if path.is_absolute() else overlay.parent / path


def boot_cmdline(folder: Path) -> str:
    """The kernel command line of an image folder: its ``image.json``'s, else the base image's default."""
    try:
        return str(json.loads((folder / "image.json").read_text())["cmdline"])
    except (OSError, ValueError, KeyError, TypeError):
        return BASE_CMDLINE


def copy_image_files(source: Path, into: Path) -> None:
    """The four files of an image folder (cache entry or store) into another folder."""
    missing = [name for name in IMAGE_FILES if not (source / name).is_file()]
    if missing:
        raise ImageStoreError(f"image folder {source} lacks {', '.join(missing)}")
    for name in IMAGE_FILES:
        _link_or_copy(source / name, into / name)


def cache_image(folder: Path, digest: str) -> Path:
    """Keeps a stored image in the image cache under its recipe digest (temp folder, then rename); an entry that
    exists already stays as it is."""
    entry = image_cache_dir() / digest
    if entry.exists():
        return entry
    entry.parent.mkdir(parents=True, exist_ok=True)
    partial = entry.with_name(f".{digest}.{uuid.uuid4().hex[:8]}")
    partial.mkdir()
    try:
        copy_image_files(folder, partial)
        os.replace(partial, entry)
        log.info("image %s kept in the image cache as %s", folder.name, entry)
        prune_image_cache(CACHE_KEEP)
    except OSError as exc:  # another server stored the same digest meanwhile, or the cache is not writable
        log.warning("could not keep image %s in the image cache %s: %s", folder.name, entry, exc)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return entry


def prune_image_cache(keep: int) -> list[Path]:
    """Removes all but the ``keep`` newest cache entries (a stored image keeps its own hard links); returns them."""
    root = image_cache_dir()
    entries = sorted((e for e in root.iterdir() if e.is_dir() and not e.name.startswith(".")),
                     key=lambda e: e.stat().st_mtime, reverse=True) if root.is_dir() else []
    for old in entries[keep:]:
        shutil.rmtree(old, ignore_errors=True)
        log.info("image cache entry %s removed (older than the newest %d)", old.name, keep)
    return entries[keep:]


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link where the file system allows (the files are never written again), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def run_qemu_img(*args: str) -> str:
    """``qemu-img ARGS``'s standard output; raises ``ImageStoreError`` with its error output."""
    try:
        done = subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=QEMU_IMG_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ImageStoreError(f"qemu-img {args[0]} failed: {exc}") from exc
    if done.returncode != 0:
        raise ImageStoreError(f"qemu-img {args[0]} failed: {done.stderr.strip()[-500:]}")
    return done.stdout
