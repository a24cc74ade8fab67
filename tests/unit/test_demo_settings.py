"""The demo's local settings: the fleet capped at one instance per core and a 0.2 s autoscaler tick unless told
otherwise; `local up` notes a larger fleet."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from hybrid.tools import demo


def test_the_demo_fleet_is_one_instance_per_core(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    settings, child_args = demo.demo_settings(tmp_path, "demo-a", [])
    assert settings.scaling.max_workers == 6
    assert "scaling.max_workers=6" in child_args


def test_a_machine_that_reports_fewer_than_two_cores_still_gets_two(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert demo.demo_settings(tmp_path, "demo-b", [])[0].scaling.max_workers == 2


def test_the_operator_can_ask_for_the_full_fleet(tmp_path: Path) -> None:
    settings, child_args = demo.demo_settings(tmp_path, "demo-c", ["scaling.max_workers=20"])
    assert settings.scaling.max_workers == 20
    assert child_args.count("scaling.max_workers=20") == 1


def test_the_demo_ticks_every_fifth_of_a_second_unless_told_otherwise(tmp_path: Path) -> None:
    settings, child_args = demo.demo_settings(tmp_path, "demo-d", [])
    assert settings.scaling.poll_interval == 0.2 and "scaling.poll_interval=0.2" in child_args
    settings, child_args = demo.demo_settings(tmp_path, "demo-e", ["scaling.poll_interval=1"])
    assert settings.scaling.poll_interval == 1.0 and child_args.count("scaling.poll_interval=1") == 1


def test_local_up_notes_a_fleet_larger_than_the_machine() -> None:
    from hybrid.local.stack import fleet_crowding

    note = fleet_crowding(20, 2)
    assert note.startswith("note: scaling.max_workers = 20 on 2 core(s)") and "scaling.max_workers=2" in note
    assert fleet_crowding(2, 2) == fleet_crowding(8, 8) == fleet_crowding(2, 1) == ""
