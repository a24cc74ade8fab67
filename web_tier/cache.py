"""The web tier's durable result cache: image content + model id -> label, kept in one JSON file.

Key
    ``(model id, SHA-256 hex of the image bytes)``, never the file name: the same bytes uploaded under any name share
    one entry, different bytes never do. The web tier learns the model id only from a worker's reply, so the cache
    keeps a *current model*: the model of the most recent :meth:`ResultCache.put`, persisted in the file.
    :meth:`ResultCache.get` looks up ``(current model, digest)``; entries of other models stay (until evicted, and
    they go first) but never answer.

File format (version 1): one JSON document::

    {"version": 1, "current_model": "efficientnet-lite0@3", "entries": {
    "<model>|<sha256 hex>": {"label": "tabby", "top5": [["tabby", 0.91], ...], "last_used": 1732435200.5}, ...,
    ...
    }}

    ``last_used`` is in seconds on the cache's clock (epoch seconds by default). The writer puts the header on the
    first line, 100 entries per line, and ``}}`` on the last, so that reading and writing go a line per ``json``
    call and the server's other threads run in between (one ``json.loads`` of 100,000 entries holds the GIL for
    about a second). Any other layout of the same document reads as well, in one call. A missing file is an empty
    cache. A file that is not valid JSON of this shape, or cannot be read as a file, is logged as a warning and
    moved aside to ``<path>.corrupt-<UTC timestamp>``, and the cache starts empty: the server never fails on it.
    Malformed entries in a good file are skipped with one warning per read.

Atomic write
    Holding this instance's write lock and the sidecar ``fcntl.flock`` on ``<path>.lock`` (shared by every process
    using the file): re-read the file (skipped when it is still the one this instance last wrote), merge it into
    memory, evict, then write a temp file in the same folder, flush, ``os.fsync`` it, ``os.replace`` it over the
    file and ``os.fsync`` the folder. A reader sees the old file or the new one, never a part of either; a failed
    write leaves the old file and no temp file.

Merge rule
    The union of the file's entries and memory's; for a key in both, the one with the later ``last_used`` wins.
    The current model is this instance's if one of its puts changed the model since its last write, else the
    file's, so every process follows the latest model switch. The merged, evicted set becomes both memory and the
    file, so several processes (gunicorn workers) share one file without losing each other's entries.

Eviction rule (on every put and after every merge; at most ``max_entries`` entries)
    Entries of models other than the current one go first, least recently used first; then the current model's,
    least recently used first. ``last_used`` is set by a put and by every hit.

Writes are batched: puts and hits change memory and mark the cache dirty; a background thread writes when the cache
is dirty and ``flush_interval`` seconds have passed on the cache's clock since the last write. ``flush()`` writes now,
``close()`` stops the thread and writes. Every public method is thread-safe. Create a cache after forking (one per
gunicorn worker, in the app factory): the flusher thread does not survive a fork.

Cost, measured at 100,000 entries (a 37 MB file): a write takes about a second of CPU, a merge with a file another
process wrote about two; both run beside lookups, which wait at most for one 100-entry chunk under the lock.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self, TypeVar

from hybrid.core.clock import Clock, WallClock

logger = logging.getLogger(__name__)

FILE_VERSION = 1
KEY_SEPARATOR = "|"
_HEX_DIGITS = frozenset("0123456789abcdef")
_CLOCK_TOLERANCE = 1e-6  # seconds; absorbs float rounding in clock arithmetic
_CHUNK = 100  # entries per file line, per encode/parse call and per merge step under the lock: small enough
#              that a chunk's parsed objects die young and do not set off full garbage collections
_COMPACT = (",", ":")
_ENTRIES_OPEN = '"entries":{'
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CachedResult:
    """What the cache answers for an image: its label, the top five ``(label, probability)`` and the model."""

    label: str
    top5: tuple[tuple[str, float], ...]
    model: str

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not isinstance(self.model, str) or not self.model:
            raise ValueError("label must be a string and model a non-empty string")
        object.__setattr__(self, "top5", tuple(_checked_pair(pair) for pair in self.top5))


def image_digest(data: bytes) -> str:
    """The cache key's content part: the SHA-256 hex of the image bytes."""
    return hashlib.sha256(data).hexdigest()


