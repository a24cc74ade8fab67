"""Chaos: 128 near-limit PNGs at once against a real web tier (`hybrid web` on the local AWS server, no workers).

Each PNG is 4096 x 4096 RGB (the pixel cap of formats decoded whole), about 200 KB on the wire and 64 MB decoded:
before the bounded decode, vetting them all at once meant 128 x 64 MB of pixels in the web process (the issue
measured 805 MB for four 6300 x 6300 ones). Now the web tier checks a PNG whole without decoding it, so its memory
must stay under 1.5 GB and come back afterwards. The figure: the web tier's peak RSS (every process of `hybrid web`
summed, nginx too if it runs one, sampled every 20 ms, and each process's own high-water mark), and the gunicorn
workers' RSS after the burst and after a second burst of 128 others.

No worker runs, so every upload that passes the vetting is queued and answered 504 after ``web.request_timeout``:
the 504s and the queue depth prove that all 128 were accepted, not refused cheaply.
"""
from __future__ import annotations

import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import requests

from hybrid.core.decoding import MAX_FULL_PIXELS
from tests.integration.test_web_tier import web  # noqa: F401 - the fixture that starts `hybrid web`

pytestmark = pytest.mark.timeout(180)
UPLOADS = 128
SIDE = 4096
PEAK_LIMIT_MB = 1500
# Over the gunicorn workers' RSS before: their 128 threads, made for the burst and kept (stacks and state), and what
# glibc's per-thread arenas keep of the requests' small allocations. Measured over five bursts in a row: 145, 171,
# 174, 198, 158 MB after each (about 90 before), a plateau, not a climb; 128 x 64 MB of pixels kept would be 8 GB.
RELEASED_WITHIN_MB = 150
RELEASE_SECONDS = 15


def near_limit_pngs(count: int) -> list[bytes]:
    """``count`` distinct SIDE x SIDE RGB PNGs: the same pixels (one compressed stream), a different tEXt chunk each,
    so every one is a cache miss and its own request."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    row = b"\0" + bytes(range(256)) * (SIDE * 3 // 256)
    pixels = chunk(b"IDAT", zlib.compress(row * SIDE, 9))
    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", SIDE, SIDE, 8, 2, 0, 0, 0))
    return [head + pixels + chunk(b"tEXt", b"Comment\0upload %d" % i) + chunk(b"IEND", b"") for i in range(count)]


class TreeMemory(threading.Thread):
    """Samples the summed RSS of a process and its descendants every ``interval`` seconds; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = psutil.Process(pid), interval
        self.peak_mb = 0.0
        self.stop = threading.Event()

    def processes(self) -> list[psutil.Process]:
        return [self.root, *self.root.children(recursive=True)]

    def now_mb(self) -> float:
        total = 0
        for process in self.processes():
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total / 2**20

    def gunicorn_workers_mb(self) -> float:
        """The summed RSS of the gunicorn workers: the descendants forked from `hybrid web` without an exec (its
        command line), not nginx or any other program it runs."""
        total = 0
        for process in self.root.children(recursive=True):
            try:
                if process.cmdline() == self.root.cmdline():
                    total += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total / 2**20

    def workers_peak_mb(self) -> dict[int, float]:
        """Each descendant's own high-water mark (VmHWM): the gunicorn workers, and nginx's if it is there."""
        peaks = {}
        for process in self.root.children(recursive=True):
            try:
                status = dict(line.split(":", 1) for line in open(f"/proc/{process.pid}/status"))
            except (OSError, ValueError):
                continue
            peaks[process.pid] = int(status["VmHWM"].split()[0]) / 1024
        return peaks

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, self.now_mb())


def test_128_near_limit_pngs_at_once_keep_the_web_tier_small_and_it_gives_the_memory_back(web, stack):  # noqa: F811
    assert SIDE * SIDE == MAX_FULL_PIXELS, "the images are at the cap"
    rig = stack(worker__idle_timeout="120")
    server = web(rig, web__request_timeout="4")
    images = near_limit_pngs(2 * UPLOADS)
    sampler = TreeMemory(server.process.pid)
    before_mb, before_workers_mb = sampler.now_mb(), sampler.gunicorn_workers_mb()
    sampler.start()
    first, first_s, after_first_mb = burst(server, sampler, images[:UPLOADS], before_workers_mb)
    second, second_s, after_mb = burst(server, sampler, images[UPLOADS:], before_workers_mb)
    sampler.stop.set()
    sampler.join()
    workers = sampler.workers_peak_mb()
    own_peaks = ", ".join(f"{mb:.0f}" for mb in workers.values())
    print(f"\n{UPLOADS} x {SIDE}x{SIDE} RGB PNG ({len(images[0]):,} bytes each, {SIDE * SIDE * 4 / 2**20:.0f} MB as "
          f"PIL decodes it), twice: web tier RSS (all its processes) before {before_mb:.0f} MB, peak "
          f"{sampler.peak_mb:.0f} MB (each process's own peak: {own_peaks} MB); gunicorn workers before "
          f"{before_workers_mb:.0f} MB, after the first burst {after_first_mb:.0f} MB, after the second "
          f"{after_mb:.0f} MB; bursts {first_s:.1f} s and {second_s:.1f} s")
    assert {answer.status_code for answer in first + second} == {504}, \
        {answer.status_code: answer.text[:200] for answer in first + second}
    assert rig.depth(rig.requests)[0] == 2 * UPLOADS, "every upload passed the vetting and was queued"
    assert sampler.peak_mb < PEAK_LIMIT_MB and max(workers.values()) < PEAK_LIMIT_MB
    assert max(after_first_mb, after_mb) <= before_workers_mb + RELEASED_WITHIN_MB
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200


def burst(server, sampler: TreeMemory, images: list[bytes], before_mb: float) -> tuple[list, float, float]:
    """Posts every image at once; the answers, the seconds it took, and the gunicorn workers' RSS once it came
    back down (or the release time ran out)."""
    started = time.monotonic()
    with ThreadPoolExecutor(len(images)) as pool:
        answers = list(pool.map(lambda pair: server.post(f"big{pair[0]}.png", pair[1], timeout=90),
                                enumerate(images)))
    took = time.monotonic() - started
    deadline = time.monotonic() + RELEASE_SECONDS
    while sampler.gunicorn_workers_mb() > before_mb + RELEASED_WITHIN_MB and time.monotonic() < deadline:
        time.sleep(0.25)
    return answers, took, sampler.gunicorn_workers_mb()
