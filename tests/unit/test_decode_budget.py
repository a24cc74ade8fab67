"""DecodeBudget: the bytes of pixels one process decodes at once, however many threads ask."""
from __future__ import annotations

import threading
import time

import pytest

from hybrid.core import decode_budget
from hybrid.core.decode_budget import DecodeBudget, map_large_allocations, release_free_memory


def test_holds_never_exceed_the_limit_however_many_threads_ask():
    budget, lock, seen = DecodeBudget(100, 10**9), threading.Lock(), []

    def decode(size: int) -> None:
        with budget.hold(size):
            with lock:
                seen.append(budget.used)
            time.sleep(0.005)

    threads = [threading.Thread(target=decode, args=(size,)) for size in [40, 30, 60, 10, 100, 25] * 8]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(seen) == 48 and max(seen) <= 100 and budget.used == 0


def test_a_decode_larger_than_the_whole_budget_runs_alone():
    budget = DecodeBudget(100, 10**9)
    with budget.hold(250):
        assert budget.used == 250
        started = threading.Event()

        def take_one_byte() -> None:
            with budget.hold(1):
                started.set()

        waiter = threading.Thread(target=take_one_byte)
        waiter.start()
        assert not started.wait(0.1), "a second decode waits while the oversized one runs"
    assert started.wait(2)
    waiter.join()


def test_the_bytes_come_back_when_the_decode_fails():
    budget = DecodeBudget(100, 10**9)
    with pytest.raises(ValueError):
        with budget.hold(80):
            raise ValueError("corrupt")
    assert budget.used == 0


def test_a_budget_needs_a_byte():
    with pytest.raises(ValueError):
        DecodeBudget(0, 1)


def test_glibc_is_told_to_map_large_allocations():
    assert map_large_allocations() is True


def test_the_heap_is_trimmed_when_the_last_hold_ends_after_enough_work(monkeypatch):
    trims = []
    monkeypatch.setattr(decode_budget, "release_free_memory", lambda: trims.append(1) or True)
    budget = DecodeBudget(100, trim_after=50)
    with budget.hold(30):
        with budget.hold(0, work=30):
            pass
        assert trims == [], "not while a decode is in flight"
    assert trims == [1], "60 bytes of work, and nothing in flight"
    with budget.hold(20):
        pass
    assert trims == [1], "20 bytes since the last trim"


def test_a_hold_of_nothing_never_waits_even_beside_an_oversized_decode():
    budget = DecodeBudget(100, 10**9)
    with budget.hold(250):
        done = threading.Event()

        def check() -> None:
            with budget.hold(0, work=10):
                done.set()

        threading.Thread(target=check).start()
        assert done.wait(2)


def test_the_free_heap_is_handed_back_on_glibc():
    assert release_free_memory() is True
