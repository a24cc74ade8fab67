"""Log lines of the service processes: text or JSON (``log.format``), each with the request id it belongs to.

A request id follows one upload from the web tier to the worker and back: the web tier makes one per upload (or
keeps a sane incoming ``X-Request-Id``), returns it in its reply's ``X-Request-Id`` header and puts it in the
request message (``ClassifyRequest.request_id``); the worker logs it on its lines for that job. Code that works for
one request runs inside ``request_scope(id)``; ``RequestIdFilter`` (on the handlers ``use_format`` sets up) copies
the id onto every record made there, unless the record carries its own (``extra={"request_id": ...}``).

A JSON line::

    {"ts": "2026-12-07T20:41:10.123Z", "level": "INFO", "logger": "web_tier.requests", "message": "POST / 200 ...",
     "process": 4242, "request_id": "9f0c..."}

(``request_id`` only on lines that have one; ``exc`` with the traceback where there is one.)
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time
import uuid
from typing import Any, Callable, Iterator, TypeVar

REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("hybrid_request_id", default="")
T = TypeVar("T")


def new_request_id() -> str:
    return uuid.uuid4().hex


def sane_request_id(value: object) -> str:
    """``value`` when it is a sane request id (a string of 1-64 letters, digits, ``.``, ``_``, ``:`` or ``-``), else
    ""."""
    return value if isinstance(value, str) and REQUEST_ID_PATTERN.fullmatch(value) else ""


def current_request_id() -> str:
    return _request_id.get()


def enter_request(request_id: str) -> contextvars.Token[str]:
    """From now on (in this thread or task) log lines carry ``request_id``; ``leave_request(token)`` ends that."""
    return _request_id.set(request_id)


def leave_request(token: contextvars.Token[str]) -> None:
    _request_id.reset(token)


@contextlib.contextmanager
def request_scope(request_id: str) -> Iterator[None]:
    """Log lines made inside carry ``request_id`` (in this thread or task only)."""
    token = enter_request(request_id)
    try:
        yield
    finally:
        leave_request(token)


def in_request_scope(request_id: str, call: Callable[..., T], *args: Any) -> T:
    """``call(*args)`` inside ``request_scope(request_id)``: for work handed to a thread pool."""
    with request_scope(request_id):
        return call(*args)


class RequestIdFilter(logging.Filter):
    """Gives each record ``request_id``: its own, else the current scope's, else ""."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", ""):
            record.request_id = _request_id.get()
        return True


class TextFormatter(logging.Formatter):
    """The usual text line, with `` [request_id=...]`` at its end when the record has one."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", "")
        return f"{line} [request_id={request_id}]" if request_id else line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts (UTC, ms), level, logger, message, process, request_id, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"ts": _utc(record.created), "level": record.levelname, "logger": record.name,
                                 "message": record.getMessage(), "process": record.process}
        if getattr(record, "request_id", ""):
            entry["request_id"] = record.request_id  # type: ignore[attr-defined]
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


def _utc(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


def formatter(kind: str) -> logging.Formatter:
    if kind not in FORMATS:
        raise ValueError(f"log format {kind!r}: expected one of {', '.join(FORMATS)}")
    return JsonFormatter() if kind == "json" else TextFormatter()


def use_format(kind: str, logger: logging.Logger | None = None) -> None:
    """Puts ``kind``'s formatter and the request-id filter on ``logger``'s handlers (the root logger's by default;
    one on stderr is added when it has none)."""
    target = logger or logging.getLogger()
    if not target.handlers and logger is None:
        target.addHandler(logging.StreamHandler(sys.stderr))
    for handler in target.handlers:
        handler.setFormatter(formatter(kind))
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())
