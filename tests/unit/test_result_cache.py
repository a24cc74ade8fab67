"""The web tier's JSON-lines result cache: key, persistence, appends and rewrites, the old format, merging across
processes, eviction, threads."""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import multiprocessing
import os
import random
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

from hybrid.core.clock import FakeClock
from web_tier.cache import CachedResult, ResultCache, codec, image_digest, store
from web_tier.cache import entries as cache_entries


def result(label: str, model: str = "m1") -> CachedResult:
    return CachedResult(label, ((label, 0.75), ("other", 0.125)), model)


def digest(name: object) -> str:
    return image_digest(f"image bytes {name}".encode())


def read_document(path: Path) -> dict:
    """The file replayed as the document it stands for, ``{"current_model": ..., "entries": {"<model>|<digest>":
    {"label", "top5", "last_used"}}}``; fails unless every line is whole, JSON, and a header, switch or entry line."""
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"", "the file ends with a whole line"
    header = json.loads(lines[0])
    assert header["version"] == 2 and isinstance(header["generation"], str)
    model, entries = header["current_model"], {}
    for line in lines[1:-1]:
        record = json.loads(line)
        if "digest" not in record:
            assert set(record) == {"current_model"}
            model = record["current_model"]
            continue
        key = f"{record['model']}|{record['digest']}"
        mine = entries.get(key)
        if record.get("evicted") is True:
            if mine is not None and mine["last_used"] <= record["last_used"]:
                del entries[key]
        elif mine is None or record["last_used"] > mine["last_used"]:
            entries[key] = {name: record[name] for name in ("label", "top5", "last_used")}
    return {"current_model": model, "entries": entries}


def file_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def write_version_1(path: Path, model: str, entries: dict, layout: str = "one line") -> None:
    """A file as the version-1 cache wrote it ("chunked": a header line, 100 entries per line, closing braces) or
    in another JSON layout."""
    document = {"version": 1, "current_model": model, "entries": entries}
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout == "chunked":
        items = list(entries.items())
        rows = [json.dumps(dict(items[i:i + 100]), separators=(",", ":"))[1:-1] for i in range(0, len(items), 100)]
        head = json.dumps({"version": 1, "current_model": model}, separators=(",", ":"))[:-1]
        path.write_text("\n".join([f'{head},"entries":{{', ",\n".join(rows), "}}"]))
    else:
        path.write_text(json.dumps(document, indent=2 if layout == "indented" else None))


def old_entries(count: int, model: str = "m1") -> dict:
    return {f"{model}|{digest(i)}": {"label": f"label-{i}", "top5": [[f"label-{i}", 0.5]], "last_used": 100.0 + i}
            for i in range(count)}


def count_writes(monkeypatch) -> list[str]:
    """The names of the file writes (``append``, ``rewrite``) every cache makes from now on, in order."""
    writes: list[str] = []
    for method in ("append", "rewrite"):
        real = getattr(store.Journal, method)
        monkeypatch.setattr(store.Journal, method,
                            lambda self, what, real=real, method=method: writes.append(method) or real(self, what))
    return writes


FAKE = object()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "results.json"


@pytest.fixture
def open_cache(path):
    """Opens caches on ``path`` and closes them all afterwards. Each gets a FakeClock unless given a clock (None: the
    default wall clock) and no flusher thread unless given ``flush_interval``."""
    opened: list[ResultCache] = []

    def make(max_entries: int = 1000, clock=FAKE, flush_interval=None) -> ResultCache:
        clock = FakeClock(1000.0) if clock is FAKE else clock
        cache = ResultCache(path, max_entries, clock=clock, flush_interval=flush_interval)
        opened.append(cache)
        return cache

    yield make
    for cache in opened:
        cache.close()


