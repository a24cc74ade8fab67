"""Objects in S3 buckets, by bucket and key: put, read, list, delete, and a download checked against the ETag.

**Checksum.** An object S3 wrote for someone else (an AMI export, say) has no SHA-256 of ours in its metadata, so
the ETag is the check: with SSE-S3 it is the MD5 of the object for a single-part upload, and for a multipart upload
(``<hex>-<parts>``) the MD5 of the parts' concatenated MD5s. The part size comes from ``HeadObject(PartNumber=1)``,
so the download recomputes the same digest while it streams. (With SSE-KMS the ETag is not an MD5 at all.)

Listings page with ``ContinuationToken`` through the mapped client, so every page's call raises the project's
errors (a botocore paginator would call S3 unmapped).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from hybrid.aws.session import MappedClient
from hybrid.core.errors import HybridError

CHUNK_BYTES = 8 * 1024 * 1024
OnProgress = Callable[[int, int], None]


class ChecksumMismatch(HybridError):
    """A downloaded object's digest differs from the one S3 reports for it."""


@dataclass(frozen=True)
class Download:
    """A verified download: its size, the ETag it matched and the SHA-256 of its bytes."""

    size: int
    etag: str
    sha256: str


class EtagHasher:
    """Recomputes an S3 ETag while bytes stream by: MD5 for one part, MD5 of part MD5s for ``part_size`` parts."""

    def __init__(self, part_size: int | None = None) -> None:
        self.part_size, self.parts, self.current, self.filled = part_size, [], hashlib.md5(), 0

    def update(self, data: bytes) -> None:
        while data:
            room = len(data) if not self.part_size else self.part_size - self.filled
            self.current.update(data[:room])
            self.filled += len(data[:room])
            data = data[room:]
            if self.part_size and self.filled == self.part_size:
                self._close_part()

    def _close_part(self) -> None:
        self.parts.append(self.current.digest())
        self.current, self.filled = hashlib.md5(), 0

    def etag(self) -> str:
        if not self.part_size:
            return self.current.hexdigest()
        if self.filled:
            self._close_part()
        return f"{hashlib.md5(b''.join(self.parts)).hexdigest()}-{len(self.parts)}"


class S3Objects:
    """The object operations of the tools and the image export, through one S3 client (``MappedClient``)."""

    def __init__(self, s3: MappedClient) -> None:
        self.s3 = s3

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=bucket, Key=key, Body=data)

    def read(self, bucket: str, key: str) -> bytes:
        """The object's bytes; ``NotFoundError`` when there is no such object."""
        return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    def any_under(self, bucket: str, prefix: str) -> bool:
        """Whether at least one key starts with ``prefix``."""
        return bool(self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount"))

    def keys(self, bucket: str, prefix: str) -> Iterator[str]:
        """Every key under ``prefix``, page after page."""
        yield from (item["Key"] for item in self._listed(bucket, prefix))

    def entries(self, bucket: str, prefix: str) -> Iterator[tuple[str, datetime]]:
        """Every key under ``prefix`` with its ``LastModified``, page after page."""
        yield from ((item["Key"], item["LastModified"]) for item in self._listed(bucket, prefix))

    def _listed(self, bucket: str, prefix: str) -> Iterator[dict]:
        more: dict[str, str] = {}
        while True:
            page = self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix, **more)
            yield from page.get("Contents", [])
            if not page.get("IsTruncated"):
                return
            more = {"ContinuationToken": page["NextContinuationToken"]}

    def delete(self, bucket: str, key: str) -> None:
        self.s3.delete_object(Bucket=bucket, Key=key)

    def download_verified(self, bucket: str, key: str, destination: Path,
                          on_progress: OnProgress | None = None) -> Download:
        """Streams the object to ``destination`` and checks it against its ETag; a mismatching file is deleted.

        ``on_progress(done, size)`` is called after every chunk.
        """
        head = self.s3.head_object(Bucket=bucket, Key=key)
        size, etag = int(head["ContentLength"]), head["ETag"].strip('"')
        hasher = EtagHasher(self.part_size(bucket, key, etag))
        sha256 = self._stream(bucket, key, destination, hasher, size, on_progress)
        if hasher.etag() != etag:
            destination.unlink(missing_ok=True)
            raise ChecksumMismatch(f"s3://{bucket}/{key}: downloaded bytes give ETag {hasher.etag()}, S3 reports "
                                   f"{etag}; the download was deleted, fetch it again")
        return Download(size, etag, sha256)

    def part_size(self, bucket: str, key: str, etag: str) -> int | None:
        """None for a single-part object; else the size of its first part (every part but the last)."""
        if "-" not in etag:
            return None
        return int(self.s3.head_object(Bucket=bucket, Key=key, PartNumber=1)["ContentLength"])

    def _stream(self, bucket: str, key: str, destination: Path, hasher: EtagHasher, size: int,
                on_progress: OnProgress | None) -> str:
        body = self.s3.get_object(Bucket=bucket, Key=key)["Body"]
        sha256, done = hashlib.sha256(), 0
        destination.parent.mkdir(parents=True, exist_ok=True)
        with open(destination, "wb") as out:
            for chunk in body.iter_chunks(CHUNK_BYTES):
                out.write(chunk)
                hasher.update(chunk)
                sha256.update(chunk)
                done += len(chunk)
                if on_progress:
                    on_progress(done, size)
        return sha256.hexdigest()
