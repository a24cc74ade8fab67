"""Zip archives of images for batch mode (``hybrid submit photos.zip``, ``api.upload("photos.zip")``), read safely.

``zip_images(path)`` returns every image in the archive as an ``ArchiveItem`` (a flat name and its bytes), or raises
one ``ArchiveError`` saying why the whole archive is refused; nothing is uploaded from a refused archive, because the
archive is read to the end, within the limits, before the first item is handed out.

Refused (a zip bomb or a path trick is never half-read):

- more than ``max_entries`` entries; an entry that declares, or inflates to, more than ``max_entry_bytes``; entries
  that together declare or inflate to more than ``max_total_bytes`` (declared sizes can lie, so inflating stops at
  the limit, whatever the header says); an entry over ``ratio_floor_bytes`` that inflates more than ``max_ratio``
  times its compressed size;
- an absolute name (``/x``, ``C:x``, ``\\\\server``), a name with a ``..`` part, a symbolic link, an encrypted
  entry, a damaged archive (bad CRC, truncated, unknown compression), a file that is not a zip.

Skipped without complaint: folders, anything under ``__MACOSX/``, hidden files and folders (a part starting with
``.``), names without an image extension. An archive with no image left is refused.

An item's name is its path in the archive with the folders joined by ``_`` (``a/cat.jpg`` -> ``a_cat.jpg``); batch
mode makes it a safe key part (``hybrid.core.messages.image_name``).
"""
from __future__ import annotations

import re
import stat
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hybrid.core.errors import ConfigError, HybridError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"})
CHUNK_BYTES = 1024 * 1024
MAC_RESOURCE_FOLDER = "__MACOSX"
_DRIVE = re.compile(r"^[A-Za-z]:")


class ArchiveError(HybridError):
    """The archive is refused as a whole; the message names it and the reason."""

    exit_code = 1


@dataclass(frozen=True)
class ArchiveLimits:
    """What an archive may hold. ``max_entry_bytes`` matches what a worker reads of one object (64 MiB)."""

    max_entries: int = 10_000
    max_entry_bytes: int = 64 * 1024 * 1024
    max_total_bytes: int = 1024 * 1024 * 1024
    max_ratio: float = 200.0
    ratio_floor_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class ArchiveItem:
    """One image of an archive: its flat name, its bytes, and the entry it came from."""

    name: str
    data: bytes
    entry: str


def is_zip(path: Path) -> bool:
    """Whether ``path`` is a file that reads as a zip archive (by content, not by name)."""
    return Path(path).is_file() and zipfile.is_zipfile(path)


