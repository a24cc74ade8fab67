"""The autoscaler on the local AWS server with local instances: from zero to the maximum and back to zero."""
from __future__ import annotations

import threading
import time

import pytest

from hybrid.autoscale.loop import read_timeline
from hybrid.autoscale.plot import plot_timeline
from hybrid.autoscale.service import build_autoscaler
from tests.integration.rig import photo_bytes

pytestmark = pytest.mark.timeout(400)
MAX_WORKERS = 20
IDLE_TIMEOUT = 3


class FleetSampler(threading.Thread):
    """Counts the stack's live instances (pending + running) every 0.25 s."""

    def __init__(self, rig) -> None:
        super().__init__(daemon=True)
        self.rig, self.samples, self.stop = rig, [], threading.Event()

    def run(self) -> None:
        filters = [{"Name": "tag:hybrid:stack", "Values": [self.rig.settings.stack]},
                   {"Name": "instance-state-name", "Values": ["pending", "running"]}]
        while not self.stop.wait(0.25):
            reservations = self.rig.ec2.describe_instances(Filters=filters)["Reservations"]
            self.samples.append((time.monotonic(), sum(len(r["Instances"]) for r in reservations)))

    def first_time_at(self, count: int) -> float:
        return next(t for t, n in self.samples if n >= count)

    def zero_after(self, moment: float) -> float:
        return next(t for t, n in self.samples if t >= moment and n == 0)


def test_burst_scales_to_max_never_beyond_and_back_to_zero(stack, tmp_path):
    from app_tier.classifier import load_classifier

    names = ("coffee", "chelsea", "rocket", "astronaut")
    images = {name: photo_bytes(name) for name in names}
    classifier = load_classifier("auto", 1)
    expected = {name: classifier.classify([data])[0].label for name, data in images.items()}
    rig = stack(worker__idle_timeout=str(IDLE_TIMEOUT), scaling__max_workers=str(MAX_WORKERS))
    scaler = build_autoscaler(rig.settings, tmp_path / "timeline.jsonl")
    stop, sampler = threading.Event(), FleetSampler(rig)
    loop = threading.Thread(target=scaler.run, args=(stop,), daemon=True)
    loop.start()
    sampler.start()
    try:
        time.sleep(1.5)
        assert sampler.samples and all(n == 0 for _, n in sampler.samples), "starts from zero"
        burst = time.monotonic()
        sent = {rig.submit(f"{names[i % 4]}-{i}", images[names[i % 4]]): names[i % 4] for i in range(100)}
        replies = rig.collect(100, timeout=240)
        last_answer = time.monotonic()
        deadline = last_answer + IDLE_TIMEOUT + 8
        while time.monotonic() < deadline and sampler.samples[-1][1] != 0:
            time.sleep(0.25)
        time.sleep(0.5)
    finally:
        stop.set()
        sampler.stop.set()
        loop.join(timeout=10)
        sampler.join(timeout=5)
    assert sorted(r.id for r in replies) == sorted(sent), "every request answered once"
    assert all(r.label == expected[sent[r.id]] for r in replies), "with the model's own label"
    assert max(n for _, n in sampler.samples) <= MAX_WORKERS, "never beyond the maximum at any 0.25 s sample"
    assert sampler.first_time_at(MAX_WORKERS) > burst, "reaches the maximum"
    assert sampler.samples[-1][1] == 0, f"back to zero within {IDLE_TIMEOUT + 8} s of the last answer"
    print(f"\nmaximum {sampler.first_time_at(MAX_WORKERS) - burst:.1f} s after the burst began; zero "
          f"{sampler.zero_after(last_answer) - last_answer:.1f} s after the last answer "
          f"(idle timeout {IDLE_TIMEOUT} s)")
    rows = read_timeline(tmp_path / "timeline.jsonl")
    full = next(i for i, r in enumerate(rows) if r["visible"] >= MAX_WORKERS)
    at_max = next(i for i, r in enumerate(rows) if r["pending"] + r["running"] >= MAX_WORKERS)
    assert at_max - full <= 1, "one tick launches the whole difference: the next tick sees the maximum"
    assert max(r["pending"] + r["running"] for r in rows) <= MAX_WORKERS
    assert sum(r["launch"] for r in rows) >= MAX_WORKERS and not any(r.get("error") for r in rows)
    picture = plot_timeline(rows, tmp_path / "timeline.png")
    assert picture.stat().st_size > 10_000
