"""The result cache's public face: the entries in memory (:mod:`.entries`) and the file (:mod:`.store`) under the
cache's locks. The rules (key, format, merge, eviction, batching) are in :mod:`web_tier.cache`."""
from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from hybrid.core.clock import Clock, WallClock
from web_tier.cache.entries import CachedResult, Entries, is_digest
from web_tier.cache.store import Batch, Flusher, Journal

logger = logging.getLogger(__name__)

_CHUNK = 100  # records merged per hold of the lock: lookups wait at most for one chunk while a file is merged
T = TypeVar("T")


class ResultCache:
    """The durable, thread-safe result cache; see :mod:`web_tier.cache` for the key, file, merge and eviction rules.

    ``_lock`` guards the entries and counters and is held briefly; ``_write_lock`` lets one thread at a time read or
    write the file (a flush, or a miss reading what other processes appended), so lookups never wait for I/O."""

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
        self._entries = Entries()
        self._journal = Journal(self.path)
        self._hits = 0
        self._misses = 0
        self._last_write = self._clock.now()
        self._flusher: Flusher | None = None
        self._load()
        if flush_interval is not None:
            self._flusher = Flusher(self, self._clock, flush_interval)
            self._flusher.start()

    @property
    def current_model(self) -> str:
        """The model of the most recent put (here or, once read, in another process); "" before any."""
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

    @property
    def pending(self) -> bool:
        """Whether memory holds changes (puts, hits, evictions, a model switch) not yet written."""
        return self._entries.has_changes

    @property
    def last_write(self) -> float:
        """When this instance last wrote the file, on its clock (its start before any write)."""
        return self._last_write

    def get(self, digest: str) -> CachedResult | None:
        """The current model's result for the image with this digest, or None. Before a miss counts, the lines other
        processes appended since this one last read are read (a stat per miss; a read and parse only when the file
        changed), so every server process answers what any of them has classified and flushed."""
        result = self._touch(digest)
        if result is None and self._read_new_lines():
            result = self._touch(digest)
        with self._lock:
            if result is None:
                self._misses += 1
                return None
            self._hits += 1
            return result

    def put(self, digest: str, result: CachedResult) -> None:
        """Stores ``result`` for the image with this digest; ``result.model`` becomes the current model."""
        if not is_digest(digest):
            raise ValueError(f"not a SHA-256 hex digest: {digest!r} (use image_digest(image bytes))")
        if not isinstance(result, CachedResult):
            raise TypeError(f"expected a CachedResult, not {type(result).__name__}")
        with self._lock:
            if self._entries.put(digest, result, self._clock.now()):
                logger.info("result cache %s: current model is now %s", self.path, result.model)
            self._entries.evict(self.max_entries)

    def flush(self) -> None:
        """Reads what other processes appended, then appends what changed here (or rewrites the file, see the
        compaction rule), now, if anything changed since the last write. Raises OSError."""
        with self._write_lock:
            with self._lock:
                if not self._entries.has_changes:
                    return
            with self._journal.locked():
                self._read_locked()
                self._write()
            self._last_write = self._clock.now()

    def close(self) -> None:
        """Stops the background flusher and writes what is pending. Safe to call twice."""
        if self._flusher is not None:
            self._flusher.stop()
            self._flusher = None
        self.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def _touch(self, digest: str) -> CachedResult | None:
        with self._lock:
            return self._entries.touch(digest, self._clock.now())

    def _load(self) -> None:
        try:
            with self._journal.locked():
                self._read_locked()
                if self._journal.outdated:
                    self._migrate()
        except OSError as error:
            logger.warning("result cache %s: cannot read it (%s); starting empty", self.path, error)
            return
        logger.info("result cache %s: %d entries, current model %r", self.path, self.entries, self.current_model)

    def _migrate(self) -> None:
        """Rewrites a version-1 file in the journal format now, so that other processes read the new one."""
        try:
            self._write()
        except OSError as error:
            logger.warning("result cache %s: cannot rewrite it in the new format (%s); trying again at the next "
                           "write", self.path, error)

    def _read_new_lines(self) -> bool:
        """Merges what other processes appended since the last read; True if there was anything. An unchanged file
        costs one stat and no lock, so a miss never waits behind a flush of this process's own."""
        if not self._journal.changed():
            return False
        with self._write_lock:
            try:
                batch = self._journal.read(locked=False)
            except OSError as error:
                logger.warning("result cache %s: cannot read it (%s); answering from memory", self.path, error)
                return False
            if batch is None:
                return False
            self._merge(batch)
        return True

    def _read_locked(self) -> None:
        batch = self._journal.read(locked=True)
        if batch is not None:
            self._merge(batch)

    def _merge(self, batch: Batch) -> None:
        """Merges what was read, a chunk of records per hold of the lock, then evicts down to the cap."""
        with self._lock:
            followed = batch.model is not None and self._entries.follow(batch.model)
        malformed = 0
        for chunk in _chunks(batch.records):
            with self._lock:
                applied = self._entries.apply(chunk)
            malformed, followed = malformed + applied.malformed, followed or applied.followed
        with self._lock:
            self._entries.evict(self.max_entries)
        if malformed:
            logger.warning("result cache %s: ignored %d malformed entries", self.path, malformed)
        if followed:
            logger.info("result cache %s: following the file's current model %r", self.path, self.current_model)

    def _write(self) -> None:
        """Appends the changes, or rewrites the file when the journal says so. Call holding the file lock."""
        with self._lock:
            rewrite = self._journal.needs_rewrite(len(self._entries))
            changes = self._entries.take_changes()
            snapshot = self._entries.snapshot() if rewrite else None
            records = [] if rewrite else self._entries.records(changes)
        try:
            if snapshot is not None:
                self._journal.rewrite(snapshot)
            else:
                self._journal.append(records)
        except BaseException:
            with self._lock:
                self._entries.give_back(changes)
            raise


def _chunks(items: Iterable[T]) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, _CHUNK)):
        yield chunk
