"""The cache's entries in memory: what a result is, the key, the current model, least-recently-used order, the
eviction rule, and what changed since the last write. No locks, no I/O: :class:`~web_tier.cache.ResultCache` holds
the lock and :mod:`web_tier.cache.store` the file."""
from __future__ import annotations

import hashlib
import itertools
import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

_HEX_DIGITS = frozenset("0123456789abcdef")
_SETTLE_LIMIT = 1000  # entries moved to keep the order when one is merged; beyond, eviction re-sorts instead


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


def is_number(value: object) -> bool:
    """Whether ``value`` is a finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _checked_pair(pair: Any) -> tuple[str, float]:
    name, probability = pair
    if not isinstance(name, str) or not is_number(probability):
        raise ValueError(f"top5 pairs are (label, finite number), not {pair!r}")
    return name, float(probability)


class Stored(NamedTuple):
    """An entry as the file holds it: the key, the result and when it was last used."""

    model: str
    digest: str
    result: CachedResult
    last_used: float


class Evicted(NamedTuple):
    """An entry dropped by the eviction rule: gone unless used later than ``last_used``."""

    model: str
    digest: str
    last_used: float


class ModelSwitch(NamedTuple):
    """The current model changed to ``model``."""

    model: str


Record = Stored | Evicted | ModelSwitch


class _Entry:
    __slots__ = ("last_used", "result")

    def __init__(self, result: CachedResult, last_used: float) -> None:
        self.result = result
        self.last_used = last_used


class Changes(NamedTuple):
    """What changed in memory since the last write: the model if a put here switched to it, the keys of the entries
    put or hit, and the entries evicted."""

    model: str | None
    keys: set[tuple[str, str]]
    evicted: list[Evicted]


class Applied(NamedTuple):
    """What merging records did: how many were malformed (None), and whether the current model followed a switch."""

    malformed: int
    followed: bool


class Snapshot(NamedTuple):
    """Every entry and the current model, taken under the cache's lock as lists of references (copies in C, about
    10 ms at 100,000 entries); read the entries from it outside the lock with :meth:`stored`."""

    model: str
    other_keys: list[tuple[str, str]]
    others: list[_Entry]
    current_digests: list[str]
    current: list[_Entry]

    def stored(self) -> Iterator[Stored]:
        """Every entry, other models' first, each in least-recently-used order (if the cache was in order)."""
        for (model, digest), entry in zip(self.other_keys, self.others):
            yield Stored(model, digest, entry.result, entry.last_used)
        for digest, entry in zip(self.current_digests, self.current):
            yield Stored(self.model, digest, entry.result, entry.last_used)


