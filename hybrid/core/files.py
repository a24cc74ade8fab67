"""Files written whole or not at all."""
from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path


def write_atomically(path: Path, data: bytes | Sequence[bytes], *, mode: int | None = None,
                     sync_folder: bool = False) -> None:
    """Writes ``data`` (one or several byte strings) to a temp file in ``path``'s folder, flushes and fsyncs it,
    gives it ``mode`` (when set) and renames it over ``path``; with ``sync_folder`` the folder is fsynced too, so the
    rename survives a crash. A reader sees the old file or the new one, never a part of either; if any step fails the
    old file stays and no temp file is left."""
    parts = (data,) if isinstance(data, bytes) else tuple(data)
    descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            for part in parts:
                file.write(part)
            file.flush()
            os.fsync(file.fileno())
        if mode is not None:
            os.chmod(temp_name, mode)
        os.replace(temp_name, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    if sync_folder:
        _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
