"""The messages between the tiers, stated once.

A request carries S3 keys and ids, never image bytes, so it fits the request queue's 1 KB MaximumMessageSize::

    {"v": 1, "id": "<correlation id>", "key": "<input-bucket key>", "name": "<image name>", "reply_to": "<queue>"}

Batch mode puts no request on the queue itself: the input bucket's event notification does, for keys under
``batch/<sha256>/<file name>``. ``requests_from_body`` turns such an S3 event into requests that need no reply,
and the S3 test event into none.

A reply carries the label, the top-5, the model id, or an error for an image that could not be classified::

    {"v": 1, "id": ..., "name": ..., "key": <the request's key>, "label": "tabby", "top5": [["tabby", 0.61], ...],
     "model": ..., "error": ""}
"""
from __future__ import annotations

import json
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass, field

from hybrid.core.errors import HybridError

VERSION = 1
SAFE_NAME = re.compile(r"^[A-Za-z0-9._ +=@,()\[\]-]{1,200}$")
UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._ +=@,()\[\]-]+")
MAX_NAME_CHARS = 120
BATCH_PREFIX = "batch/"


class MalformedMessage(HybridError):
    """A message body that is not a valid request or reply."""


@dataclass(frozen=True)
class ClassifyRequest:
    id: str
    key: str
    name: str
    reply_to: str

    def to_body(self) -> str:
        return json.dumps({"v": VERSION, "id": self.id, "key": self.key, "name": self.name,
                           "reply_to": self.reply_to}, separators=(",", ":"))

    @classmethod
    def from_body(cls, body: str) -> "ClassifyRequest":
        data = _json_object(body)
        request = cls(**{k: _text(data, k) for k in ("id", "key", "name", "reply_to")})
        if not SAFE_NAME.match(request.name) or request.name in (".", ".."):
            raise MalformedMessage(f"request {request.id}: unsafe image name {request.name[:50]!r}")
        return request


@dataclass(frozen=True)
class ClassifyReply:
    id: str
    name: str
    label: str = ""
    top5: tuple[tuple[str, float], ...] = field(default_factory=tuple)
    model: str = ""
    error: str = ""
    key: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    def to_body(self) -> str:
        return json.dumps({"v": VERSION, "id": self.id, "name": self.name, "key": self.key, "label": self.label,
                           "top5": [[label, round(p, 4)] for label, p in self.top5], "model": self.model,
                           "error": self.error}, separators=(",", ":"))

    @classmethod
    def from_body(cls, body: str) -> "ClassifyReply":
        data = _json_object(body)
        try:
            top5 = tuple((str(label), float(p)) for label, p in data.get("top5", []))
        except (TypeError, ValueError):
            raise MalformedMessage("reply: top5 must be [[label, probability], ...]") from None
        return cls(id=_text(data, "id"), name=_text(data, "name"), label=str(data.get("label", "")), top5=top5,
                   model=str(data.get("model", "")), error=str(data.get("error", "")), key=str(data.get("key", "")))


def _json_object(body: str) -> dict:
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        raise MalformedMessage(f"not JSON: {body[:60]!r}") from None
    if not isinstance(data, dict) or data.get("v") != VERSION:
        raise MalformedMessage(f"not a version-{VERSION} message: {body[:60]!r}")
    return data


def _text(data: dict, key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedMessage(f"field {key!r} missing or not a string")
    return value


def image_name(filename: str) -> str:
    """The name a reply and an output key use: the file name without folders or extension, made safe."""
    base = re.split(r"[\\/]", filename)[-1]
    stem = base.rsplit(".", 1)[0] if "." in base.strip(".") else base
    cleaned = "".join(c for c in unicodedata.normalize("NFKC", stem) if unicodedata.category(c)[0] != "C")
    cleaned = UNSAFE_CHARACTERS.sub("_", cleaned).strip(" ._")[:MAX_NAME_CHARS].strip(" ._")
    return cleaned or "image"


def batch_key(digest: str, filename: str) -> str:
    """Where batch mode uploads an image: under its content hash, keeping a safe file name."""
    return f"{BATCH_PREFIX}{digest}/{image_name(filename)}"


def requests_from_body(body: str) -> list[ClassifyRequest]:
    """The requests a queue message carries: one (from the web tier), one per S3 record (batch mode, no reply),
    or none (the S3 test event). Raises ``MalformedMessage`` for anything else."""
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        raise MalformedMessage(f"not JSON: {body[:60]!r}") from None
    if isinstance(data, dict) and data.get("Event") == "s3:TestEvent":
        return []
    if isinstance(data, dict) and isinstance(data.get("Records"), list):
        return [_request_from_record(record) for record in data["Records"]]
    return [ClassifyRequest.from_body(body)]


def _request_from_record(record: object) -> ClassifyRequest:
    try:
        key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])  # type: ignore[index]
    except (TypeError, KeyError):
        raise MalformedMessage("S3 event record without s3.object.key") from None
    parts = key.split("/")
    if len(parts) != 3 or f"{parts[0]}/" != BATCH_PREFIX or not re.fullmatch(r"[0-9a-f]{64}", parts[1]):
        raise MalformedMessage(f"S3 event for a key outside batch/<sha256>/<name>: {key[:80]!r}")
    return ClassifyRequest(f"batch:{parts[1]}", key, image_name(parts[2]), reply_to="")