def is_digest(text: object) -> bool:
    """Whether ``text`` is a lowercase SHA-256 hex digest, as :func:`image_digest` returns."""
    return isinstance(text, str) and len(text) == 64 and _HEX_DIGITS.issuperset(text)


def _checked_pair(pair: Any) -> tuple[str, float]:
    name, probability = pair
    if not isinstance(name, str) or not _is_number(probability):
        raise ValueError(f"top5 pairs are (label, finite number), not {pair!r}")
    return name, float(probability)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _Entry:
    __slots__ = ("last_used", "result")

    def __init__(self, result: CachedResult, last_used: float) -> None:
        self.result = result
        self.last_used = last_used


class _Snapshot(NamedTuple):
    """Every entry as three flat lists (file keys, results, last-used times): a few objects for the collector to
    scan while a write is encoded, not one per entry."""

    model: str
    keys: list[str]
    results: list[CachedResult]
    times: list[float]


class _Entries:
    """The entries in memory: the current model's and the others', each in least-recently-used order while
    ``in_order``. Model switches and merges add entries out of order; eviction re-sorts by ``last_used`` before it
    drops anything. No locks, no I/O."""

    def __init__(self) -> None:
        self.model = ""
        self.in_order = True
        self._current: OrderedDict[str, _Entry] = OrderedDict()
        self._others: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._current) + len(self._others)

    def touch(self, digest: str, now: float) -> CachedResult | None:
        """The current model's result for ``digest``, marked as used ``now``; None when there is none."""
        entry = self._current.get(digest)
        if entry is None:
            return None
        entry.last_used = now
        self._current.move_to_end(digest)
        return entry.result

    def put(self, digest: str, result: CachedResult, now: float) -> bool:
        """Stores ``result`` as the most recently used entry; True when it changed the current model."""
        switched = result.model != self.model
        if switched:
            self.switch_model(result.model)
        self._current[digest] = _Entry(result, now)
        self._current.move_to_end(digest)
        return switched

    def switch_model(self, model: str) -> None:
        for digest, entry in self._current.items():
            self._others[(self.model, digest)] = entry
        self._current.clear()
        for key in [key for key in self._others if key[0] == model]:
            self._current[key[1]] = self._others.pop(key)
        self.model = model
        self.in_order = False

    def is_newer(self, model: str, digest: str, last_used: float) -> bool:
        """Whether an entry used at ``last_used`` would replace what memory holds for this key (or fill its gap)."""
        mine = self._current.get(digest) if model == self.model else self._others.get((model, digest))
        return mine is None or last_used > mine.last_used

    def adopt(self, model: str, digest: str, entry: _Entry) -> None:
        if model == self.model:
            self._current[digest] = entry
        else:
            self._others[(model, digest)] = entry
        self.in_order = False

    def evict(self, max_entries: int) -> int:
        """Drops other models' entries, then the current model's, least recently used first, down to the cap."""
        if len(self) > max_entries and not self.in_order:
            self._sort()
        evicted = 0
        while len(self) > max_entries:
            (self._others or self._current).popitem(last=False)
            evicted += 1
        return evicted

    def snapshot(self) -> _Snapshot:
        """Every entry, other models' first."""
        keys = [f"{model}{KEY_SEPARATOR}{digest}" for model, digest in self._others]
        keys += [f"{self.model}{KEY_SEPARATOR}{digest}" for digest in self._current]
        entries = [*self._others.values(), *self._current.values()]
        return _Snapshot(self.model, keys, [entry.result for entry in entries], [entry.last_used for entry in entries])

    def _sort(self) -> None:
        self._current = OrderedDict(sorted(self._current.items(), key=lambda pair: pair[1].last_used))
        self._others = OrderedDict(sorted(self._others.items(), key=lambda pair: pair[1].last_used))
        self.in_order = True


class _FileContent(NamedTuple):
    model: str
    chunks: Iterator[list[tuple[str, Any]]]  # parsed as they are taken; raises _CorruptFile on a damaged one


class _FileId(NamedTuple):
    inode: int
    size: int
    mtime_ns: int


class _CorruptFile(Exception):
    pass