def wait_until(condition, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


# --- key ---------------------------------------------------------------------------------------------------------

def test_the_digest_is_the_sha256_of_the_bytes():
    assert image_digest(b"cat") == hashlib.sha256(b"cat").hexdigest()
    assert image_digest(b"") != image_digest(b"\x00")


def test_the_same_bytes_under_two_names_are_one_entry(tmp_path, open_cache):
    (tmp_path / "cat.jpg").write_bytes(b"\xff\xd8 same pixels")
    (tmp_path / "renamed.png").write_bytes(b"\xff\xd8 same pixels")
    cache = open_cache()
    cache.put(image_digest((tmp_path / "cat.jpg").read_bytes()), result("tabby"))
    cache.put(image_digest((tmp_path / "renamed.png").read_bytes()), result("tabby"))
    assert cache.entries == 1
    assert cache.get(image_digest((tmp_path / "renamed.png").read_bytes())) == result("tabby")


def test_different_bytes_never_share_an_entry(open_cache):
    blobs = [b"", b"\x00", b"\x00\x00", b"a", b"b"] + [random.Random(i).randbytes(64) for i in range(2000)]
    cache = open_cache(max_entries=10_000)
    for index, blob in enumerate(blobs):
        cache.put(image_digest(blob), result(f"label-{index}"))
    assert cache.entries == len(blobs)
    assert all(cache.get(image_digest(blob)).label == f"label-{index}" for index, blob in enumerate(blobs))


def test_a_file_name_is_not_a_key(open_cache):
    cache = open_cache()
    with pytest.raises(ValueError, match="SHA-256"):
        cache.put("cat.jpg", result("tabby"))
    with pytest.raises(ValueError):
        cache.put(digest(1).upper(), result("tabby"))
    assert cache.get("cat.jpg") is None


def test_a_result_must_be_well_formed():
    assert result("x").top5 == (("x", 0.75), ("other", 0.125))
    assert CachedResult("x", [["x", 1]], "m").top5 == (("x", 1.0),)
    with pytest.raises(ValueError):
        CachedResult("x", (("x", float("nan")),), "m")
    with pytest.raises(ValueError):
        CachedResult("x", (("x", 0.5),), "")


# --- current model -----------------------------------------------------------------------------------------------

def test_a_new_model_hides_the_old_models_entries(open_cache):
    cache = open_cache()
    cache.put(digest("a"), result("tabby", model="m1"))
    assert cache.get(digest("a")) == result("tabby", model="m1")
    cache.put(digest("b"), result("beagle", model="m2"))
    assert cache.current_model == "m2"
    assert cache.get(digest("a")) is None
    assert cache.get(digest("b")) == result("beagle", model="m2")
    assert cache.entries == 2, "other models' entries stay until evicted"
    cache.put(digest("c"), result("goldfish", model="m1"))
    assert cache.get(digest("a")) == result("tabby", model="m1"), "switching back makes them answer again"


def test_the_same_image_under_two_models_is_two_entries(open_cache):
    cache = open_cache()
    cache.put(digest("a"), result("tabby", model="m1"))
    cache.put(digest("a"), result("tiger cat", model="m2"))
    assert cache.entries == 2
    assert cache.get(digest("a")).label == "tiger cat"


# --- persistence -------------------------------------------------------------------------------------------------

def test_a_new_instance_answers_every_entry(path, open_cache):
    first = open_cache()
    for i in range(200):
        first.put(digest(i), result(f"old-{i}", model="m1"))
    for i in range(300):
        first.put(digest(i), CachedResult(f"label-{i}", ((f"label-{i}", i / 300), ("x", 1 / 3)), "m2"))
    first.close()
    second = open_cache()
    assert second.current_model == "m2"
    assert second.entries == 500
    for i in range(300):
        assert second.get(digest(i)) == CachedResult(f"label-{i}", ((f"label-{i}", i / 300), ("x", 1 / 3)), "m2")
    assert second.hits == 300 and second.misses == 0


def test_the_file_has_the_documented_shape(path, open_cache):
    clock = FakeClock(1234.5)
    cache = open_cache(max_entries=1, clock=clock)
    cache.put(digest("a"), result("tabby"))
    cache.flush()
    header, entry = file_lines(path)
    assert header == {"version": 2, "generation": header["generation"], "current_model": "m1"}
    assert len(header["generation"]) == 16
    assert entry == {"model": "m1", "digest": digest("a"), "label": "tabby",
                     "top5": [["tabby", 0.75], ["other", 0.125]], "last_used": 1234.5}
    clock.advance(1)
    cache.put(digest("b"), result("beagle", model="m2"))
    cache.flush()
    assert file_lines(path)[2:] == [
        {"current_model": "m2"},
        {"model": "m1", "digest": digest("a"), "last_used": 1234.5, "evicted": True},
        {"model": "m2", "digest": digest("b"), "label": "beagle", "top5": [["beagle", 0.75], ["other", 0.125]],
         "last_used": 1235.5}]
    assert path.read_bytes().endswith(b"}\n") and b" " not in path.read_bytes()


def test_a_missing_file_is_an_empty_cache(path, open_cache):
    cache = open_cache()
    assert (cache.entries, cache.current_model, cache.get(digest("a"))) == (0, "", None)
    cache.flush()
    assert not path.exists(), "nothing to write yet"


def test_many_entries_round_trip_through_the_line_layout(path, open_cache):
    first = open_cache(max_entries=10_000)
    for i in range(2500):
        first.put(digest(i), result(f"label-{i}"))
    first.close()
    lines = path.read_text().split("\n")
    assert len(lines) == 1 + 2500 + 1, "a header, a line per entry, nothing after the last newline"
    assert len(read_document(path)["entries"]) == 2500
    second = open_cache(max_entries=10_000)
    assert all(second.get(digest(i)) == result(f"label-{i}") for i in range(2500))


@pytest.mark.parametrize("layout", ["chunked", "indented", "one line"])
def test_a_version_1_file_loads_and_is_rewritten_in_the_new_format(path, open_cache, layout):
    entries = {**old_entries(250), **old_entries(5, model="m0")}
    write_version_1(path, "m1", entries, layout)
    cache = open_cache()
    assert (cache.entries, cache.current_model) == (255, "m1")
    assert all(cache.get(digest(i)) == CachedResult(f"label-{i}", ((f"label-{i}", 0.5),), "m1") for i in range(250))
    assert file_lines(path)[0]["version"] == 2, "migrated when loaded, before any write of its own"
    assert read_document(path) == {"current_model": "m1", "entries": entries}
    assert sorted(os.listdir(path.parent)) == ["results.json", "results.json.lock"]
    assert open_cache().entries == 255


def test_a_version_1_file_that_cannot_be_rewritten_still_answers(path, open_cache, monkeypatch):
    write_version_1(path, "m1", old_entries(3))

    def failing_replace(source, target):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(store.os, "replace", failing_replace)
    cache = open_cache()
    assert cache.entries == 3 and cache.get(digest(0)) is not None
    monkeypatch.undo()
    cache.put(digest("new"), result("new"))
    cache.flush()
    assert file_lines(path)[0]["version"] == 2 and len(read_document(path)["entries"]) == 4


@pytest.mark.parametrize("damage", ["cut a line", "trailing comma"])
def test_a_damaged_line_makes_a_whole_version_1_file_corrupt(path, open_cache, damage):
    write_version_1(path, "m1", old_entries(2500), "chunked")
    lines = path.read_text().split("\n")
    if damage == "cut a line":
        lines[2] = lines[2][: len(lines[2]) // 2] + ","
    else:
        lines[-2] += ","
    path.write_text("\n".join(lines))
    with pytest.raises(ValueError):
        json.loads(path.read_text())
    second = open_cache(max_entries=10_000)
    assert second.entries == 0, "never half a file"
    assert len(list(path.parent.glob("results.json.corrupt-*"))) == 1


def test_a_damaged_line_of_the_journal_is_skipped_with_one_warning(path, open_cache, caplog):
    first = open_cache()
    for i in range(5):
        first.put(digest(i), result(f"label-{i}"))
    first.close()
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2][: len(lines[2]) // 2]
    lines[4] = b"\xff\xfe not UTF-8"
    path.write_bytes(b"\n".join(lines))
    with caplog.at_level(logging.WARNING, logger="web_tier.cache"):
        second = open_cache()
    assert [i for i in range(5) if second.get(digest(i))] == [0, 2, 4]
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "ignored 2 malformed entries" in warnings[0]
    assert not list(path.parent.glob("results.json.corrupt-*"))


# --- atomic writes -----------------------------------------------------------------------------------------------

def test_every_flush_leaves_valid_json_and_no_temp_files(path, open_cache):
    cache = open_cache()
    for round_ in range(5):
        for i in range(20):
            cache.put(digest((round_, i)), result(f"r{round_}-{i}"))
        cache.flush()
        assert sorted(os.listdir(path.parent)) == ["results.json", "results.json.lock"]
        assert len(read_document(path)["entries"]) == 20 * (round_ + 1)


def test_a_write_syncs_the_file_then_replaces_it_then_syncs_the_folder(path, open_cache, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(descriptor).st_mode) else "fsync file")
        real_fsync(descriptor)

    def replace(source, target):
        events.append(f"replace {Path(source).parent == Path(target).parent}")
        real_replace(source, target)

    monkeypatch.setattr(store.os, "fsync", fsync)
    monkeypatch.setattr(store.os, "replace", replace)
    cache = open_cache()
    cache.put(digest("a"), result("tabby"))
    cache.flush()
    assert events == ["fsync file", "replace True", "fsync folder"], "the first write creates the file whole"


def test_an_append_is_one_write_of_whole_lines_to_an_append_only_descriptor(path, open_cache, monkeypatch):
    cache = open_cache()
    cache.put(digest("a"), result("a"))
    cache.flush()
    writes: list[tuple[bool, bytes]] = []
    real_write = os.write

    def write(descriptor, data):
        writes.append((bool(fcntl.fcntl(descriptor, fcntl.F_GETFL) & os.O_APPEND), bytes(data)))
        return real_write(descriptor, data)

    monkeypatch.setattr(store.os, "write", write)
    for name in "bcd":
        cache.put(digest(name), result(name))
    cache.get(digest("a"))
    cache.flush()
    [(append_only, data)] = writes
    assert append_only and data.endswith(b"\n") and path.read_bytes().endswith(data)
    digests = [json.loads(line)["digest"] for line in data.splitlines()]
    assert sorted(digests) == sorted(digest(name) for name in "abcd"), "three puts and a hit, a line each"


@pytest.mark.parametrize("failing", ["append", "rewrite"])
def test_a_failed_write_keeps_the_old_file_and_retries_later(path, open_cache, monkeypatch, failing):
    cache = open_cache()
    cache.put(digest("a"), result("tabby"))
    cache.flush()
    before = path.read_bytes()
    cache.put(digest("b"), result("beagle"))

    def failing_call(*args):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        if failing == "rewrite":
            patch.setattr(store, "COMPACT_FACTOR", 0)
            patch.setattr(store, "COMPACT_MIN_LINES", 0)
        patch.setattr(store.os, "replace" if failing == "rewrite" else "write", failing_call)
        with pytest.raises(OSError, match="No space"):
            cache.flush()
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == ["results.json", "results.json.lock"]
    cache.flush()
    assert set(read_document(path)["entries"]) == {f"m1|{digest('a')}", f"m1|{digest('b')}"}


def test_a_partial_line_left_by_a_failed_append_is_cut_before_the_next(path, open_cache, monkeypatch, caplog):
    cache = open_cache()
    cache.put(digest("a"), result("tabby"))
    cache.flush()
    real_write = os.write

    def half_write(descriptor, data):
        return real_write(descriptor, data[: len(data) // 2])

    cache.put(digest("b"), result("beagle"))
    with monkeypatch.context() as patch:
        patch.setattr(store.os, "write", half_write)
        with pytest.raises(OSError, match="short write"):
            cache.flush()
    assert not path.read_bytes().endswith(b"\n")
    with caplog.at_level(logging.WARNING, logger="web_tier.cache"):
        cache.flush()
    assert any("cut a partial last line" in record.getMessage() for record in caplog.records)
    assert set(read_document(path)["entries"]) == {f"m1|{digest('a')}", f"m1|{digest('b')}"}


# --- corrupt files -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content", [
    b"{not json",
    b"\xff\xfe\x00\x01 binary",
    b"",
    b"[1, 2, 3]",
    b'{"version": 2, "current_model": "m1", "entries": {}}',
    b'{"version":3,"generation":"0123456789abcdef","current_model":"m1"}\n',
    b'{"current_model":"m1"}\n{"model":"m1","digest":"' + b"0" * 64 + b'","label":"x","evicted":true}\n',
    b'{"version":2,"generation":"0123456789abcdef","current_model":"m1"}',
    b'{"version": 1, "current_model": "m1", "entries": []}',
    b'{"version": 1, "current_model": 7, "entries": {}}',
    b"[" * 100_000,
    b'{"version":1,"current_model":"m1","entries":{\n"k":' + b"[" * 100_000 + b"\n}}",
])
def test_a_corrupt_file_is_moved_aside_and_the_cache_starts_empty(path, open_cache, caplog, content):
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="web_tier.cache"):
        cache = open_cache()
    assert (cache.entries, cache.current_model) == (0, "")
    assert not path.exists()
    moved = list(path.parent.glob("results.json.corrupt-*"))
    assert len(moved) == 1 and moved[0].read_bytes() == content, "moved aside intact, for a person to look at"
    assert any("moved it to" in record.message for record in caplog.records)
    cache.put(digest("a"), result("tabby"))
    cache.flush()
    assert read_document(path)["current_model"] == "m1"


