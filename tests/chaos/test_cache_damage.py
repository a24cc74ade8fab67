"""Chaos: the web tier's result cache file damaged while the service is down, then `hybrid web` started on it.

The file holds 200 results; its header line is overwritten with garbage and a few entry lines are cut (as a crash
in the middle of a rewrite, or a bad disk block, leaves it), and eight old ``.corrupt-*`` copies lie beside it. The
figure: how many of the 200 images are still answered from the cache after the restart (all but the damaged lines'),
what went aside, and how many damaged copies are left (five at most).
"""
from __future__ import annotations

import json
import time

import pytest
import requests

from tests.integration.test_web_tier import web  # noqa: F401 - the fixture that starts `hybrid web`
from web_tier.cache import CachedResult, ResultCache, image_digest
from web_tier.cache.store import KEEP_DAMAGED

pytestmark = pytest.mark.timeout(120)
IMAGES = 200
DAMAGED_LINES = (10, 50, 120)  # entry lines cut in half, besides the header
MODEL = "chaos-model@1"


def a_cache_of(path, images: list[bytes]) -> None:
    with ResultCache(path, 10_000, flush_interval=None) as cache:
        for i, data in enumerate(images):
            cache.put(image_digest(data), CachedResult(f"label-{i}", ((f"label-{i}", 0.9),), MODEL))
            if i % 20 == 19:
                cache.flush()


def damage(path) -> tuple[list[bytes], set[str]]:
    """Garbage over the header, three entry lines cut short; the damaged lines as written, and the digests of the
    entries whose lines were cut."""
    lines = path.read_bytes().split(b"\n")
    lost = {json.loads(lines[number])["digest"] for number in DAMAGED_LINES}
    lines[0] = b"\x00" * 7 + lines[0][7:-9]
    for number in DAMAGED_LINES:
        lines[number] = lines[number][: len(lines[number]) // 2]
    path.write_bytes(b"\n".join(lines))
    return [lines[0], *(lines[number] for number in DAMAGED_LINES)], lost


def test_a_damaged_cache_file_keeps_its_intact_entries_and_only_the_newest_damaged_copies(web, stack):  # noqa: F811
    rig = stack(worker__idle_timeout="120")
    path = rig.settings.result_cache_path
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [b"not even decoded on a hit %d" % i for i in range(IMAGES)]
    a_cache_of(path, images)
    damaged, lost_digests = damage(path)
    for day in range(1, 9):
        path.with_name(f"{path.name}.corrupt-202601{day:02d}T000000.000000Z").write_bytes(b"an old copy")

    started = time.monotonic()
    server = web(rig)
    answers = [server.post(f"img{i}.png", data, json=True, timeout=30) for i, data in enumerate(images)]
    took = time.monotonic() - started
    cached = [i for i, answer in enumerate(answers) if answer.status_code == 200 and answer.json()["cached"]]
    copies = sorted(path.parent.glob(f"{path.name}.corrupt-*"))
    print(f"\ncache of {IMAGES} entries, header and {len(DAMAGED_LINES)} entry lines damaged: {len(cached)} answered "
          f"from the cache after the restart; {len(copies)} damaged copies left of 9; {took:.1f} s")

    lost = [i for i, data in enumerate(images) if image_digest(data) in lost_digests]
    assert cached == [i for i in range(IMAGES) if i not in lost]
    assert all(answers[i].json()["label"] == f"label-{i}" for i in cached)
    assert all(answers[i].status_code in (400, 415) for i in lost), "a miss is vetted: these bytes are no image"
    assert len(copies) == KEEP_DAMAGED
    assert copies[-1].read_bytes() == b"".join(line + b"\n" for line in damaged), "only the damaged lines"
    status = requests.get(f"{server.url}/status", timeout=5).json()["cache"]
    assert status["model"] == MODEL and status["entries"] == IMAGES - len(lost)
    assert rig.depth(rig.requests) == (0, 0)