class ResultCache:
    """The durable, thread-safe result cache; see the module docstring for the key, file, merge and eviction rules."""

    def __init__(self, path: Path, max_entries: int, clock: Clock | None = None,
                 flush_interval: float | None = 0.5) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        if flush_interval is not None and flush_interval <= 0:
            raise ValueError(f"flush_interval must be positive or None, not {flush_interval}")
        self.path = Path(path)
        self.max_entries = max_entries
        self._clock: Clock = clock or WallClock()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._entries = _Entries()
        self._dirty = False
        self._model_switched = False
        self._hits = 0
        self._misses = 0
        self._seen: _FileId | None = None
        self._last_write = self._clock.now()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self._load()
        if flush_interval is not None:
            self._start_flusher(flush_interval)

    @property
    def current_model(self) -> str:
        """The model of the most recent put (here or, once merged, in another process); "" before any."""
        return self._entries.model

    @property
    def hits(self) -> int:
        return self._hits

    @property
    def misses(self) -> int:
        return self._misses

    @property
    def entries(self) -> int:
        return len(self._entries)

    @property
    def hit_rate(self) -> float:
        """Hits over lookups since this instance started; 0.0 before any lookup."""
        lookups = self._hits + self._misses
        return self._hits / lookups if lookups else 0.0

    def get(self, digest: str) -> CachedResult | None:
        """The current model's result for the image with this digest, or None. Before a miss counts, the file is
        read again if another process rewrote it since this one last read or wrote it (a stat per miss; a parse
        only when it changed), so every server process answers what any of them has classified and flushed."""
        result = self._touch(digest)
        if result is None and self._adopt_newer_file():
            result = self._touch(digest)
        with self._lock:
            if result is None:
                self._misses += 1
                return None
            self._hits += 1
            self._dirty = True
            return result

    def _touch(self, digest: str) -> CachedResult | None:
        with self._lock:
            return self._entries.touch(digest, self._clock.now())

    def _adopt_newer_file(self) -> bool:
        """Merges the file's newer entries if the file changed since this instance last saw it; True if it did.
        An unchanged file costs one stat and no lock, so a miss never waits behind a flush of this process's own."""
        if self._file_unchanged():
            return False
        with self._write_lock:
            try:
                content = self._read_file(skip_if_seen=True)
            except OSError as error:
                logger.warning("result cache %s: cannot read it (%s); answering from memory", self.path, error)
                return False
            if content is None:
                return False
            self._merge(content, switched_here=False)
        with self._lock:
            self._entries.evict(self.max_entries)
        return True

    def put(self, digest: str, result: CachedResult) -> None:
        """Stores ``result`` for the image with this digest; ``result.model`` becomes the current model."""
        if not is_digest(digest):
            raise ValueError(f"not a SHA-256 hex digest: {digest!r} (use image_digest(image bytes))")
        if not isinstance(result, CachedResult):
            raise TypeError(f"expected a CachedResult, not {type(result).__name__}")
        with self._lock:
            if self._entries.put(digest, result, self._clock.now()):
                self._model_switched = True
                logger.info("result cache %s: current model is now %s", self.path, result.model)
            self._entries.evict(self.max_entries)
            self._dirty = True

    def flush(self) -> None:
        """Merges with the file and writes it now, if anything changed since the last write. Raises OSError."""
        with self._write_lock:
            with self._lock:
                if not self._dirty:
                    return
                self._dirty = False
            try:
                self._merge_and_write()
            except BaseException:
                with self._lock:
                    self._dirty = True
                raise

    def close(self) -> None:
        """Stops the background flusher and writes what is pending. Safe to call twice."""
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
            self._flusher = None
        self.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def _load(self) -> None:
        try:
            with self._file_lock():
                content = self._read_file()
                if content is not None and not self._merge(content, switched_here=False):
                    self._entries = _Entries()
        except OSError as error:
            logger.warning("result cache %s: cannot read it (%s); starting empty", self.path, error)
            return
        self._entries.evict(self.max_entries)
        logger.info("result cache %s: %d entries, current model %r", self.path, self.entries, self.current_model)

    def _merge_and_write(self) -> None:
        with self._file_lock():
            content = self._read_file(skip_if_seen=True)
            with self._lock:
                switched, self._model_switched = self._model_switched, False
            try:
                if content is not None:
                    self._merge(content, switched)
                with self._lock:
                    self._entries.evict(self.max_entries)
                    snapshot = self._entries.snapshot()
                self._write(snapshot)
            except BaseException:
                with self._lock:
                    self._model_switched = self._model_switched or switched
                raise

    def _merge(self, content: _FileContent, switched_here: bool) -> bool:
        """Follows the file's model unless this instance switched since its last write, then adopts the file's
        entries that are newer than memory's. One chunk is parsed and adopted at a time, under the lock for that
        chunk only, so lookups go on and the parsed file never sits whole in memory. False when a damaged chunk
        made the file corrupt (it is moved aside; chunks adopted before it are valid entries and stay)."""
        with self._lock:
            if not (switched_here or self._model_switched) and content.model != self._entries.model:
                logger.info("result cache %s: following the file's current model %r", self.path, content.model)
                self._entries.switch_model(content.model)
        malformed = 0
        try:
            for chunk in content.chunks:
                with self._lock:
                    malformed += self._adopt(chunk)
        except _CorruptFile as error:
            self._move_aside(error)
            return False
        if malformed:
            logger.warning("result cache %s: ignored %d malformed entries", self.path, malformed)
        return True

    def _adopt(self, chunk: list[tuple[str, Any]]) -> int:
        """Takes the file's entries that are newer than memory's; returns how many were malformed."""
        malformed = 0
        for key, value in chunk:
            stamp = _decode_stamp(key, value)
            if stamp is None:
                malformed += 1
            elif self._entries.is_newer(*stamp):
                result = _decode_result(stamp[0], value)
                if result is None:
                    malformed += 1
                else:
                    self._entries.adopt(stamp[0], stamp[1], _Entry(result, stamp[2]))
        return malformed

    def _file_unchanged(self) -> bool:
        try:
            return _file_id(os.stat(self.path)) == self._seen
        except FileNotFoundError:
            return True
        except OSError:
            return False

    def _write(self, snapshot: _Snapshot) -> None:
        _write_atomic(self.path, _encode(snapshot))
        self._seen = _file_id(os.stat(self.path))
        self._last_write = self._clock.now()
        logger.debug("result cache %s: wrote %d entries", self.path, len(snapshot.keys))

    def _read_file(self, skip_if_seen: bool = False) -> _FileContent | None:
        """The file's content; None when it is missing, moved aside as unusable, or (skip_if_seen) unchanged.
        Other OSErrors (out of file descriptors, say) are raised: the file may be fine, so it is left alone."""
        try:
            with open(self.path, "rb") as file:
                seen = _file_id(os.fstat(file.fileno()))
                if skip_if_seen and seen == self._seen:
                    return None
                raw = file.read()
            content = _decode(raw)
        except FileNotFoundError:
            return None
        except (_CorruptFile, IsADirectoryError, PermissionError) as error:
            self._move_aside(error)
            return None
        self._seen = seen
        return content

    def _move_aside(self, reason: Exception) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        try:
            os.replace(self.path, target)
        except OSError as error:
            logger.warning("result cache %s is unusable (%s) and could not be moved aside (%s); ignoring it",
                           self.path, reason, error)
            return
        logger.warning("result cache %s is unusable (%s): moved it to %s", self.path, reason, target)

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)

    def _start_flusher(self, interval: float) -> None:
        self._flusher = threading.Thread(target=self._run_flusher, args=(interval,), name="result-cache-flusher",
                                         daemon=True)
        self._flusher.start()

    def _run_flusher(self, interval: float) -> None:
        while not self._stop.wait(self._pause(interval)):
            if self._dirty and self._write_due(interval):
                try:
                    self.flush()
                except Exception:
                    logger.exception("result cache %s: write failed; retrying in %g s", self.path, interval)

    def _until_next_write(self, interval: float) -> float:
        """Seconds on the clock until a write is allowed: ``interval`` after the last one."""
        return interval - (self._clock.now() - self._last_write)

    def _write_due(self, interval: float) -> bool:
        remaining = self._until_next_write(interval)
        return remaining <= _CLOCK_TOLERANCE or remaining > interval  # past due, or the clock went back

    def _pause(self, interval: float) -> float:
        remaining = self._until_next_write(interval)
        return remaining if _CLOCK_TOLERANCE < remaining <= interval else interval