class Entries:
    """The entries in memory: the current model's and the others', each in least-recently-used order while
    ``in_order``. A merged entry is put in its place (behind the entries used before it), so the order holds through
    merges; a model switch, or a merged entry older than many in memory, gives it up, and eviction then re-sorts by
    ``last_used`` before it drops anything. Also keeps what changed since :meth:`take_changes`, for the next write."""

    def __init__(self) -> None:
        self.model = ""
        self.in_order = True
        self._switched_here = False
        self._current: OrderedDict[str, _Entry] = OrderedDict()
        self._others: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._changed: set[tuple[str, str]] = set()
        self._evicted: list[Evicted] = []

    def __len__(self) -> int:
        return len(self._current) + len(self._others)

    @property
    def has_changes(self) -> bool:
        return self._switched_here or bool(self._changed) or bool(self._evicted)

    def touch(self, digest: str, now: float) -> CachedResult | None:
        """The current model's result for ``digest``, marked as used ``now``; None when there is none."""
        entry = self._current.get(digest)
        if entry is None:
            return None
        entry.last_used = now
        self._current.move_to_end(digest)
        self._changed.add((self.model, digest))
        return entry.result

    def put(self, digest: str, result: CachedResult, now: float) -> bool:
        """Stores ``result`` as the most recently used entry; True when it changed the current model."""
        switched = result.model != self.model
        if switched:
            self._switch_model(result.model)
            self._switched_here = True
        self._current[digest] = _Entry(result, now)
        self._current.move_to_end(digest)
        self._changed.add((self.model, digest))
        return switched

    def follow(self, model: str) -> bool:
        """Switches to a model another writer switched to, unless a put here switched since the last write (the
        later switch wins: this one is written after what was read). True when the current model changed."""
        if self._switched_here or model == self.model:
            return False
        self._switch_model(model)
        return True

    def apply(self, records: Iterable[Record | None]) -> Applied:
        """Merges records read from the file, in file order."""
        malformed, followed = 0, False
        for record in records:
            if isinstance(record, Stored):
                self._adopt(record)
            elif isinstance(record, Evicted):
                self._drop(record)
            elif isinstance(record, ModelSwitch):
                followed = self.follow(record.model) or followed
            else:
                malformed += 1
        return Applied(malformed, followed)

    def evict(self, max_entries: int) -> int:
        """Drops other models' entries, then the current model's, least recently used first, down to the cap."""
        if len(self) > max_entries and not self.in_order:
            self._sort()
        evicted = 0
        while len(self) > max_entries:
            if self._others:
                (model, digest), entry = self._others.popitem(last=False)
            else:
                model, (digest, entry) = self.model, self._current.popitem(last=False)
            self._changed.discard((model, digest))
            self._evicted.append(Evicted(model, digest, entry.last_used))
            evicted += 1
        return evicted

    def take_changes(self) -> Changes:
        """What changed since the last call, to be written; memory forgets it (see :meth:`give_back`). O(1)."""
        changes = Changes(self.model if self._switched_here else None, self._changed, self._evicted)
        self._changed, self._evicted, self._switched_here = set(), [], False
        return changes

    def give_back(self, changes: Changes) -> None:
        """Takes back changes whose write failed, so that the next write carries them."""
        self._switched_here = self._switched_here or changes.model is not None
        self._changed.update(changes.keys)
        self._evicted[:0] = changes.evicted

    def records(self, changes: Changes) -> list[Record]:
        """The changes as records to append, in the order a reader must apply them: the model switch, then the
        evictions, then the entries as memory holds them now (so that a key evicted and put again stays)."""
        records: list[Record] = [ModelSwitch(changes.model)] if changes.model is not None else []
        records += changes.evicted
        for model, digest in changes.keys:
            entry = self._find(model, digest)
            if entry is not None:
                records.append(Stored(model, digest, entry.result, entry.last_used))
        return records

    def snapshot(self) -> Snapshot:
        return Snapshot(self.model, list(self._others), list(self._others.values()), list(self._current),
                        list(self._current.values()))

    def _switch_model(self, model: str) -> None:
        if self._current and self._others:
            self.in_order = False  # the current model's entries join the others' behind them, whatever their time
        for digest, entry in self._current.items():
            self._others[(self.model, digest)] = entry
        self._current.clear()
        for key in [key for key in self._others if key[0] == model]:
            self._current[key[1]] = self._others.pop(key)
        self.model = model

    def _slot(self, model: str, digest: str) -> tuple[OrderedDict[Any, _Entry], Any]:
        """Where the entry of this key lives (or would): the current model's LRU by digest, or the others' by key."""
        return (self._current, digest) if model == self.model else (self._others, (model, digest))

    def _find(self, model: str, digest: str) -> _Entry | None:
        lru, key = self._slot(model, digest)
        return lru.get(key)

    def _adopt(self, record: Stored) -> None:
        """Takes a file entry used later than memory's (or filling its gap): the later ``last_used`` wins."""
        lru, key = self._slot(record.model, record.digest)
        mine = lru.get(key)
        if mine is not None and record.last_used <= mine.last_used:
            return
        self.in_order = _place(lru, key, _Entry(record.result, record.last_used), self.in_order)
        self._changed.discard((record.model, record.digest))

    def _drop(self, record: Evicted) -> None:
        """Drops an entry another writer evicted, unless memory used it later than that writer had."""
        lru, key = self._slot(record.model, record.digest)
        mine = lru.get(key)
        if mine is None or mine.last_used > record.last_used:
            return
        del lru[key]
        self._changed.discard((record.model, record.digest))

    def _sort(self) -> None:
        self._current = OrderedDict(sorted(self._current.items(), key=lambda pair: pair[1].last_used))
        self._others = OrderedDict(sorted(self._others.items(), key=lambda pair: pair[1].last_used))
        self.in_order = True


def _place(entries: OrderedDict[Any, _Entry], key: Any, entry: _Entry, in_order: bool) -> bool:
    """Puts ``entry`` behind the entries used no later than it, moving the newer ones behind it (they are the last
    few: a merged entry is recent). Returns whether the order still holds: not when it did not before, nor when more
    than ``_SETTLE_LIMIT`` entries would move (eviction re-sorts then)."""
    entries.pop(key, None)
    entries[key] = entry
    if not in_order:
        return False
    newer = []
    for other in itertools.islice(reversed(entries), 1, None):
        if entries[other].last_used <= entry.last_used:
            break
        if len(newer) == _SETTLE_LIMIT:
            return False
        newer.append(other)
    for other in reversed(newer):
        entries.move_to_end(other)
    return True
