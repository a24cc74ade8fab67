"""A web process SIGKILLed in the middle of a burst: the replacement adopts its reply queue, clients that retry get
right answers, nothing reaches the dead-letter queue, and the autoscaler launches no more than the backlog needs."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.chaos.local_service import PHOTOS, LocalService, variant, wait_until

pytestmark = pytest.mark.timeout(180)
CLIENTS = 60
MAX_WORKERS = 2


def test_a_web_process_killed_mid_burst_loses_no_answer_and_loops_nothing():
    with LocalService("chaos-web", **{"scaling.max_workers": str(MAX_WORKERS)}) as service:
        right = service.labels_of()
        images = {f"{PHOTOS[i % len(PHOTOS)]}-{i}.jpg": variant(PHOTOS[i % len(PHOTOS)], i + 1)
                  for i in range(CLIENTS)}
        burst = service.start_burst(images, within=75)
        wait_until(lambda: in_flight(service) >= 10, timeout=20)
        victim = service.web_process()
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        answers = burst.join(timeout=90)
        settled = wait_until(lambda: service.requests_left() == 0, timeout=30)
        wrong = [a for a in answers if a.label != right[a.name.split("-")[0]]]
        retried = sum(1 for a in answers if a.failures)
        figure = {"clients": CLIENTS, "right": CLIENTS - len(wrong), "retried": retried,
                  "slowest_s": round(max(a.seconds for a in answers), 1),
                  "replacement": service.web_process() != victim, "dead_letters": service.dead_letters(),
                  "launched": service.launched(), "launch_bound": MAX_WORKERS + 2,
                  "queue_settled_s": round(time.monotonic() - killed_at, 1), "settle_wait_s": round(settled, 1),
                  "replies_adopted": json.loads(service.get("/status")[1])["late_replies"]}
        print(f"\nweb process SIGKILL mid-burst: {json.dumps(figure)}")
        assert not wrong, [(a.name, a.label, a.failures[-3:]) for a in wrong[:5]]
        assert figure["replacement"] and retried > 0, "the kill hit requests in flight"
        assert figure["dead_letters"] == 0
        assert figure["launched"] <= MAX_WORKERS + 2
        assert service.requests_left() == 0, "the request queue settles: nothing loops after the kill"


def in_flight(service: LocalService) -> int:
    status, text = service.get("/status")
    return json.loads(text)["in_flight"]["requests"] if status == 200 else 0

