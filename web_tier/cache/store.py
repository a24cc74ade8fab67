"""The cache file on disk (see :mod:`web_tier.cache` for the format and the rules): the sidecar lock, reading what was
appended since the last read, appending lines, rewriting the whole file (compaction, migration), moving a corrupt
file aside; and the background thread that writes batches."""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple, Protocol

from hybrid.core.clock import Clock
from hybrid.core.files import write_atomically
from web_tier.cache import codec
from web_tier.cache.entries import Record, Snapshot

logger = logging.getLogger(__name__)

COMPACT_FACTOR = 2  # the file is rewritten when it holds more than this many lines per live entry...
COMPACT_MIN_LINES = 1000  # ... and more than this many lines
KEEP_DAMAGED = 5  # copies of damaged files (or their damaged lines) kept beside the file; older ones are deleted
_CLOCK_TOLERANCE = 1e-6  # seconds; absorbs float rounding in clock arithmetic


class Batch(NamedTuple):
    """What one read found: the file's current model when it was read from the start (else None), and its records
    in file order (None for a malformed line), decoded as they are taken."""

    model: str | None
    records: Iterator[Record | None]


class _Position(NamedTuple):
    """How far this process has read the file, and which file that was."""

    inode: int
    header: bytes  # the first line, newline included: its generation token tells a rewrite from the file read
    offset: int  # bytes read, always up to the end of a whole line
    lines: int  # record lines read (the header not counted)


class _FileId(NamedTuple):
    inode: int
    size: int
    mtime_ns: int


