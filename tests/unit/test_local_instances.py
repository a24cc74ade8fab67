"""The local instance runner's fork: what the parent does before a worker process exists."""
from __future__ import annotations

import gc
import os

from hybrid.emulator import instances


def test_the_runner_freezes_its_objects_before_it_forks_a_worker(tmp_path, monkeypatch):
    frozen_at_fork = []

    def fake_fork():
        frozen_at_fork.append(gc.get_freeze_count())
        return 4242  # the parent's side of fork(): nothing else runs

    monkeypatch.setattr(os, "fork", fake_fork)
    gc.unfreeze()
    try:
        worker = instances.fork_worker("i-1", tmp_path / "user-data.json", tmp_path / "worker.log", tmp_path)
    finally:
        gc.unfreeze()
    assert worker.pid == 4242 and worker.returncode is None
    assert frozen_at_fork and frozen_at_fork[0] > 0
