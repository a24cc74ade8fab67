"""The disk scan finds credentials anywhere in a disk's bytes, and lets OpenSSH's format markers and AWS's
documented example keys through."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from hybrid.machine_images import disk_scan
from hybrid.machine_images.disk_scan import FREE_SPACE, Finding, scan_disk, scan_raw, secrets_only

KEY_BODY = b"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZWQyNTUxOQAAACD" * 2


def disk_with(tmp_path, *pieces: tuple[int, bytes], size: int = 1 << 20):
    raw = tmp_path / "disk.raw"
    with raw.open("wb") as handle:
        handle.truncate(size)
        for offset, data in pieces:
            handle.seek(offset)
            handle.write(data)
    return raw


def kinds(findings):
    return sorted({f.kind for f in findings})


def test_finds_each_kind_of_credential(tmp_path):
    raw = disk_with(tmp_path, (100, b"key=AKIAZ7Q2EXAMPL3ABCDE;"),
                    (5000, b"aws_secret_access_key = " + b"a" * 20 + b"/B+" + b"c" * 17 + b"\n"),
                    (9000, b"-----BEGIN OPENSSH PRIVATE KEY-----\n" + KEY_BODY + b"\n"),
                    (20000, b"https://h/b/k?X-Amz-Signature=" + b"0123456789abcdef" * 4 + b"&x"),
                    (30000, b"the token s3cr3t-t0ken-value here"))

    findings = scan_raw(raw, known_secrets=["s3cr3t-t0ken-value"])

    assert kinds(findings) == ["AWS access key id", "AWS secret access key", "known secret s3cr…",
                               "presigned URL signature", "private key"]
    assert [f.offset for f in findings if f.kind == "AWS access key id"] == [104]
    assert all("…" in f.excerpt or len(f.excerpt) <= 12 for f in findings)  # never the whole secret


def test_format_markers_and_documented_examples_are_not_credentials(tmp_path):
    raw = disk_with(tmp_path, (100, b"\x00-----BEGIN OPENSSH PRIVATE KEY-----\n\x00%s: bad format\x00"),
                    (4000, b'"AccessKeyId": "AKIAIOSFODNN7EXAMPLE"'),
                    (8000, b"config['aws_secret_access_key'] = value"))

    assert scan_raw(raw) == []


def test_a_credential_across_a_chunk_boundary_is_found_once(tmp_path, monkeypatch):
    monkeypatch.setattr(disk_scan, "CHUNK", 4096)
    monkeypatch.setattr(disk_scan, "OVERLAP", 512)
    raw = disk_with(tmp_path, (4096 - 10, b"AKIAZ7Q2EXAMPL3ABCDE"), size=64 * 1024)

    findings = scan_raw(raw)

    assert [(f.kind, f.offset) for f in findings] == [("AWS access key id", 4086)]


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img (qemu-utils) is not installed")
def test_reads_a_qcow2_disk_through_qemu_img(tmp_path):
    raw = disk_with(tmp_path, (300000, b"AKIAZ7Q2EXAMPL3ABCDE"))
    qcow2 = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(qcow2)], check=True)

    assert [(f.kind, f.offset) for f in scan_disk(qcow2)] == [("AWS access key id", 300000)]


def test_keys_in_a_librarys_test_vectors_are_not_secrets_but_leftovers_in_free_space_are():
    findings = [Finding("private key", 1, "-----BEGIN P…", "/usr/lib/x86_64-linux-gnu/libgnutls.so.30.34.3"),
                Finding("private key", 2, "-----BEGIN O…", FREE_SPACE),
                Finding("private key", 3, "-----BEGIN O…", "/etc/ssh/ssh_host_ed25519_key")]

    assert [f.offset for f in secrets_only(findings)] == [2, 3]


@pytest.mark.skipif(shutil.which("mkfs.ext4") is None or shutil.which("debugfs") is None,
                    reason="e2fsprogs (mkfs.ext4, debugfs) is not installed")
def test_findings_are_placed_in_their_file_or_in_free_space(tmp_path):
    content = tmp_path / "root"
    (content / "etc").mkdir(parents=True)
    (content / "etc" / "creds").write_bytes(b"x" * 5000 + b"AKIAZ7Q2EXAMPL3ABCDE")
    raw = tmp_path / "fs.raw"
    subprocess.run(["mkfs.ext4", "-q", "-b", "4096", "-d", str(content), str(raw), "8M"], check=True)
    with raw.open("r+b") as handle:  # a leftover in a block no file uses (the end of the file system)
        handle.seek(8 * 1024 * 1024 - 4096)
        handle.write(b"AKIAQ7Q2EXAMPL3ABCDE")

    placed = {f.excerpt[:5]: f.path for f in scan_disk(raw)}

    assert placed == {"AKIAZ": "/etc/creds", "AKIAQ": FREE_SPACE}
