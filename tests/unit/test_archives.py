"""The zip guard of batch mode: what an archive may hold, what is skipped, what refuses it whole."""
from __future__ import annotations

import io
import stat
import struct
import zipfile
from pathlib import Path

import pytest

from hybrid.core.errors import ConfigError
from hybrid.tools.archives import ArchiveError, ArchiveLimits, flat_name, is_zip, sources, zip_images

SMALL = ArchiveLimits(max_entries=10, max_entry_bytes=4096, max_total_bytes=10_000, max_ratio=50,
                      ratio_floor_bytes=1024)


def make_zip(path: Path, entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def test_images_come_out_in_order_with_flat_names_and_the_rest_is_skipped(tmp_path):
    path = make_zip(tmp_path / "photos.zip", {
        "cat.jpg": b"cat", "trip/day 1/dog.PNG": b"dog", "trip/": b"", "notes.txt": b"n", ".hidden.jpg": b"h",
        "trip/.cache/x.jpg": b"x", "__MACOSX/trip/._dog.PNG": b"m", "bird.webp": b"bird"})
    items = zip_images(path)
    assert [(i.name, i.data) for i in items] == [("cat.jpg", b"cat"), ("trip_day 1_dog.PNG", b"dog"),
                                                 ("bird.webp", b"bird")]
    assert items[1].entry == "trip/day 1/dog.PNG"


@pytest.mark.parametrize("name, reason", [
    ("/etc/cron.d/x.jpg", "absolute path"), ("C:/x.jpg", "absolute path"), ("C:\\x.jpg", "absolute path"),
    ("\\\\server\\share\\x.jpg", "absolute path"), ("a/../../x.jpg", "'..' part"), ("..\\x.jpg", "'..' part"),
])
def test_a_path_trick_refuses_the_archive(tmp_path, name, reason):
    path = make_zip(tmp_path / "trick.zip", {"ok.jpg": b"ok", name: b"evil"})
    with pytest.raises(ArchiveError, match=reason):
        zip_images(path)


def test_a_symbolic_link_refuses_the_archive(tmp_path):
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo("link.jpg")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="symbolic link"):
        zip_images(path)


def test_an_encrypted_entry_refuses_the_archive(tmp_path):
    path = make_zip(tmp_path / "secret.zip", {"a.jpg": b"a"}, zipfile.ZIP_STORED)
    raw = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set bit 0 of both flag fields
        at = raw.index(signature) + offset
        raw[at:at + 2] = struct.pack("<H", struct.unpack("<H", raw[at:at + 2])[0] | 1)
    path.write_bytes(bytes(raw))
    with pytest.raises(ArchiveError, match="encrypted"):
        zip_images(path)


def test_too_many_entries(tmp_path):
    path = make_zip(tmp_path / "many.zip", {f"{i}.jpg": b"x" for i in range(11)})
    with pytest.raises(ArchiveError, match="11 entries, more than the 10"):
        zip_images(path, SMALL)


def test_an_entry_that_declares_too_much(tmp_path):
    path = make_zip(tmp_path / "big.zip", {"big.jpg": b"\x01\x02" * 2100})
    with pytest.raises(ArchiveError, match="declares 4200 bytes"):
        zip_images(path, SMALL)


def test_entries_that_declare_too_much_together(tmp_path):
    path = make_zip(tmp_path / "total.zip", {f"{i}.jpg": bytes(range(256)) * 12 for i in range(4)})
    with pytest.raises(ArchiveError, match="declare 12288 bytes in all"):
        zip_images(path, SMALL)


def test_a_zip_bomb_by_ratio(tmp_path):
    """A megabyte of zeros in a few kilobytes: the classic bomb's shape, refused by its declared ratio."""
    path = make_zip(tmp_path / "bomb.zip", {"bomb.jpg": bytes(3 * 1024 * 1024)})
    with pytest.raises(ArchiveError, match="more than 200 to 1"):
        zip_images(path)


def lie_about_size(path: Path, declared: int) -> None:
    """Rewrites the uncompressed size in the local and central headers (the archive's only entry)."""
    raw = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = raw.index(signature) + offset
        raw[at:at + 4] = struct.pack("<I", declared)
    path.write_bytes(bytes(raw))


def test_a_lying_small_declared_size_stops_at_it_and_fails_the_crc(tmp_path):
    """zipfile inflates only what the header declares, so the bytes past it are never read; the CRC then fails."""
    path = make_zip(tmp_path / "liar.zip", {"liar.jpg": bytes(range(256)) * 64})
    lie_about_size(path, 100)
    with pytest.raises(ArchiveError, match="not a readable zip archive"):
        zip_images(path, SMALL)


def test_inflating_stops_at_the_limit_whatever_the_header_says(tmp_path, monkeypatch):
    """A header that declares 100 bytes over an entry that inflates to 10240, read by a reader that trusts the data
    rather than the header (zipfile itself stops at the declared size): reading stops one byte past the limit."""
    path = make_zip(tmp_path / "grows.zip", {"grows.jpg": bytes(range(256)) * 40})
    lie_about_size(path, 100)
    reads = []

    class Inflating(io.BytesIO):
        def read(self, n=-1):
            reads.append(n)
            return super().read(n)
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, name, *a, **k: Inflating(bytes(range(256)) * 40))
    with pytest.raises(ArchiveError, match=r"inflates past 4096 bytes \(declared 100\)"):
        zip_images(path, SMALL)
    assert reads and all(0 < n <= 4097 for n in reads)


def test_not_a_zip_and_no_images(tmp_path):
    (tmp_path / "fake.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ArchiveError, match="not a readable zip archive"):
        zip_images(tmp_path / "fake.zip")
    with pytest.raises(ArchiveError, match="no images"):
        zip_images(make_zip(tmp_path / "text.zip", {"a.txt": b"a"}))


def test_a_truncated_archive(tmp_path):
    path = make_zip(tmp_path / "cut.zip", {"a.jpg": bytes(range(256)) * 100})
    data = path.read_bytes()
    path.write_bytes(data[:60] + data[-200:])
    with pytest.raises(ArchiveError):
        zip_images(path)


def test_sources_of_a_zip_a_folder_and_a_file(tmp_path):
    zipped = make_zip(tmp_path / "set.zip", {"a/cat.jpg": b"cat"})
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "dog.jpg").write_bytes(b"dog")
    (tmp_path / "folder" / "notes.txt").write_text("n")
    assert sources(zipped) == [(Path("set.zip") / "a_cat.jpg", b"cat")]
    assert sources(tmp_path / "folder") == [(tmp_path / "folder" / "dog.jpg", None)]
    assert sources(tmp_path / "folder" / "dog.jpg") == [(tmp_path / "folder" / "dog.jpg", None)]
    assert is_zip(zipped) and not is_zip(tmp_path / "folder") and not is_zip(tmp_path / "folder" / "dog.jpg")
    with pytest.raises(ConfigError):
        sources(tmp_path / "missing")


def test_flat_name():
    assert flat_name("a/b\\c.jpg") == "a_b_c.jpg" and flat_name("x.jpg") == "x.jpg"


def test_an_in_memory_zip_is_detected_by_content_not_name(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.jpg", b"x")
    (tmp_path / "archive.bin").write_bytes(buffer.getvalue())
    assert [i.name for i in zip_images(tmp_path / "archive.bin")] == ["x.jpg"]