def damaged_copies(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.corrupt-*"))


def a_file_of(path: Path, open_cache, count: int, model: str = "m1") -> list[bytes]:
    cache = open_cache()
    for i in range(count):
        cache.put(digest(i), result(f"label-{i}", model))
        cache.flush()
    cache.close()
    return path.read_bytes().split(b"\n")


@pytest.mark.parametrize("damage", ["cut", "zeros", "gone"])
def test_a_damaged_header_keeps_every_intact_entry_and_puts_only_the_damage_aside(path, open_cache, caplog, damage):
    lines = a_file_of(path, open_cache, 50)
    header = lines[0]
    lines[0] = {"cut": header[:len(header) // 2], "zeros": b"\0" * len(header), "gone": None}[damage]
    path.write_bytes(b"\n".join(line for line in lines if line is not None))
    with caplog.at_level(logging.WARNING, logger="web_tier.cache"):
        cache = open_cache()
    assert (cache.entries, cache.current_model) == (50, "m1")
    assert all(cache.get(digest(i)).label == f"label-{i}" for i in range(50))
    assert len(read_document(path)["entries"]) == 50, "rewritten at once, whole, for every process"
    copies = damaged_copies(path)
    if damage == "gone":
        assert copies == []
    else:
        assert [copy.read_bytes() for copy in copies] == [lines[0] + b"\n"], "only the damaged line is put aside"
    assert any("kept its 50 intact lines" in record.getMessage() for record in caplog.records)


def test_damage_in_many_places_keeps_what_is_whole(path, open_cache):
    lines = a_file_of(path, open_cache, 20)
    lines[0] = b"\x00\x00garbage"
    lines[7] = lines[7][:30]
    lines[-1] = b'{"model":"m1","dig'  # a partial last line
    path.write_bytes(b"\n".join(lines))
    cache = open_cache()
    kept = [i for i in range(20) if cache.get(digest(i))]
    assert kept == [i for i in range(20) if i != 6]  # line 7 is the seventh entry
    assert damaged_copies(path)[0].read_bytes() == b"\x00\x00garbage\n" + lines[7] + b"\n" + lines[-1] + b"\n"


def test_without_a_header_the_current_model_is_the_last_switch_else_the_model_used_last(path, open_cache):
    used_last = b'{"model":"m1","digest":"' + digest(1).encode() + b'","label":"a","top5":[],"last_used":9}\n'
    older = b'{"model":"m2","digest":"' + digest(2).encode() + b'","label":"b","top5":[],"last_used":5}\n'
    path.parent.mkdir(parents=True)
    path.write_bytes(b"garbage\n" + older + used_last)
    assert open_cache().current_model == "m1"
    path.write_bytes(b"garbage\n" + used_last + b'{"current_model":"m2"}\n' + older)
    assert open_cache().current_model == "m2"


def test_a_file_with_no_intact_entry_is_moved_aside_whole(path, open_cache):
    path.parent.mkdir(parents=True)
    content = b"garbage\n" + b'{"current_model":"m1"}\n' + b"more garbage\n"
    path.write_bytes(content)
    cache = open_cache()
    assert cache.entries == 0 and not path.exists()
    assert [copy.read_bytes() for copy in damaged_copies(path)] == [content]


def test_only_the_newest_damaged_copies_are_kept(path, open_cache):
    path.parent.mkdir(parents=True)
    for day in range(1, 9):
        path.with_name(f"{path.name}.corrupt-202601{day:02d}T000000.000000Z").write_bytes(b"old")
    folder = path.with_name(f"{path.name}.corrupt-20250101T000000.000000Z")
    folder.mkdir()
    path.write_bytes(b"{not json")
    open_cache()
    names = [copy.name.split("corrupt-")[1][:8] for copy in damaged_copies(path)]
    assert len(names) == store.KEEP_DAMAGED + 1 and names[0] == "20250101", "a folder is never deleted"
    assert names[1:5] == ["20260105", "20260106", "20260107", "20260108"] and names[5] > "2026"


def test_a_header_damaged_while_running_is_salvaged_at_the_next_write(path, open_cache):
    cache = open_cache()
    for i in range(10):
        cache.put(digest(i), result(f"label-{i}"))
    cache.flush()
    other = open_cache()
    data = bytearray(path.read_bytes())
    data[0:20] = b"\xff" * 20
    path.write_bytes(bytes(data))
    other.put(digest("new"), result("new"))
    other.flush()
    assert len(read_document(path)["entries"]) == 11
    assert len(damaged_copies(path)) == 1


def test_a_file_corrupted_while_running_is_moved_aside_at_the_next_write(path, open_cache):
    cache = open_cache()
    cache.put(digest("a"), result("tabby"))
    cache.flush()
    path.write_bytes(b"\x00garbage")
    cache.put(digest("b"), result("beagle"))
    cache.flush()
    assert len(read_document(path)["entries"]) == 2
    assert len(list(path.parent.glob("results.json.corrupt-*"))) == 1


def test_a_folder_in_the_files_place_is_moved_aside(path, open_cache):
    path.mkdir(parents=True)
    cache = open_cache()
    assert cache.entries == 0 and len(list(path.parent.glob("results.json.corrupt-*"))) == 1
    cache.put(digest("a"), result("a"))
    cache.flush()
    assert path.is_file()


def test_a_passing_read_error_leaves_a_good_file_alone(path, open_cache, monkeypatch):
    first = open_cache()
    first.put(digest("a"), result("a"))
    first.close()
    real_open = open

    def out_of_descriptors(file, *args, **kwargs):
        if str(file) == str(path):
            raise OSError(24, "Too many open files")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", out_of_descriptors)
    cache = open_cache()
    assert cache.entries == 0
    cache.put(digest("b"), result("b"))
    with pytest.raises(OSError, match="Too many open files"):
        cache.flush()
    monkeypatch.undo()
    cache.flush()
    assert set(read_document(path)["entries"]) == {f"m1|{digest('a')}", f"m1|{digest('b')}"}
    assert not list(path.parent.glob("results.json.corrupt-*"))


def test_malformed_entries_are_skipped_with_one_warning(path, open_cache, caplog):
    good = {"label": "tabby", "top5": [["tabby", 0.9]], "last_used": 5.0}
    entries = {
        f"m1|{digest('good')}": good,
        digest("no model"): good,
        f"m1|{digest('short')[:10]}": good,
        f"m1|{digest('upper').upper()}": good,
        f"m1|{digest('label')}": {**good, "label": 3},
        f"m1|{digest('top5')}": {**good, "top5": [["tabby"]]},
        f"m1|{digest('top5 type')}": {**good, "top5": "tabby"},
        f"m1|{digest('time')}": {**good, "last_used": "yesterday"},
        f"m1|{digest('bool')}": {**good, "last_used": True},
        f"m1|{digest('nan')}": {**good, "top5": [["tabby", float("nan")]]},
        f"m1|{digest('value')}": ["tabby"],
    }
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"version": 1, "current_model": "m1", "entries": entries}))
    with caplog.at_level(logging.WARNING, logger="web_tier.cache"):
        cache = open_cache()
    assert cache.entries == 1
    assert cache.get(digest("good")) == CachedResult("tabby", (("tabby", 0.9),), "m1")
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "ignored 10 malformed entries" in warnings[0]
    assert path.exists(), "a good file with bad entries is not moved aside"


