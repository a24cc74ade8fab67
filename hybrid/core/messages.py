"""The messages between the tiers, stated once.

A request carries S3 keys and ids, never image bytes, so it fits the request queue's 1 KB MaximumMessageSize::

    {"v": 1, "id": "<correlation id>", "key": "<input-bucket key>", "name": "<image name>", "reply_to": "<queue>",
     "request_id": "<the upload's request id, for log lines>"}

``request_id`` is optional (a message without it, or with one that is not a sane id, is valid and has "" there): it
is the upload's id as the web tier logged and returned it (``hybrid.core.logs``), not the correlation id, which
stays unique per message.

Batch mode puts no request on the queue itself: the input bucket's event notification does, for any key under
``batch/`` (``hybrid results --requeue`` sends the same shape for an object that was never notified).
``requests_from_body`` turns such an S3 event into requests that need no reply, a folder marker (a key ending in
``/``) and the S3 test event into none. The worker answers a batch request with a ``BatchRecord`` in the output
bucket, under ``result_key(input key)``.

A reply carries the label, the top-5, the model id, or an error for an image that could not be classified::

    {"v": 1, "id": ..., "name": ..., "key": <the request's key>, "label": "tabby", "top5": [["tabby", 0.61], ...],
     "model": ..., "error": ""}
"""
from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass, field

from hybrid.core.errors import HybridError
from hybrid.core.logs import sane_request_id

VERSION = 1
SAFE_NAME = re.compile(r"^[A-Za-z0-9._ +=@,()\[\]-]{1,200}$")
UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._ +=@,()\[\]-]+")
MAX_NAME_CHARS = 120
BATCH_PREFIX = "batch/"
RECORD_SUFFIX = ".json"
MAX_KEY_BYTES = 1024  # S3's limit on a key


class MalformedMessage(HybridError):
    """A message body that is not a valid request or reply."""


@dataclass(frozen=True)
class ClassifyRequest:
    id: str
    key: str
    name: str
    reply_to: str
    request_id: str = ""

    @property
    def log_id(self) -> str:
        """The id this request's log lines carry: its request id, else (an older message) its correlation id."""
        return self.request_id or self.id

    def to_body(self) -> str:
        fields = {"v": VERSION, "id": self.id, "key": self.key, "name": self.name, "reply_to": self.reply_to}
        if self.request_id:
            fields["request_id"] = self.request_id
        return json.dumps(fields, separators=(",", ":"))

    @classmethod
    def from_body(cls, body: str) -> "ClassifyRequest":
        data = _json_object(body)
        request = cls(**{k: _text(data, k) for k in ("id", "key", "name", "reply_to")},
                      request_id=sane_request_id(data.get("request_id")))
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


def result_key(input_key: str) -> str:
    """Where the output bucket holds a batch object's ``BatchRecord``: its input key plus ``.json``, or, for a key too
    long for that, ``batch/.long/<sha256 of the key>.json``."""
    key = input_key + RECORD_SUFFIX
    if len(key.encode()) <= MAX_KEY_BYTES:
        return key
    return f"{BATCH_PREFIX}.long/{hashlib.sha256(input_key.encode()).hexdigest()}{RECORD_SUFFIX}"


@dataclass(frozen=True)
class BatchRecord:
    """The answer to one batch object, stored under ``result_key(key)``: the label (and top-5) or the reason it could
    not be classified, and the SHA-256 of the bytes the worker read (empty when it read none)::

        {"v": 1, "key": "batch/a/cat.jpg", "sha256": "...", "label": "tabby", "top5": [...], "model": ..., "error": ""}
    """

    key: str
    sha256: str = ""
    label: str = ""
    top5: tuple[tuple[str, float], ...] = field(default_factory=tuple)
    model: str = ""
    error: str = ""

    @classmethod
    def of(cls, key: str, digest: str, reply: "ClassifyReply") -> "BatchRecord":
        return cls(key, digest, reply.label, reply.top5, reply.model, reply.error)

    def to_body(self) -> str:
        return json.dumps({"v": VERSION, "key": self.key, "sha256": self.sha256, "label": self.label,
                           "top5": [[label, round(p, 4)] for label, p in self.top5], "model": self.model,
                           "error": self.error}, separators=(",", ":"))

    @classmethod
    def from_body(cls, body: str) -> "BatchRecord":
        data = _json_object(body)
        reply = ClassifyReply.from_body(json.dumps({**data, "id": "record", "name": "record"}))
        return cls(_text(data, "key"), str(data.get("sha256", "")), reply.label, reply.top5, reply.model,
                   reply.error)


def requeue_body(key: str) -> str:
    """A message that asks for a batch object again, in the shape of the S3 event the bucket would have sent."""
    return json.dumps({"Records": [{"eventSource": "hybrid:requeue",
                                    "s3": {"object": {"key": urllib.parse.quote_plus(key, safe="/")}}}]},
                      separators=(",", ":"))


def requests_from_body(body: str) -> list[ClassifyRequest]:
    """The requests a queue message carries: one (from the web tier), one per S3 record of an object under
    ``batch/`` (batch mode, no reply; none for a folder marker), or none (the S3 test event). Raises
    ``MalformedMessage`` for anything else."""
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        raise MalformedMessage(f"not JSON: {body[:60]!r}") from None
    if isinstance(data, dict) and data.get("Event") == "s3:TestEvent":
        return []
    if isinstance(data, dict) and isinstance(data.get("Records"), list):
        requests = [_request_from_record(record) for record in data["Records"]]
        return [request for request in requests if request is not None]
    return [ClassifyRequest.from_body(body)]


def _request_from_record(record: object) -> ClassifyRequest | None:
    """Any key under ``batch/`` (S3 URL-encodes keys in events, ``+`` for a space); None for a folder marker."""
    try:
        key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])  # type: ignore[index]
    except (TypeError, KeyError):
        raise MalformedMessage("S3 event record without s3.object.key") from None
    if not key.startswith(BATCH_PREFIX):
        raise MalformedMessage(f"S3 event for a key outside {BATCH_PREFIX}: {key[:80]!r}")
    if key.endswith("/"):
        return None
    return ClassifyRequest(f"batch:{key}", key, image_name(key), reply_to="")
