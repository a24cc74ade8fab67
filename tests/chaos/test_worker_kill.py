"""An app-tier worker SIGKILLed in the middle of a burst: its requests come back after the visibility timeout and
are answered by another worker; its instance is terminated and replaced; nothing reaches the dead-letter queue."""
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
VISIBILITY = 8


def test_a_worker_killed_mid_burst_loses_no_answer():
    overrides = {"scaling.max_workers": str(MAX_WORKERS), "aws.visibility_timeout": str(VISIBILITY)}
    with LocalService("chaos-worker", **overrides) as service:
        right = service.labels_of()
        images = {f"{PHOTOS[i % len(PHOTOS)]}-{i}.jpg": variant(PHOTOS[i % len(PHOTOS)], i + 1)
                  for i in range(CLIENTS)}
        started = time.monotonic()
        burst = service.start_burst(images, within=70)
        wait_until(lambda: service.requests_in_flight() >= 4, timeout=20, interval=0.01)
        instance, victim = sorted(service.workers().items())[0]
        os.kill(victim, signal.SIGKILL)
        answers = burst.join(timeout=90)
        waited_for_redelivery = sum(1 for a in answers if a.seconds >= VISIBILITY - 1)
        wrong = [a for a in answers if a.label != right[a.name.split("-")[0]]]
        figure = {"clients": CLIENTS, "right": CLIENTS - len(wrong), "retried": sum(1 for a in answers if a.failures),
                  "all_answered_s": round(time.monotonic() - started, 1), "visibility_timeout_s": VISIBILITY,
                  "answered_after_redelivery": waited_for_redelivery,
                  "killed_instance_gone": instance not in service.workers(),
                  "dead_letters": service.dead_letters(), "launched": service.launched(),
                  "launch_bound": MAX_WORKERS + 1 + 2}
        print(f"\nworker SIGKILL mid-burst: {json.dumps(figure)}")
        assert not wrong, [(a.name, a.label, a.failures[-3:]) for a in wrong[:5]]
        assert waited_for_redelivery > 0, "the killed worker held requests"
        assert figure["killed_instance_gone"] and figure["dead_letters"] == 0
        assert figure["launched"] <= MAX_WORKERS + 1 + 2, "the backlog's workers, the killed one's replacement, 2"