# --- eviction ----------------------------------------------------------------------------------------------------

def test_the_least_recently_used_entry_goes_first(open_cache):
    clock = FakeClock(100.0)
    cache = open_cache(max_entries=3, clock=clock)
    for name in "abc":
        clock.advance(1)
        cache.put(digest(name), result(name))
    clock.advance(1)
    assert cache.get(digest("a")) is not None, "a hit makes 'a' the most recently used"
    clock.advance(1)
    cache.put(digest("d"), result("d"))
    assert [name for name in "abcd" if cache.get(digest(name))] == ["a", "c", "d"]
    clock.advance(1)
    cache.put(digest("e"), result("e"))
    assert cache.entries == 3
    assert cache.get(digest("a")) is None, "'a' was used before c and d were read back"


def test_other_models_entries_go_before_any_current_model_entry(open_cache):
    clock = FakeClock(100.0)
    cache = open_cache(max_entries=3, clock=clock)
    cache.put(digest("old current"), result("a", model="m1"))
    clock.advance(1)
    cache.put(digest("recent other"), result("b", model="m2"))
    clock.advance(1)
    cache.put(digest("c"), result("c", model="m1"))
    clock.advance(1)
    cache.put(digest("d"), result("d", model="m1"))
    assert cache.entries == 3
    assert cache.get(digest("old current")) is not None, "the older m1 entry outlives the newer m2 entry"
    cache.put(digest("recent other"), result("b", model="m2"))
    assert cache.get(digest("recent other")) is not None
    assert cache.entries == 3