def _file_id(stat: os.stat_result) -> _FileId:
    return _FileId(stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _chunks(sequence: list[T]) -> Iterator[list[T]]:
    for start in range(0, len(sequence), _CHUNK):
        yield sequence[start:start + _CHUNK]


def _encode(snapshot: _Snapshot) -> bytes:
    """The file: a header line, a line per chunk of entries, and ``}}``. One JSON document, encoded a chunk per call."""
    header = json.dumps({"version": FILE_VERSION, "current_model": snapshot.model}, separators=_COMPACT)[:-1]
    rows = [_encode_chunk(snapshot, start) for start in range(0, len(snapshot.keys), _CHUNK)]
    lines = [f"{header},{_ENTRIES_OPEN}", ",\n".join(rows), "}}"] if rows else [f"{header},{_ENTRIES_OPEN}", "}}"]
    return "\n".join(lines).encode()


def _encode_chunk(snapshot: _Snapshot, start: int) -> str:
    end = start + _CHUNK
    entries = {key: {"label": result.label, "top5": result.top5, "last_used": last_used} for key, result, last_used
               in zip(snapshot.keys[start:end], snapshot.results[start:end], snapshot.times[start:end])}
    return json.dumps(entries, separators=_COMPACT, allow_nan=False)[1:-1]


def _decode(raw: bytes) -> _FileContent:
    """The file's header, checked now, and its entries, parsed as they are taken. Raises _CorruptFile."""
    try:
        text = raw.decode("utf-8")
    except ValueError as error:
        raise _CorruptFile(f"not UTF-8: {error}") from None
    return _decode_lines(text) or _decode_whole(text)


def _decode_whole(text: str) -> _FileContent:
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise _CorruptFile(f"not JSON: {type(error).__name__}: {error}") from None
    model, entries = _checked_header(document)
    return _FileContent(model, _chunks(list(entries.items())))


def _decode_lines(text: str) -> _FileContent | None:
    """The file in this module's line layout, parsed a line per call so other threads run in between (one
    ``json.loads`` of 100,000 entries holds the GIL for a second); None when the text is laid out otherwise."""
    lines = text.split("\n")
    body = lines[1:-1]
    if len(lines) < 2 or not lines[0].endswith(_ENTRIES_OPEN) or lines[-1] != "}}" or not _well_joined(body):
        return None
    try:
        document = json.loads(lines[0] + "}}")
    except (ValueError, RecursionError):
        return None
    model, _ = _checked_header(document)
    return _FileContent(model, _line_chunks(body, text))


def _line_chunks(body: list[str], text: str) -> Iterator[list[tuple[str, Any]]]:
    for line in body:
        try:
            chunk = json.loads("{" + line.removesuffix(",") + "}")
        except (ValueError, RecursionError):
            yield from _decode_whole(text).chunks  # laid out like ours but not ours: parse it whole, or fail
            return
        yield list(chunk.items())


def _checked_header(document: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(document, dict) or document.get("version") != FILE_VERSION:
        raise _CorruptFile(f"not a version {FILE_VERSION} cache file")
    model, entries = document.get("current_model"), document.get("entries")
    if not isinstance(model, str) or not isinstance(entries, dict):
        raise _CorruptFile("current_model or entries missing or of the wrong type")
    return model, entries


def _well_joined(body: list[str]) -> bool:
    """Whether the lines join into one JSON object body: every line but the last ends with a comma."""
    return all(line.endswith(",") for line in body[:-1]) and not (body and body[-1].endswith(","))


def _decode_stamp(key: str, value: Any) -> tuple[str, str, float] | None:
    """``(model, digest, last_used)`` of a file entry, or None when its key or ``last_used`` is malformed."""
    model, separator, digest = key.rpartition(KEY_SEPARATOR)
    if not separator or not model or not is_digest(digest) or not isinstance(value, dict):
        return None
    last_used = value.get("last_used")
    return (model, digest, float(last_used)) if _is_number(last_used) else None


def _decode_result(model: str, value: dict[str, Any]) -> CachedResult | None:
    top5 = value.get("top5")
    if not isinstance(top5, list):
        return None
    try:
        return CachedResult(value.get("label"), tuple(top5), model)
    except (TypeError, ValueError):
        return None


def _write_atomic(path: Path, data: bytes) -> None:
    """Temp file in the same folder, flush, fsync, replace, fsync the folder. The old file stays if any step fails."""
    descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