class Journal:
    """One process's view of the cache file: where it stopped reading, and the writes. Not thread-safe: the cache
    calls it under its write lock, and holds :meth:`locked` for every read that may change the file and every
    write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.outdated = False  # the last locked read found a version-1 or damaged file: the next write rewrites it
        self._position: _Position | None = None
        self._seen: _FileId | None = None

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Holds the sidecar ``fcntl.flock`` on ``<path>.lock``, shared by every process using the file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)

    def changed(self) -> bool:
        """Whether the file may hold lines this process has not read: one stat, no lock."""
        try:
            return _file_id(os.stat(self.path)) != self._seen
        except FileNotFoundError:
            return False
        except OSError:
            return True

    def read(self, locked: bool) -> Batch | None:
        """The whole lines appended since the last read; all of them when the file is not the one read last (another
        process rewrote it, or it is new). None when there is nothing new, no file, or a file this read cannot use.
        A partial last line (an append under way) is left for a later read. Only a ``locked`` read acts on a bad
        file: it keeps the intact lines of one whose header is damaged and puts only the damaged lines aside, moves
        one with no intact entry aside whole, cuts a partial last line left by a failed append, and reads a
        version-1 file (the first and last set ``outdated``: the next write rewrites the file). Raises OSError for
        other errors (out of descriptors, say): the file may be fine, so it is left alone."""
        try:
            with open(self.path, "rb") as file:
                stat = os.fstat(file.fileno())
                start = self._position.offset if self._continues(file.fileno(), stat) else 0
                file.seek(start)
                data = file.read()
        except FileNotFoundError:
            self._position, self._seen = None, None
            return None
        except (IsADirectoryError, PermissionError) as error:
            if locked:
                self._move_aside(error)
            return None
        self._seen = _file_id(stat)
        if start:
            return self._read_on(data, locked)
        return self._read_from_start(data, stat.st_ino, locked)

    def needs_rewrite(self, live_entries: int) -> bool:
        """Whether the next write rewrites the file: there is none (or it was moved aside), it is in the old
        format, or it holds more than ``COMPACT_FACTOR`` lines per live entry and ``COMPACT_MIN_LINES`` lines."""
        position = self._position
        return (position is None or self.outdated
                or position.lines > max(COMPACT_FACTOR * live_entries, COMPACT_MIN_LINES))

    def append(self, records: list[Record]) -> None:
        """Appends the records' lines with one ``os.write``, then syncs them. Call under :meth:`locked`, after
        :meth:`read` found the file current (``needs_rewrite`` false)."""
        position = self._position
        assert position is not None, "append to a file that was read"
        data, lines = codec.encode_records(records)
        if not data:
            return
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            written = os.write(descriptor, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"short write to {self.path}: {written} of {len(data)} bytes")
            os.fdatasync(descriptor)
            stat = os.fstat(descriptor)
        finally:
            os.close(descriptor)
        self._position = position._replace(offset=position.offset + len(data), lines=position.lines + lines)
        self._seen = _file_id(stat)
        logger.debug("result cache %s: appended %d lines", self.path, lines)

    def rewrite(self, snapshot: Snapshot) -> None:
        """Replaces the file with one holding only ``snapshot``, under a new generation. Call under :meth:`locked`."""
        header = codec.encode_header(codec.Header(secrets.token_hex(8), snapshot.model))
        body, lines = codec.encode_records(snapshot.stored())
        write_atomically(self.path, (header, body), sync_folder=True)
        stat = os.stat(self.path)
        self._position = _Position(stat.st_ino, header, len(header) + len(body), lines)
        self._seen = _file_id(stat)
        self.outdated = False
        logger.info("result cache %s: rewrote it with %d entries", self.path, lines)

    def _continues(self, descriptor: int, stat: os.stat_result) -> bool:
        """Whether the open file is the one read last, grown or not (same inode and header, not shorter)."""
        position = self._position
        return (position is not None and stat.st_ino == position.inode and stat.st_size >= position.offset
                and os.pread(descriptor, len(position.header), 0) == position.header)

    def _read_on(self, data: bytes, locked: bool) -> Batch | None:
        position = self._position
        assert position is not None
        whole = self._whole_lines(data, position.offset, locked)
        if not whole:
            return None
        self._position = position._replace(offset=position.offset + len(whole),
                                           lines=position.lines + whole.count(b"\n"))
        return Batch(None, codec.decode_lines(whole))

    def _read_from_start(self, data: bytes, inode: int, locked: bool) -> Batch | None:
        end = data.find(b"\n")
        header = codec.decode_header(data[:end]) if end >= 0 else None
        if header is None:
            return self._read_headless(data) if locked else None
        whole = self._whole_lines(data, 0, locked)
        self._position = _Position(inode, data[:end + 1], len(whole), whole.count(b"\n") - 1)
        self.outdated = False
        return Batch(header.model, codec.decode_lines(whole[end + 1:]))

    def _read_headless(self, data: bytes) -> Batch | None:
        """A file whose first line is no version-2 header: a version-1 document (read, and rewritten at the next
        write), else a damaged journal whose intact lines are kept, else nothing usable (moved aside whole)."""
        try:
            model, entries = codec.decode_old(data)
        except codec.CorruptFile as error:
            return self._salvage(data, error)
        logger.info("result cache %s: found a version %d file; it is rewritten as version %d at the next write",
                    self.path, codec.OLD_VERSION, codec.FILE_VERSION)
        self._position, self.outdated = None, True
        return Batch(model, entries)

    def _salvage(self, data: bytes, reason: Exception) -> Batch | None:
        """Keeps the intact lines of a file whose header is damaged: their records are merged and the file is
        rewritten at the next write (``outdated``); only the damaged lines are put aside. A file with no intact entry
        is moved aside whole."""
        intact, damaged = codec.salvage(data)
        model = codec.latest_model(intact)
        if model is None:
            self._move_aside(reason)
            return None
        logger.warning("result cache %s is damaged (%s): kept its %d intact lines, put its %d damaged ones (%d bytes) "
                       "in %s; it is rewritten at the next write", self.path, reason, len(intact),
                       damaged.count(b"\n"), len(damaged), self._put_aside(damaged) if damaged else "no file")
        self._prune_aside()
        self._position, self.outdated = None, True
        return Batch(model, iter(intact))

    def _put_aside(self, damaged: bytes) -> str:
        """Writes the damaged lines to a new ``.corrupt-*`` file; where they went, for the log."""
        target = self._aside_path()
        try:
            write_atomically(target, damaged)
        except OSError as error:
            return f"no file ({error})"
        return str(target)

    def _aside_path(self) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        return self.path.with_name(f"{self.path.name}.corrupt-{stamp}")

    def _prune_aside(self) -> None:
        """Deletes all but the ``KEEP_DAMAGED`` newest damaged copies (their names sort by time); a folder is left."""
        copies = sorted(self.path.parent.glob(f"{self.path.name}.corrupt-*"), reverse=True)
        for old in copies[KEEP_DAMAGED:]:
            try:
                old.unlink()
            except IsADirectoryError:
                continue
            except OSError as error:
                logger.warning("result cache %s: cannot delete the old damaged copy %s (%s)", self.path, old, error)
                continue
            logger.info("result cache %s: deleted the old damaged copy %s", self.path, old.name)

    def _whole_lines(self, data: bytes, start: int, locked: bool) -> bytes:
        """``data`` up to the end of its last whole line. Under the lock no append is under way, so a partial last
        line is what a failed append left: it is cut off the file, and the next append starts on a line of its own."""
        whole = data[:data.rfind(b"\n") + 1]
        if locked and len(whole) < len(data):
            os.truncate(self.path, start + len(whole))
            logger.warning("result cache %s: cut a partial last line (%d bytes) left by a failed write", self.path,
                           len(data) - len(whole))
        return whole

    def _move_aside(self, reason: Exception) -> None:
        target = self._aside_path()
        self._position, self._seen, self.outdated = None, None, False
        try:
            os.replace(self.path, target)
        except OSError as error:
            logger.warning("result cache %s is unusable (%s) and could not be moved aside (%s); ignoring it",
                           self.path, reason, error)
            return
        logger.warning("result cache %s is unusable (%s): moved it to %s", self.path, reason, target)
        self._prune_aside()


class Flushable(Protocol):
    """What :class:`Flusher` writes: something with pending changes, a time of last write and a flush."""

    path: Path

    @property
    def pending(self) -> bool: ...

    @property
    def last_write(self) -> float: ...

    def flush(self) -> None: ...


class Flusher:
    """A daemon thread that flushes ``target`` when it has pending changes and ``interval`` seconds have passed on
    ``clock`` since its last write. A failed write is logged and tried again an interval later."""

    def __init__(self, target: Flushable, clock: Clock, interval: float) -> None:
        self._target, self._clock, self._interval = target, clock, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="result-cache-flusher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stops the thread and waits for it (and a write under way). Safe to call twice."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._pause()):
            if self._target.pending and self._write_due():
                try:
                    self._target.flush()
                except Exception:
                    logger.exception("result cache %s: write failed; retrying in %g s", self._target.path,
                                     self._interval)

    def _until_next_write(self) -> float:
        """Seconds on the clock until a write is allowed: ``interval`` after the last one."""
        return self._interval - (self._clock.now() - self._target.last_write)

    def _write_due(self) -> bool:
        remaining = self._until_next_write()
        return remaining <= _CLOCK_TOLERANCE or remaining > self._interval  # past due, or the clock went back

    def _pause(self) -> float:
        remaining = self._until_next_write()
        return remaining if _CLOCK_TOLERANCE < remaining <= self._interval else self._interval


def _file_id(stat: os.stat_result) -> _FileId:
    return _FileId(stat.st_ino, stat.st_size, stat.st_mtime_ns)