def zip_images(path: Path, limits: ArchiveLimits = ArchiveLimits()) -> list[ArchiveItem]:
    """Every image in the zip at ``path``, in archive order; ArchiveError if the archive is refused."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            entries = _images(path, archive.infolist(), limits)
            for _ in _read_all(path, archive, entries, limits):  # first the whole archive within the limits
                pass
            items = [ArchiveItem(flat_name(info.filename), data, info.filename)
                     for info, data in _read_all(path, archive, entries, limits)]
    except ArchiveError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError, OSError) as exc:
        raise ArchiveError(f"{path}: not a readable zip archive ({type(exc).__name__}: {exc})") from None
    if not items:
        raise ArchiveError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this archive")
    return items


def sources(path: Path) -> list[tuple[Path, bytes | None]]:
    """What batch mode uploads for ``path``, as (path, bytes) for ``BatchClient.upload``: a zip's images (bytes read
    and checked here, path ``<archive name>/<item name>``), a folder's images or any other file as one image (bytes
    None: read at upload). ConfigError for a path that is none of these."""
    from hybrid.tools.batch import image_files  # the folder rule stays batch mode's own

    path = Path(path)
    if is_zip(path):
        return [(Path(path.name) / item.name, item.data) for item in zip_images(path)]
    if path.is_dir():
        return [(image, None) for image in image_files(path)]
    if path.is_file():
        return [(path, None)]  # whatever it holds: a worker that cannot classify it records why
    raise ConfigError(f"{path}: expected a folder of images, a zip archive of images or an image file")


def flat_name(entry: str) -> str:
    """The item name of an archive entry: its folders joined by ``_``."""
    return "_".join(part for part in entry.replace("\\", "/").split("/") if part)


def _images(path: Path, infos: list[zipfile.ZipInfo], limits: ArchiveLimits) -> list[zipfile.ZipInfo]:
    """The image entries, after refusing the archive for its entry count, a path trick, a link, encryption or
    declared sizes over the limits."""
    if len(infos) > limits.max_entries:
        raise ArchiveError(f"{path}: {len(infos)} entries, more than the {limits.max_entries} allowed")
    for info in infos:
        _check_entry(path, info, limits)
    declared = sum(info.file_size for info in infos if not info.is_dir())
    if declared > limits.max_total_bytes:
        raise ArchiveError(f"{path}: its entries declare {declared} bytes in all, more than the "
                           f"{limits.max_total_bytes} allowed")
    return [info for info in infos if _is_image_entry(info.filename) and not info.is_dir()]


def _check_entry(path: Path, info: zipfile.ZipInfo, limits: ArchiveLimits) -> None:
    name = info.filename
    unsafe = _unsafe_name(name)
    if unsafe:
        raise ArchiveError(f"{path}: entry {name!r} {unsafe}")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ArchiveError(f"{path}: entry {name!r} is a symbolic link")
    if info.flag_bits & 0x1:
        raise ArchiveError(f"{path}: entry {name!r} is encrypted")
    if info.file_size > limits.max_entry_bytes:
        raise ArchiveError(f"{path}: entry {name!r} declares {info.file_size} bytes, more than the "
                           f"{limits.max_entry_bytes} allowed")
    if info.file_size > limits.ratio_floor_bytes and info.file_size > limits.max_ratio * max(info.compress_size, 1):
        raise ArchiveError(f"{path}: entry {name!r} compresses {info.file_size} bytes into {info.compress_size}, "
                           f"more than {limits.max_ratio:g} to 1 (a zip bomb?)")


def _unsafe_name(name: str) -> str:
    """Why ``name`` may not be unpacked anywhere ('' when it may)."""
    slashed = name.replace("\\", "/")
    if slashed.startswith("/") or _DRIVE.match(slashed):
        return "has an absolute path"
    if ".." in PurePosixPath(slashed).parts:
        return "has a '..' part in its path"
    if "\x00" in name:
        return "has a NUL character in its name"
    return ""


def _is_image_entry(name: str) -> bool:
    parts = [part for part in name.replace("\\", "/").split("/") if part]
    if not parts or parts[0] == MAC_RESOURCE_FOLDER or any(part.startswith(".") for part in parts):
        return False
    return PurePosixPath(parts[-1]).suffix.lower() in IMAGE_SUFFIXES


def _read_all(path: Path, archive: zipfile.ZipFile, entries: list[zipfile.ZipInfo],
              limits: ArchiveLimits) -> Iterator[tuple[zipfile.ZipInfo, bytes]]:
    total = 0
    for info in entries:
        data = _read_entry(path, archive, info, limits, limits.max_total_bytes - total)
        total += len(data)
        yield info, data


def _read_entry(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: ArchiveLimits,
                total_left: int) -> bytes:
    """The entry's bytes, inflating no more than the limits allow, whatever its header declares."""
    cap = min(limits.max_entry_bytes, total_left)
    chunks, size = [], 0
    with archive.open(info) as stream:
        while chunk := stream.read(min(CHUNK_BYTES, cap + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                which = "the entry" if cap == limits.max_entry_bytes else "the archive in all"
                raise ArchiveError(f"{path}: entry {info.filename!r} inflates past {cap} bytes (declared "
                                   f"{info.file_size}): more than {which} may hold")
    if size > limits.ratio_floor_bytes and size > limits.max_ratio * max(info.compress_size, 1):
        raise ArchiveError(f"{path}: entry {info.filename!r} inflates {info.compress_size} bytes to {size}, "
                           f"more than {limits.max_ratio:g} to 1 (a zip bomb?)")
    return b"".join(chunks)