def test_eviction_uses_last_used_kept_in_the_file(path, open_cache):
    clock = FakeClock(100.0)
    first = open_cache(max_entries=3, clock=clock)
    for name in "abc":
        clock.advance(1)
        first.put(digest(name), result(name))
    clock.advance(1)
    first.get(digest("a"))
    first.close()
    second = open_cache(max_entries=3, clock=clock)
    clock.advance(1)
    second.put(digest("d"), result("d"))
    assert [name for name in "abcd" if second.get(digest(name))] == ["a", "c", "d"]


def test_a_smaller_cap_at_start_keeps_the_most_recent(path, open_cache):
    clock = FakeClock(100.0)
    first = open_cache(clock=clock)
    for i in range(10):
        clock.advance(1)
        first.put(digest(i), result(str(i)))
    first.close()
    second = open_cache(max_entries=4, clock=clock)
    assert [i for i in range(10) if second.get(digest(i))] == [6, 7, 8, 9]


# --- several instances on one file (as several processes) --------------------------------------------------------

def test_two_instances_on_one_file_end_with_the_union(path, open_cache):
    one, two = open_cache(clock=FakeClock(10.0)), open_cache(clock=FakeClock(20.0))
    one.put(digest("x"), result("x"))
    two.put(digest("y"), result("y"))
    one.flush()
    two.flush()
    one.put(digest("z"), result("z"))
    one.flush()
    assert set(read_document(path)["entries"]) == {f"m1|{digest(name)}" for name in "xyz"}
    assert one.get(digest("y")) == result("y"), "a write also brings the other's entries into memory"


