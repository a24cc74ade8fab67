"""Scan a machine image's disk, byte by byte, for credentials: what no image may carry.

The disk (qcow2, VMDK or raw) is read as raw bytes through ``qemu-img convert`` into a sparse temporary file, so
files that were deleted but whose blocks were never trimmed are read too. It looks for:

- AWS access key ids (``AKIA``/``ASIA`` + 16), except AWS's documented examples (``...EXAMPLE``), which botocore's
  service descriptions quote;
- a secret access key written after its name (``aws_secret_access_key = <40 characters>``);
- a private key with its body (``-----BEGIN ... PRIVATE KEY-----`` and base64 after it; OpenSSH's binaries hold the
  header alone, as a format marker);
- the signature of a presigned URL (``X-Amz-Signature=<64 hex>``): the wheelhouse link a builder was given;
- any exact strings the caller knows to be secret (the credentials it used, say).

Each finding is placed, where the disk is one ext4 file system (the project's images: no partition table), with
e2fsprogs' ``debugfs`` (``icheck``/``ncheck``, read-only): the file that holds it, or free space (a deleted file's
leftover). Some libraries carry keys that are not secrets: ``TEST_VECTOR_FILES`` names them (GnuTLS compiles the
keys of its power-on self-tests into itself), and ``secrets_only`` leaves findings in those files out.
"""
from __future__ import annotations

import fnmatch
import mmap
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hybrid.core.errors import HybridError

CHUNK = 64 * 1024 * 1024
OVERLAP = 4096  # longer than any match: a finding cut by a chunk's end is found whole in the next chunk
PATTERNS = {
    "AWS access key id": re.compile(rb"(?<![A-Z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Z0-9])"),
    "AWS secret access key": re.compile(rb"aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])"),
    "private key": re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----\r?\n[A-Za-z0-9+/=\r\n]{64}"),
    "presigned URL signature": re.compile(rb"X-Amz-Signature=[0-9a-f]{64}"),
}
DOCUMENTED_EXAMPLE = re.compile(rb"EXAMPLE")
FREE_SPACE = "(free space)"
TEST_VECTOR_FILES = ("/usr/lib/x86_64-linux-gnu/libgnutls.so.*",)  # GnuTLS's self-test keys, public in its source


@dataclass(frozen=True)
class Finding:
    """One credential-like match: what it looks like, where on the disk, and a redacted excerpt."""

    kind: str
    offset: int
    excerpt: str
    path: str = ""  # the file that holds it, FREE_SPACE, or "" where the disk is not one ext4 file system

    def __str__(self) -> str:
        return f"{self.kind} at byte {self.offset}{f' in {self.path}' if self.path else ''}: {self.excerpt}"


def secrets_only(findings: Iterable[Finding]) -> list[Finding]:
    """The findings that are not in a library's known test vectors (``TEST_VECTOR_FILES``)."""
    return [f for f in findings if not any(fnmatch.fnmatch(f.path, pattern) for pattern in TEST_VECTOR_FILES)]


def scan_disk(disk: Path, known_secrets: Iterable[str] = ()) -> list[Finding]:
    """Every credential-like match on ``disk``, with ``known_secrets`` searched for as exact strings."""
    with tempfile.TemporaryDirectory(prefix="hybrid-scan-") as work:
        raw = Path(work) / "disk.raw"
        _convert_to_raw(disk, raw)
        return locate(raw, scan_raw(raw, known_secrets))


def scan_raw(raw: Path, known_secrets: Iterable[str] = ()) -> list[Finding]:
    patterns = dict(PATTERNS)
    for secret in known_secrets:
        if secret:
            patterns[f"known secret {secret[:4]}…"] = re.compile(re.escape(secret.encode()))
    findings: dict[tuple[str, int], Finding] = {}
    for start, chunk in _chunks(raw):
        for kind, pattern in patterns.items():
            for match in pattern.finditer(chunk):
                if kind == "AWS access key id" and DOCUMENTED_EXAMPLE.search(match.group()):
                    continue
                offset = start + match.start()
                findings.setdefault((kind, offset), Finding(kind, offset, _redacted(match.group())))
    return sorted(findings.values(), key=lambda f: f.offset)


def locate(raw: Path, findings: list[Finding]) -> list[Finding]:
    """``findings`` with the file (or free space) each lies in, when ``raw`` is one ext4 file system."""
    block_size = _ext4_block_size(raw)
    if not findings or not block_size:
        return findings
    blocks = sorted({f.offset // block_size for f in findings})
    inodes = _parse_pairs(_debugfs(raw, "icheck " + " ".join(map(str, blocks))))
    paths = _parse_pairs(_debugfs(raw, "ncheck " + " ".join(sorted({i for i in inodes.values() if i.isdigit()}))))
    placed = []
    for finding in findings:
        inode = inodes.get(str(finding.offset // block_size), "")
        path = paths.get(inode, "") if inode.isdigit() else FREE_SPACE
        placed.append(Finding(finding.kind, finding.offset, finding.excerpt, path or f"(inode {inode})"))
    return placed


def _ext4_block_size(raw: Path) -> int:
    if shutil.which("debugfs") is None:
        return 0
    match = re.search(r"^Block size:\s+(\d+)", _debugfs(raw, "stats -h"), re.MULTILINE)
    return int(match.group(1)) if match else 0


def _debugfs(raw: Path, request: str) -> str:
    done = subprocess.run(["debugfs", "-R", request, str(raw)], capture_output=True, text=True, check=False)
    return done.stdout if done.returncode == 0 else ""


def _parse_pairs(output: str) -> dict[str, str]:
    """``icheck``/``ncheck`` tables (a header line, then ``key<TAB>value``) as a dict."""
    pairs = [line.split("\t", 1) for line in output.splitlines()[1:] if "\t" in line]
    return {key.strip(): value.strip() for key, value in pairs}


def _chunks(raw: Path) -> Iterator[tuple[int, bytes]]:
    size = raw.stat().st_size
    if size == 0:
        return
    with raw.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
        start = 0
        while start < size:
            end = min(size, start + CHUNK + OVERLAP)
            chunk = view[start:end]
            if chunk.count(0) != len(chunk):  # an unallocated stretch of a sparse disk reads as zeros
                yield start, chunk
            start += CHUNK


def _redacted(found: bytes) -> str:
    text = found.decode("ascii", "replace").replace("\n", " ")
    return text[:12] + "…" if len(text) > 12 else text


def _convert_to_raw(disk: Path, raw: Path) -> None:
    try:
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(disk), str(raw)], check=True, capture_output=True,
                       text=True)
    except FileNotFoundError:
        raise HybridError("qemu-img is not installed: install qemu-utils (apt-get install qemu-utils)") from None
    except subprocess.CalledProcessError as exc:
        raise HybridError(f"qemu-img could not read {disk}: {exc.stderr.strip()}") from None
