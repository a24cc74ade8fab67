"""The demo's settings: its fleet is capped at one local instance per core unless the operator says otherwise."""
from __future__ import annotations

from pathlib import Path

import pytest

from hybrid import demo


def test_the_demo_fleet_is_one_instance_per_core(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo.os, "cpu_count", lambda: 6)
    settings, child_args = demo.demo_settings(tmp_path, "demo-a", [])
    assert settings.scaling.max_workers == 6
    assert "scaling.max_workers=6" in child_args


def test_a_machine_that_reports_fewer_than_two_cores_still_gets_two(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo.os, "cpu_count", lambda: None)
    assert demo.demo_settings(tmp_path, "demo-b", [])[0].scaling.max_workers == 2


def test_the_operator_can_ask_for_the_full_fleet(tmp_path: Path) -> None:
    settings, child_args = demo.demo_settings(tmp_path, "demo-c", ["scaling.max_workers=20"])
    assert settings.scaling.max_workers == 20
    assert child_args.count("scaling.max_workers=20") == 1
