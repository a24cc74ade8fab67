"""A small Python API for batch mode::

    from hybrid.tools import api
    api.init()                       # settings from hybrid.toml / HYBRID_* like the CLI; or api.init(settings)
    api.upload("photos/cat.jpg")     # a file, a folder or a zip of images; or upload under batch/ with any S3 client
    api.upload_zip("photos.zip")     # every image of a zip archive (checked whole first)
    api.list_results()               # [BatchResult(name, digest, label, error, key, state), ...]
    api.requeue()                    # requests again the images that are not queued
    api.wait(600)                    # until none is pending (the states as they are at the timeout)
    api.download("labels/")          # results.csv and one <name>.txt per label
"""
from __future__ import annotations

import os
from pathlib import Path

from hybrid.core.errors import HybridError
from hybrid.core.settings import Settings, load
from hybrid.tools.archives import ArchiveError, is_zip, sources
from hybrid.tools.batch import BatchClient, BatchResult, Submission

_client: BatchClient | None = None


def init(settings: Settings | None = None) -> BatchClient:
    """Connects to the stack and makes its input bucket notify the request queue."""
    global _client
    _client = BatchClient(settings or load(None, os.environ))
    _client.init()
    return _client


def _current() -> BatchClient:
    if _client is None:
        raise HybridError("call hybrid.tools.api.init() first")
    return _client


def upload(path: str | Path) -> Submission | list[Submission]:
    """One image file (its Submission), or a folder or zip archive of images (one Submission each; a zip is checked
    whole first, see ``hybrid.tools.archives``: ArchiveError when refused)."""
    client, path = _current(), Path(path)
    submissions = [client.upload(source, data) for source, data in sources(path)]
    return submissions[0] if path.is_file() and not is_zip(path) else submissions


def upload_zip(path: str | Path) -> list[Submission]:
    """Every image of a zip archive (as the seed design's ``upload_zip``)."""
    if not is_zip(Path(path)):
        raise ArchiveError(f"{path}: not a zip archive")
    client = _current()
    return [client.upload(source, data) for source, data in sources(Path(path))]


def list_results() -> list[BatchResult]:
    return _current().list_results()


def requeue() -> list[BatchResult]:
    return _current().requeue()


def wait(timeout: float) -> list[BatchResult]:
    return _current().wait(timeout)


def download(out_dir: str | Path) -> Path:
    return _current().download(Path(out_dir))
