"""The cache file's lines: one JSON object per line (see :mod:`web_tier.cache` for the format). Encodes records to
lines and decodes lines to records; also reads the old version-1 single document, to migrate it. No I/O."""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from web_tier.cache.entries import CachedResult, Evicted, ModelSwitch, Record, Stored, is_digest, is_number

FILE_VERSION = 2
OLD_VERSION = 1
OLD_KEY_SEPARATOR = "|"  # version 1 keys are "<model>|<sha256 hex>"
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


class Header(NamedTuple):
    """The first line of a file: its generation (a token new with every rewrite) and the current model then."""

    generation: str
    model: str


class CorruptFile(Exception):
    """The bytes are not a cache file of either version."""


def encode_header(header: Header) -> bytes:
    return _line({"version": FILE_VERSION, "generation": header.generation, "current_model": header.model})


def encode_records(records: Iterable[Record]) -> tuple[bytes, int]:
    """The lines of ``records``, in order, and how many there are."""
    lines = [_line(_record_object(record)) for record in records]
    return b"".join(lines), len(lines)


def decode_header(line: bytes) -> Header | None:
    """The header in a file's first line (without its newline); None when it is not a version-2 header."""
    document = _loads(line)
    if not isinstance(document, dict) or document.get("version") != FILE_VERSION:
        return None
    generation, model = document.get("generation"), document.get("current_model")
    return Header(generation, model) if isinstance(generation, str) and isinstance(model, str) else None


def decode_lines(data: bytes) -> Iterator[Record | None]:
    """The records of whole lines (``data`` ends with a newline or is empty), decoded as they are taken; None for a
    line that is not a well-formed record."""
    for line in data.split(b"\n")[:-1]:
        yield _decode_record(_loads(line))


def salvage(data: bytes) -> tuple[list[Record], bytes]:
    """What is left of a damaged file (its header, or more, unreadable): the records of its intact lines, in order,
    and its damaged lines (a partial last line too), each with its newline, for a person to look at."""
    intact: list[Record] = []
    damaged: list[bytes] = []
    for line in data.split(b"\n"):
        record = _decode_record(_loads(line)) if line else None
        if record is not None:
            intact.append(record)
        elif line:
            damaged.append(line + b"\n")
    return intact, b"".join(damaged)


def latest_model(records: list[Record]) -> str | None:
    """The current model that salvaged records stand for: the last model switch among them, else the model of the
    entry used last (the model of the latest put is the current one, and only its entries are hit). None when no
    entry is among them: there is nothing to keep."""
    entries = [record for record in records if isinstance(record, Stored)]
    if not entries:
        return None
    switches = [record.model for record in records if isinstance(record, ModelSwitch)]
    return switches[-1] if switches else max(entries, key=lambda entry: entry.last_used).model


def decode_old(data: bytes) -> tuple[str, Iterator[Stored | None]]:
    """A version-1 file (one JSON document): its current model and its entries, None for a malformed one. Raises
    CorruptFile when ``data`` is not such a document."""
    document = _loads(data)
    if document is None:
        raise CorruptFile("neither JSON lines with a version 2 header nor a JSON document")
    if not isinstance(document, dict) or document.get("version") != OLD_VERSION:
        raise CorruptFile(f"not a version {FILE_VERSION} or {OLD_VERSION} cache file")
    model, entries = document.get("current_model"), document.get("entries")
    if not isinstance(model, str) or not isinstance(entries, dict):
        raise CorruptFile("current_model or entries missing or of the wrong type")
    return model, (_decode_old_entry(key, value) for key, value in entries.items())


def _line(document: dict[str, Any]) -> bytes:
    return (_ENCODER.encode(document) + "\n").encode()


def _record_object(record: Record) -> dict[str, Any]:
    if isinstance(record, ModelSwitch):
        return {"current_model": record.model}
    if isinstance(record, Evicted):
        return {"model": record.model, "digest": record.digest, "last_used": record.last_used, "evicted": True}
    return {"model": record.model, "digest": record.digest, "label": record.result.label, "top5": record.result.top5,
            "last_used": record.last_used}


def _loads(text: bytes) -> Any:
    """The JSON value of ``text``; None when it is not JSON (or not UTF-8, or nested too deep to parse)."""
    try:
        return json.loads(text.decode("utf-8"))
    except (ValueError, RecursionError):
        return None


def _decode_record(document: Any) -> Record | None:
    if not isinstance(document, dict):
        return None
    if "digest" not in document:
        model = document.get("current_model")
        return ModelSwitch(model) if len(document) == 1 and isinstance(model, str) and model else None
    model, digest, last_used = document.get("model"), document.get("digest"), document.get("last_used")
    if not isinstance(model, str) or not model or not is_digest(digest) or not is_number(last_used):
        return None
    if document.get("evicted") is True:
        return Evicted(model, digest, float(last_used))
    return _stored(model, digest, document, float(last_used))


def _decode_old_entry(key: Any, value: Any) -> Stored | None:
    model, separator, digest = key.rpartition(OLD_KEY_SEPARATOR)
    if not separator or not model or not is_digest(digest) or not isinstance(value, dict):
        return None
    last_used = value.get("last_used")
    return _stored(model, digest, value, float(last_used)) if is_number(last_used) else None


def _stored(model: str, digest: str, value: dict[str, Any], last_used: float) -> Stored | None:
    top5 = value.get("top5")
    if not isinstance(top5, list):
        return None
    try:
        return Stored(model, digest, CachedResult(value.get("label"), tuple(top5), model), last_used)
    except (TypeError, ValueError):
        return None