def test_a_miss_reads_what_another_instance_flushed_since(path, open_cache):
    one, two = open_cache(), open_cache()
    assert two.get(digest("x")) is None
    one.put(digest("x"), result("x"))
    assert two.get(digest("x")) is None, "nothing flushed yet: the other instance cannot know"
    one.flush()
    assert two.get(digest("x")) == result("x"), "answered from the file without a write of its own"
    assert (two.hits, two.misses) == (1, 2)


def test_a_miss_parses_the_file_only_when_it_changed(path, open_cache, monkeypatch):
    one, two = open_cache(), open_cache()
    one.put(digest("x"), result("x"))
    one.flush()
    decoded = []
    real_decode = codec.decode_lines
    monkeypatch.setattr(codec, "decode_lines", lambda raw: decoded.append(1) or real_decode(raw))
    for name in "abcde":
        assert two.get(digest(name)) is None
    assert decoded == [1], "one parse for the change, none for the misses after it"
    one.put(digest("y"), result("y"))
    one.flush()
    assert two.get(digest("y")) == result("y") and decoded == [1, 1]


def test_for_a_key_in_both_the_later_use_wins(path, open_cache):
    early, late = open_cache(clock=FakeClock(10.0)), open_cache(clock=FakeClock(50.0))
    late.put(digest("x"), result("late"))
    early.put(digest("x"), result("early"))
    late.flush()
    early.flush()
    entry = read_document(path)["entries"][f"m1|{digest('x')}"]
    assert (entry["label"], entry["last_used"]) == ("late", 50.0)
    assert early.get(digest("x")).label == "late"


def test_every_instance_follows_the_latest_model_switch(path, open_cache):
    clock = FakeClock(10.0)
    stays, switches = open_cache(clock=clock), open_cache(clock=clock)
    stays.put(digest("a"), result("a", model="m1"))
    stays.flush()
    switches.flush()
    switches.put(digest("b"), result("b", model="m2"))
    switches.flush()
    stays.get(digest("a"))
    stays.flush()
    assert read_document(path)["current_model"] == "m2"
    assert stays.current_model == "m2"
    assert stays.get(digest("b")) == result("b", model="m2")


def test_a_merge_evicts_down_to_the_cap(path, open_cache):
    one, two = open_cache(max_entries=3, clock=FakeClock(10.0)), open_cache(max_entries=3, clock=FakeClock(20.0))
    for name in "abc":
        one.put(digest(name), result(name))
    one.flush()
    two.put(digest("d"), result("d"))
    two.put(digest("e"), result("e"))
    two.flush()
    kept = read_document(path)["entries"]
    assert len(kept) == 3 and {f"m1|{digest('d')}", f"m1|{digest('e')}"} <= set(kept)
    assert two.entries == 3


@pytest.mark.parametrize("settle_limit", [1000, 2, 0], ids=["merged in place", "some", "re-sorted"])
def test_eviction_after_a_merge_follows_last_used_across_both(path, open_cache, monkeypatch, settle_limit):
    monkeypatch.setattr(cache_entries, "_SETTLE_LIMIT", settle_limit)
    clock_one, clock_two = FakeClock(0.0), FakeClock(0.0)
    one, two = open_cache(max_entries=4, clock=clock_one), open_cache(max_entries=4, clock=clock_two)
    for time_, name in [(1, "a"), (3, "c"), (5, "e"), (7, "g")]:
        clock_one.time = time_
        one.put(digest(name), result(name))
    for time_, name in [(2, "b"), (4, "d"), (6, "f"), (8, "h")]:
        clock_two.time = time_
        two.put(digest(name), result(name))
    one.flush()
    two.flush()
    survivors = {f"m1|{digest(name)}" for name in "efgh"}
    assert set(read_document(path)["entries"]) == survivors
    assert [name for name in "abcdefgh" if two.get(digest(name))] == list("efgh")


