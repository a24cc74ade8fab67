"""The messages between the tiers, stated once.

A request carries S3 keys and ids, never image bytes, so it fits the request queue's 1 KB MaximumMessageSize::

    {"v": 1, "id": "<correlation id>", "key": "<input-bucket key>", "name": "<image name>", "reply_to": "<queue>"}

A reply carries the label, the top-5, the model id, or an error for an image that could not be classified::

    {"v": 1, "id": ..., "name": ..., "key": <the request's key>, "label": "tabby", "top5": [["tabby", 0.61], ...],
     "model": ..., "error": ""}
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from hybrid.errors import HybridError

VERSION = 1
SAFE_NAME = re.compile(r"^[A-Za-z0-9._ +=@,()\[\]-]{1,200}$")


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
