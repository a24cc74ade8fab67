"""The web tier's durable result cache: image content + model id -> label, kept in one JSON-lines file.

Parts: :mod:`.entries` (what a result is, the key, the LRU, the eviction rule, the current model), :mod:`.codec`
(lines <-> records), :mod:`.store` (the file: lock, reads since the last one, appends, compaction, the flusher
thread) and :mod:`.result_cache` (:class:`ResultCache`, which ties them together under its locks).

Key
    ``(model id, SHA-256 hex of the image bytes)``, never the file name: the same bytes uploaded under any name share
    one entry, different bytes never do. The web tier learns the model id only from a worker's reply, so the cache
    keeps a *current model*: the model of the most recent :meth:`ResultCache.put`, persisted in the file.
    :meth:`ResultCache.get` looks up ``(current model, digest)``; entries of other models stay (until evicted, and
    they go first) but never answer.

File format (version 2): JSON lines, one JSON object per line, each line ending in ``\\n``::

    {"version":2,"generation":"5f0c9a1e7b3d2c48","current_model":"<model>"}
    {"model":"<model>","digest":"<sha256 hex>","label":"tabby","top5":[["tabby",0.91],...],"last_used":1732435200.5}
    {"model":"<model>","digest":"<sha256 hex>","last_used":1732435100.0,"evicted":true}
    {"current_model":"<another model>"}

    The first line is the header: the format version, a generation token (new with every rewrite of the file) and the
    current model when the file was written. The lines after it form a journal, replayed in order: an entry (a put,
    or a hit that moved ``last_used``), an eviction (the entry is gone unless used later than its ``last_used``),
    a model switch. ``last_used`` is in seconds on the cache's clock (epoch seconds by default). A missing file is an
    empty cache. A line in a good file that is not a well-formed record (a malformed entry) is skipped, with one
    warning per read. A file whose first line is not a version-2 header, and that is not a version-1 file either,
    is damaged: its intact lines are kept (the current model is that of its last switch line, else of the entry
    used last), its damaged lines (a partial last one too) are written to ``<path>.corrupt-<UTC timestamp>`` for a
    person to look at, with a warning, and the file is rewritten at once with what was kept. One with no intact
    entry, or that cannot be read as a file, is moved aside whole to such a name, and the cache starts empty: the
    server never fails on it. Only the ``KEEP_DAMAGED`` (5) newest ``.corrupt-*`` copies are kept; older ones are
    deleted when another is made.

    Version 1 (one JSON document ``{"version": 1, "current_model": ..., "entries": {"<model>|<sha256 hex>":
    {"label", "top5", "last_used"}, ...}}``, in any layout) still loads: it is read whole and rewritten at once as
    version 2, so an existing deployment keeps its labels.

Writes, atomicity
    Every write holds the sidecar ``fcntl.flock`` on ``<path>.lock``, shared by every process using the file. Under
    it a writer first reads the lines appended since its last read, merges them (see below), then appends its own
    changes since its last write (the model switch, evictions, entries put or hit) with one ``os.write`` of whole
    lines to a descriptor opened with ``O_APPEND``, then ``os.fdatasync``: when a flush returns, its lines are on
    disk. Each process remembers how far it read
    (bytes, always at the end of a whole line) and which file that was (inode and header line, whose generation
    token tells a rewritten file from the one read): it reads only what was appended since, and everything again
    from the start when another process rewrote the file. A reader needs no lock: it takes whole lines only, and a
    partial last line (an append under way) is read once it is complete. A partial last line found under the lock
    is what a failed append left: it is cut off. A line is never changed once written.

Compaction
    When the file holds more than ``COMPACT_FACTOR`` (2) lines per live entry and more than ``COMPACT_MIN_LINES``
    (1000) lines, or when there is no file yet or it is in the old format, the write rewrites it instead: a new
    header and one line per live entry go to a temp file in the same folder, which is flushed and ``os.fsync``-ed,
    then ``os.replace`` puts it in the file's place, and the folder is ``os.fsync``-ed
    (``hybrid.core.files.write_atomically``). A reader sees the old file or the new one, never a part of either; a
    failed rewrite leaves the old file and no temp file.

Merge rule
    The union of the file's entries and memory's; for a key in both, the one with the later ``last_used`` wins, and
    an eviction read from the file drops memory's entry unless memory used it later. The current model follows the
    file's latest switch, unless a put here switched since this instance's last write: then this instance's switch
    is written after what it read, so it is the latest, and every process follows it. After a merge, memory is
    evicted down to the cap, so several processes (gunicorn workers) share one file without losing each other's
    entries.

Eviction rule (on every put and after every merge; at most ``max_entries`` entries)
    Entries of models other than the current one go first, least recently used first; then the current model's,
    least recently used first. ``last_used`` is set by a put and by every hit.

Writes are batched: puts and hits change memory and are remembered as changes; a background thread writes when
there are changes and ``flush_interval`` seconds have passed on the cache's clock since the last write. ``flush()``
writes now, ``close()`` stops the thread and writes. Every public method is thread-safe. Create a cache after forking
(one per gunicorn worker, in the app factory): the flusher thread does not survive a fork.

Cost: a write costs what changed since the last one (a line of about 300 bytes per entry put or hit, one of about
150 per eviction, plus parsing the lines other processes appended since), not the size of the cache. Measured at
100,000 entries (``benchmarks/bench_web.py --cache-only``; a 33 MB file): a put + flush takes about 0.1 ms of CPU
(the version-1 file, rewritten whole, took about 0.5 s, and 1 s after another process wrote). A rewrite of 100,000
entries takes about 0.7 s of CPU, once per 100,000 or more appended lines. A process reads the whole file when it
starts and after another process rewrote it: about 1.3 s of CPU for 100,000 lines, up to twice that for a journal
about to be compacted; a read merges a chunk of 100 records per hold of the lock, so lookups go on beside it.
"""
from web_tier.cache.entries import CachedResult, image_digest, is_digest
from web_tier.cache.result_cache import ResultCache

__all__ = ["CachedResult", "ResultCache", "image_digest", "is_digest"]