def test_a_write_rereads_the_file_only_when_someone_else_changed_it(path, open_cache, monkeypatch):
    reads: list[int] = []
    real_decode = codec.decode_lines
    monkeypatch.setattr(codec, "decode_lines", lambda raw: reads.append(len(raw)) or real_decode(raw))
    one, two = open_cache(), open_cache()
    for name in "abc":
        one.put(digest(name), result(name))
        one.flush()
    assert reads == [], "the file is as this instance wrote it"
    before = path.stat().st_size
    two.put(digest("x"), result("x"))
    two.flush()
    appended = path.stat().st_size - before
    one.put(digest("d"), result("d"))
    one.flush()
    assert len(reads) == 2 and set(read_document(path)["entries"]) == {f"m1|{digest(n)}" for n in "abcdx"}
    assert reads[0] == before - len(path.read_bytes().split(b"\n")[0]) - 1, "two read every line after the header"
    assert reads[1] == appended, "one read only the lines appended since its last write"


def test_a_partial_last_line_is_read_once_it_is_whole(path, open_cache):
    writer, reader = open_cache(), open_cache()
    writer.put(digest("a"), result("a"))
    writer.flush()
    assert reader.get(digest("a")) == result("a")
    line = json.dumps({"model": "m1", "digest": digest("b"), "label": "b", "top5": [["b", 0.75], ["other", 0.125]],
                       "last_used": 1000.0}, separators=(",", ":")).encode() + b"\n"
    with open(path, "ab") as file:
        file.write(line[:40])
    assert reader.get(digest("b")) is None, "half an entry is no entry"
    assert path.read_bytes().endswith(line[:40]), "a reader without the lock leaves an append under way alone"
    with open(path, "ab") as file:
        file.write(line[40:])
    assert reader.get(digest("b")) == result("b")
    assert (reader.hits, reader.misses) == (2, 1)


def test_the_file_is_compacted_when_it_holds_too_many_lines(path, open_cache, monkeypatch):
    monkeypatch.setattr(store, "COMPACT_MIN_LINES", 10)
    writes = count_writes(monkeypatch)
    clock = FakeClock(100.0)
    writer, reader = open_cache(clock=clock), open_cache(clock=clock)
    for name in "abcd":
        writer.put(digest(name), result(name))
    writer.flush()
    assert reader.get(digest("a")) == result("a")
    first = path.stat().st_ino, file_lines(path)[0]["generation"]
    for _ in range(3):
        clock.advance(1)
        for name in "abcd":
            writer.get(digest(name))
        writer.flush()
    assert writes == ["rewrite", "append", "append", "rewrite"], "4, 8, 12 lines: more than 2 per entry and 10"
    assert len(file_lines(path)) == 1 + 4
    assert (path.stat().st_ino, file_lines(path)[0]["generation"]) != first
    assert {entry["last_used"] for entry in read_document(path)["entries"].values()} == {103.0}
    assert sorted(os.listdir(path.parent)) == ["results.json", "results.json.lock"]
    reader.put(digest("e"), result("e"))
    reader.flush()
    assert writes[-1] == "append", "the reader read the rewritten file from its start, then appended"
    assert set(read_document(path)["entries"]) == {f"m1|{digest(name)}" for name in "abcde"}
    assert reader.get(digest("a")) == result("a") and writer.get(digest("e")) == result("e")


def test_a_file_replaced_in_place_by_another_generation_is_read_from_the_start(tmp_path, path, open_cache):
    writer, reader = open_cache(), open_cache()
    writer.put(digest("a"), result("a"))
    writer.flush()
    assert reader.get(digest("a")) == result("a")
    with ResultCache(tmp_path / "other.json", 10, clock=FakeClock(5.0), flush_interval=None) as other:
        for name in "xyz":
            other.put(digest(name), result(name))
    inode = path.stat().st_ino
    path.write_bytes((tmp_path / "other.json").read_bytes())
    assert path.stat().st_ino == inode, "same file, longer, but not the one the reader read"
    assert reader.get(digest("x")) == result("x")
    assert reader.entries == 4


def test_an_eviction_elsewhere_does_not_drop_an_entry_used_here_later(path, open_cache):
    clock_one = FakeClock(10.0)
    one = open_cache(max_entries=3, clock=clock_one)
    for name in "abc":
        one.put(digest(name), result(name))
    one.flush()
    two = open_cache(max_entries=3, clock=FakeClock(20.0))
    clock_one.time = 30.0
    assert one.get(digest("a")) is not None
    two.put(digest("d"), result("d"))
    two.flush()
    assert set(read_document(path)["entries"]) == {f"m1|{digest(name)}" for name in "bcd"}, "two evicted 'a'"
    one.flush()
    assert one.get(digest("a")) is not None, "used here at 30, after the use two evicted (10)"
    entries = read_document(path)["entries"]
    assert set(entries) == {f"m1|{digest(name)}" for name in "acd"} and entries[f"m1|{digest('a')}"]["last_used"] == 30
    assert [name for name in "abcd" if two.get(digest(name))] == list("acd"), "two follows one's eviction of 'b'"


def _put_from_another_process(path: str, worker: int, count: int, barrier, compaction: tuple[int, int]) -> None:
    store.COMPACT_FACTOR, store.COMPACT_MIN_LINES = compaction
    cache = ResultCache(Path(path), 10_000, flush_interval=None)
    barrier.wait()
    for i in range(count):
        cache.put(image_digest(f"{worker}-{i}".encode()), result(f"w{worker}-{i}"))
        if i % 10 == 9:
            cache.flush()
    cache.close()


@pytest.mark.parametrize("compaction", [(store.COMPACT_FACTOR, store.COMPACT_MIN_LINES), (0, 25)],
                         ids=["appends", "appends and frequent rewrites"])
