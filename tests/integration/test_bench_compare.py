"""`hybrid bench compare` as an operator runs it: a real local stack, every answer checked, nothing left afterwards."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hybrid.local.stack import processes_of
from hybrid.tools.bench import BenchResult, CpuSnapshot, Pipeline, cpu_between, table

pytestmark = pytest.mark.timeout(180)

TABLE_LINES = ("throughput (images/s)", "latency p50 / p95 (s)", "answers right", "overhead per image:",
               "sequential sample: 10 unseen images", "queueing + transfer", "CPU during the timed run",
               "web tier", "local AWS server", "workers (1)", "client (this process)",
               "ratio end-to-end / in-process throughput:")


def bench(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command as its own process, in ``cwd`` (so its default state folder is ``cwd/.hybrid/bench``)."""
    command = [sys.executable, "-c", "from hybrid.cli.tools import bench; bench()", "compare", *args]
    return subprocess.run(command, check=False, cwd=cwd, capture_output=True, text=True, timeout=150,
                          env={**os.environ, "AWS_EC2_METADATA_DISABLED": "true"})


def test_compare_prints_both_ways_writes_json_and_leaves_nothing(tmp_path):
    result = bench(tmp_path, "--count", "8", "--concurrency", "4", "--workers", "1", "--out", "figures.json")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for expected in TABLE_LINES:
        assert any(expected in line for line in lines), f"{expected!r} missing from:\n{result.stdout}"
    assert any(line.startswith(("PASS: ", "FAIL: ")) for line in lines), result.stdout

    figures = json.loads((tmp_path / "figures.json").read_text())
    comparison = figures["comparison"]
    assert comparison["in_process_images_per_s"] > 0 and comparison["end_to_end_images_per_s"] > 0
    assert comparison["ratio"] == pytest.approx(
        comparison["end_to_end_images_per_s"] / comparison["in_process_images_per_s"], rel=1e-3)
    assert comparison["passed"] == (comparison["ratio"] >= 0.8)
    assert figures["exit_code"] == 0 and figures["answers_wrong_or_failed"] == 0 and not figures["error"]
    assert figures["in_process"]["labels_right"] == 8 and figures["in_process"]["batch_size"] == 8
    workload = figures["pipeline"]["workload"]
    assert (workload["requests"], workload["correct"], workload["wrong"], workload["failed"]) == (8, 8, 0, 0)
    assert figures["pipeline"]["warmup"]["correct"] == 2 and figures["pipeline"]["cache_hits_during_run"] == 0
    probes = figures["pipeline"]["probes"]
    assert len(probes) == 10 and all(p["outcome"] == "correct" and p["cached"] is False for p in probes)
    assert all(p["queue_and_classify_ms"] > 0 and p["inference_ms"] > 0 for p in probes)
    assert figures["pipeline"]["cpu"]["groups_s"]["workers (1)"] > 0

    state_dir = tmp_path / ".hybrid" / "bench"
    assert Path(figures["state_dir"]) == state_dir.resolve()
    assert figures["pipeline"]["leftovers"] == []
    assert processes_of(state_dir.resolve()) == []


@pytest.mark.parametrize("args", [("--count", "0"), ("--workers", "0"), ("--out", "no/such/folder/out.json")])
def test_bad_usage_exits_2_before_starting_anything(tmp_path, args):
    result = bench(tmp_path, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert not (tmp_path / ".hybrid").exists()


def test_cpu_between_splits_by_session_and_pid_and_counts_the_rest_as_other():
    before = CpuSnapshot({10: (10, 1.0), 11: (10, 0.5), 20: (20, 2.0), 30: (30, 0.0)}, busy_s=100.0, at=0.0)
    after = CpuSnapshot({10: (10, 1.5), 11: (10, 1.0), 12: (10, 0.25), 20: (20, 2.5), 30: (30, 3.0)},
                        busy_s=106.0, at=2.0)
    groups = {"web tier": ({10}, set()), "client": (set(), {20})}
    cpu = cpu_between(before, after, groups)
    assert cpu["groups_s"] == {"web tier": 1.25, "client": 0.5, "other processes": 4.25}
    assert (cpu["wall_s"], cpu["machine_busy_s"]) == (2.0, 6.0)


def test_a_run_with_a_wrong_answer_exits_1():
    result = BenchResult(8, 4, 1, 2, 0, "s", "/tmp/s", pipeline=Pipeline(workload={"wrong": 1, "failed": 0}))
    assert result.answers_wrong() == 1 and result.exit_code == 1
    assert table(["a", "b"], [["x", "1"], ["long", "22"]]) == ["a      b", "x      1", "long  22"]
