"""Reading one uploaded image from a multipart request, with every bad case a clear 4xx and nothing enqueued."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from werkzeug.datastructures import FileStorage, MultiDict

from hybrid.core.decoding import BadImageError, check_decodable
from hybrid.core.errors import HybridError
from hybrid.core.messages import image_name


class UploadError(HybridError):
    """A request the web tier refuses; ``status`` is the HTTP code to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes
    digest: str


def read_upload(files: MultiDict, max_bytes: int) -> Upload:
    """The one file of a multipart upload (field inputFile or myfile, or any single file field), not yet decoded:
    a cache hit needs no decoding (its bytes were classified before), a miss is checked with ``check_image``."""
    storage = _the_one_file(files)
    data = storage.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UploadError(413, f"the image is larger than the {max_bytes}-byte limit")
    if not data:
        raise UploadError(400, "the uploaded file is empty")
    return Upload(image_name(storage.filename or ""), data, hashlib.sha256(data).hexdigest())


def _the_one_file(files: MultiDict) -> FileStorage:
    uploads = [(field, f) for field, f in files.items(multi=True) if isinstance(f, FileStorage)]
    if not uploads:
        raise UploadError(400, "no file in the request: send one image as multipart/form-data field 'inputFile'")
    if len(uploads) > 1:
        fields = ", ".join(sorted({field for field, _ in uploads}))
        raise UploadError(400, f"send exactly one file per request (got {len(uploads)}: {fields})")
    return uploads[0][1]


def check_image(data: bytes) -> None:
    """Vets the bytes as the worker will decode them (``hybrid.core.decoding.check_decodable``): not an image, a format
    not allowed, truncated, corrupt, a bomb or too large is refused here. A PNG is checked whole without decoding a
    pixel; other formats are decoded (a JPEG at reduced scale) within the process's decode budget."""
    try:
        check_decodable(data)
    except BadImageError as exc:
        raise UploadError(415 if "not an image" in str(exc) else 400, str(exc)) from None
