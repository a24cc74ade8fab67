"""Poison messages among good requests: malformed ones reach the dead-letter queue after their receives, a request
whose image and reply queue are both gone is answered into the void and deleted, and every good request is
answered right meanwhile, with no launch beyond what the backlog needs."""
from __future__ import annotations

import json
import time

import pytest

from hybrid.core.messages import ClassifyRequest
from tests.chaos.local_service import PHOTOS, LocalService, variant, wait_until

pytestmark = pytest.mark.timeout(180)
CLIENTS = 20
MAX_WORKERS = 2
MALFORMED = ["not json {", json.dumps({"id": "no key or name"}), json.dumps(["a", "list"]), ""]


def test_poison_messages_go_to_the_dead_letter_queue_and_good_work_goes_on(tmp_path):
    with LocalService("chaos-poison", **{"scaling.max_workers": str(MAX_WORKERS)}) as service:
        right = service.labels_of()
        orphan = ClassifyRequest("orphan", "sha256/" + "0" * 64, "gone.jpg", f"{service.stack}-replies-gone")
        started = time.monotonic()
        service.send_raw([body or " " for body in MALFORMED] + [orphan.to_body()])
        images = {f"{PHOTOS[i % len(PHOTOS)]}-{i}.jpg": variant(PHOTOS[i % len(PHOTOS)], i + 1)
                  for i in range(CLIENTS)}
        answers = service.burst(images, within=60)
        answered = time.monotonic() - started
        wait_until(lambda: service.dead_letters() == len(MALFORMED), timeout=60, interval=0.25)
        to_dead_letters = time.monotonic() - started
        wait_until(lambda: service.requests_left() == 0, timeout=10, interval=0.25)
        wrong = [a for a in answers if a.label != right[a.name.split("-")[0]]]
        figure = {"poison_malformed": len(MALFORMED), "poison_orphan": 1, "dead_letters": service.dead_letters(),
                  "good": CLIENTS, "right": CLIENTS - len(wrong), "good_answered_s": round(answered, 1),
                  "poison_in_dead_letters_s": round(to_dead_letters, 1), "launched": service.launched(),
                  "launch_bound": MAX_WORKERS + 2, "requests_left": service.requests_left()}
        print(f"\npoison messages: {json.dumps(figure)}")
        assert not wrong, [(a.name, a.label, a.failures[-3:]) for a in wrong[:5]]
        assert figure["dead_letters"] == len(MALFORMED), "the orphan is answered (into the void) and deleted"
        assert figure["requests_left"] == 0, "nothing loops: the orphan is not held for another receive"
        assert figure["launched"] <= MAX_WORKERS + 2