def test_processes_sharing_one_file_lose_no_entries(path, compaction):
    context = multiprocessing.get_context("spawn")
    workers, count = 3, 150
    barrier = context.Barrier(workers)
    processes = [context.Process(target=_put_from_another_process,
                                 args=(str(path), worker, count, barrier, compaction)) for worker in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [process.exitcode for process in processes] == [0] * workers
    expected = {f"m1|{image_digest(f'{w}-{i}'.encode())}" for w in range(workers) for i in range(count)}
    assert set(read_document(path)["entries"]) == expected
    with ResultCache(path, 10_000, flush_interval=None) as reopened:
        assert reopened.get(image_digest(b"2-149")) == result("w2-149")


# --- threads -----------------------------------------------------------------------------------------------------

def test_many_threads_mixing_gets_and_puts(path, open_cache, caplog):
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so races show
    try:
        with caplog.at_level(logging.ERROR, logger="web_tier.cache"):
            run_threads(path, open_cache)
    finally:
        sys.setswitchinterval(previous)
    assert [record.getMessage() for record in caplog.records] == [], "the background flusher failed"


def run_threads(path: Path, open_cache) -> None:
    """32 threads: 60 % gets, 38 % puts, 2 % puts of another model (a switch), with the flusher writing every 10 ms."""
    cache = open_cache(max_entries=300, clock=None, flush_interval=0.01)
    threads_count, operations, keys = 32, 150, 600
    barrier = threading.Barrier(threads_count)
    errors: list[BaseException] = []
    tallies: list[tuple[int, int, int]] = []

    def work(seed: int) -> None:
        rng, hits, misses, wrong = random.Random(seed), 0, 0, 0
        try:
            barrier.wait()
            for _ in range(operations):
                key, dice = rng.randrange(keys), rng.random()
                if dice >= 0.6:
                    model = "m2" if dice >= 0.98 else "m1"
                    cache.put(digest(key), result(f"{model}:{key}", model=model))
                    continue
                found = cache.get(digest(key))
                hits, misses = hits + (found is not None), misses + (found is None)
                wrong += found is not None and found.label != f"{found.model}:{key}"
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            errors.append(error)
        tallies.append((hits, misses, wrong))

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(tallies) == threads_count
    assert sum(t[2] for t in tallies) == 0, "a hit answered another image's label"
    assert (cache.hits, cache.misses) == (sum(t[0] for t in tallies), sum(t[1] for t in tallies))
    assert cache.hits > 0 and cache.misses > 0
    assert 0 < cache.entries <= 300
    cache.close()
    assert len(read_document(path)["entries"]) == cache.entries
    assert sorted(os.listdir(path.parent)) == ["results.json", "results.json.lock"]


def test_hit_rate_counts_lookups(open_cache):
    cache = open_cache()
    assert cache.hit_rate == 0.0
    cache.put(digest("a"), result("a"))
    for name in "aaab":
        cache.get(digest(name))
    assert (cache.hits, cache.misses, cache.hit_rate) == (3, 1, 0.75)


# --- batching, close ---------------------------------------------------------------------------------------------

def test_the_background_flusher_writes_soon_after_a_put(path, open_cache):
    cache = open_cache(clock=None, flush_interval=0.05)
    cache.put(digest("a"), result("a"))
    assert wait_until(lambda: path.exists() and f"m1|{digest('a')}" in read_document(path)["entries"])


def test_the_flusher_waits_for_the_interval_on_the_injected_clock(path, open_cache):
    clock = FakeClock(100.0)
    cache = open_cache(clock=clock, flush_interval=0.05)
    cache.put(digest("a"), result("a"))
    time.sleep(0.3)
    assert not path.exists(), "no time has passed on the cache's clock"
    clock.advance(0.05)
    assert wait_until(path.exists)


def test_the_flusher_batches_writes(path, open_cache, monkeypatch):
    writes = count_writes(monkeypatch)
    cache = open_cache(clock=None, flush_interval=0.2)
    deadline = time.monotonic() + 1.0
    count = 0
    while time.monotonic() < deadline:
        cache.put(digest(count % 50), result(str(count)))
        count += 1
    cache.close()
    assert count > 100
    assert 2 <= len(writes) <= 1.0 / 0.2 + 2, f"{len(writes)} writes for {count} puts"


def test_close_writes_what_is_pending_and_stops_the_thread(path, open_cache):
    cache = open_cache(clock=None, flush_interval=60.0)
    cache.put(digest("a"), result("a"))
    started = time.monotonic()
    cache.close()
    assert time.monotonic() - started < 5
    assert f"m1|{digest('a')}" in read_document(path)["entries"]
    assert not [t for t in threading.enumerate() if t.name == "result-cache-flusher"]
    cache.close()


def test_the_context_manager_closes(path):
    with ResultCache(path, 10, clock=FakeClock(1.0), flush_interval=None) as cache:
        cache.put(digest("a"), result("a"))
        assert not path.exists()
    assert read_document(path)["current_model"] == "m1"


def test_hits_are_persisted_too(path, open_cache):
    clock = FakeClock(10.0)
    cache = open_cache(clock=clock)
    cache.put(digest("a"), result("a"))
    cache.flush()
    clock.advance(5)
    cache.get(digest("a"))
    cache.flush()
    assert read_document(path)["entries"][f"m1|{digest('a')}"]["last_used"] == 15.0
