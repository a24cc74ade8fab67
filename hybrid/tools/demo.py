"""The main job on the embedded default, end to end (``hybrid demo``, run by ``scripts/demo.sh``).

1. Start the local stack (local AWS server and instance runner, the stack's AWS side, autoscaler, web tier).
2. Build 100 sample images from real photos, with the labels the model itself gives them.
3. Cold run: 100 concurrent requests from 0 workers; the autoscaler grows the fleet.
4. Wait for the fleet to come back to 0 (workers end themselves after ``worker.idle_timeout``).
5. Warm run: the same 100 requests, answered from the result cache.
6. Write the report folder (report.json, timeline.png, both workload reports), then tear everything down.

Passes only if every answer of both runs was right and the fleet came back to zero instances.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from hybrid.autoscale.loop import read_timeline
from hybrid.autoscale.plot import Span, plot_timeline
from hybrid.aws.compute import Ec2Fleet
from hybrid.aws.session import AwsClients
from hybrid.core import procs
from hybrid.core.naming import IMAGE_LOGIN_USER
from hybrid.core.settings import Settings, load
from hybrid.local import stack as local
from hybrid.local.machines import GUEST_STATE_DIR
from hybrid.tools.samples import build_samples
from hybrid.tools.workload import run_workload

log = logging.getLogger(__name__)
Report = Callable[[str], None]
ZERO_MARGIN = 30.0
# The autoscaler's tick in the demo. A tick is two calls to the local server (about 8 ms of CPU); the 1 s default
# is for AWS, where calls are billed and rate-limited. The burst waits half a tick on average for its first launch:
# 0.1 s here instead of 0.5 s.
DEMO_TICK = "0.2"


@dataclass
class DemoResult:
    report_dir: Path
    summaries: dict[str, Any] = field(default_factory=dict)
    time_to_zero: float | None = None
    max_fleet: int = 0
    passed: bool = False
    stages: dict[str, float] = field(default_factory=dict)
    first_answer_s: float | None = None
    check: dict[str, Any] = field(default_factory=dict)


def demo_settings(state_dir: Path, stack: str, assignments: list[str]) -> tuple[Settings, list[str]]:
    """Settings for the demo stack and the flags that give child processes the same ones."""
    sets = {key: value for key, _, value in (a.partition("=") for a in assignments)}
    sets.setdefault("web.bind", f"127.0.0.1:{procs.free_port()}")
    sets.setdefault("scaling.max_workers", str(local.local_fleet_size()))
    sets.setdefault("scaling.poll_interval", DEMO_TICK)
    args = ["--state-dir", str(state_dir.resolve()), "--stack", stack]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return load(None, {}, {"state_dir": str(state_dir.resolve()), "stack": stack, **sets}), args


def own_stack_settings(overrides: Mapping[str, Any], assignments: list[str], kind: str,
                       default_state_dir: str) -> tuple[Settings, list[str]]:
    """A run's own stack: the given --stack and --state-dir, else ``<kind>-<time>`` in ``default_state_dir``."""
    stack = overrides.get("stack") or f"{kind}-{time.strftime('%H%M%S')}"
    state_dir = Path(overrides.get("state_dir") or default_state_dir)
    return demo_settings(state_dir, stack, assignments)


def run_demo(settings: Settings, child_args: list[str], report_dir: Path, count: int = 100,
             concurrency: int = 100, report: Report = log.info) -> DemoResult:
    result = DemoResult(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    began = time.time()
    try:
        url = local.up(settings, child_args, report=report)
        images, expected = _sample_images(report_dir / "images", count, report)
        started = time.time()
        result.summaries["cold"] = _workload("cold", url, images, expected, concurrency, report_dir, report)
        result.first_answer_s = _seconds_since(began, result.summaries["cold"])
        result.time_to_zero = _wait_for_zero(settings, result.summaries["cold"], report)
        result.summaries["warm"] = _workload("warm", url, images, expected, concurrency, report_dir, report)
        rows = _timeline(settings, started, report_dir, report, spans=_run_spans(result.summaries))
        result.max_fleet = max((r["pending"] + r["running"] for r in rows), default=0)
    finally:
        leftovers = local.down(settings, report=report)
    result.passed = _passed(result) and not leftovers
    _write_report(settings, result)
    return result


def run_openstack_demo(settings: Settings, report_dir: Path, count: int = 100, concurrency: int = 100,
                       report: Report = log.info, before_down: Callable[[OpenStackDemo], None] | None = None
                       ) -> DemoResult:
    """The same job with the web tier as a VM on the local OpenStack, reached through its floating IP from inside
    the fixture's namespace (``hybrid.local.web_vm``); ``before_down`` sees the running service (the tests look
    at Horizon then). Passes only if both runs were all right, the fleet came back to 0 and nothing is left."""
    from hybrid.local import web_vm

    result = DemoResult(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    leftovers: list[str] = []
    try:
        service = web_vm.up(settings, report=report)
        result.stages = dict(service.stages)
        images, expected = _sample_images(report_dir / "images", count, report)
        runs_started = time.time()
        result.summaries["cold"] = _workload("cold", service.url, images, expected, concurrency, report_dir, report,
                                             service.namespace)
        result.first_answer_s = _seconds_since(started, result.summaries["cold"])
        result.time_to_zero = _wait_for_zero(settings, result.summaries["cold"], report)
        result.summaries["warm"] = _workload("warm", service.url, images, expected, concurrency, report_dir, report,
                                             service.namespace)
        stack = web_vm.openstack_stack(settings)
        result.check = _check_server(stack, report)
        rows = _timeline(settings, runs_started, report_dir, report, _server_timeline(stack, settings),
                         _run_spans(result.summaries))
        result.max_fleet = max((r["pending"] + r["running"] for r in rows), default=0)
        if before_down is not None:
            before_down(OpenStackDemo(settings, stack, service.url, report_dir))
    finally:
        down_started = time.monotonic()
        leftovers = web_vm.down(settings, report=report)
        result.stages["down"] = round(time.monotonic() - down_started, 1)
    result.passed = _passed(result) and not leftovers and bool(result.check.get("ok"))
    _write_report(settings, result)
    return result


def _seconds_since(began: float, run: dict[str, Any]) -> float | None:
    """Seconds from ``began`` to the run's first right answer."""
    first = run.get("first_answer_at")
    return round(first - began, 1) if first else None


@dataclass(frozen=True)
class OpenStackDemo:
    """The running OpenStack demo, as ``before_down`` sees it."""

    settings: Settings
    stack: Any
    url: str
    report_dir: Path


def _check_server(stack: Any, report: Report) -> dict[str, Any]:
    """``hybrid openstack check`` on the demo's server: unit, /healthz from inside, clock, last log lines."""
    found = stack.check(IMAGE_LOGIN_USER)
    report(f"check: {'ok' if found.ok else 'failing'}: {found.detail}; {found.clock_detail}")
    for line in found.log_lines[-3:]:
        report(f"  {line}")
    return {"ok": found.ok, "detail": found.detail, "skew_s": found.skew, "log_lines": list(found.log_lines)}


def _server_timeline(stack: Any, settings: Settings) -> list[dict[str, Any]]:
    """The autoscaler's timeline, read from the web-tier server over SSH (the autoscaler runs there)."""
    from hybrid.openstack.remote import open_ssh, run

    path = f"{GUEST_STATE_DIR}/autoscale/{settings.timeline_path.name}"
    client = open_ssh(stack.ssh_target(IMAGE_LOGIN_USER), stack.key_path())
    try:
        text, code = run(client, f"sudo cat {path}")
    finally:
        client.close()
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")] if code == 0 else []


def _sample_images(folder: Path, count: int, report: Report) -> tuple[list[Path], dict[str, str]]:
    started = time.monotonic()
    samples = build_samples(folder, count, force=True)
    report(f"built {len(samples)} sample images in {folder} ({time.monotonic() - started:.1f} s)")
    return [s.path for s in samples], {s.name: s.label for s in samples}


def _workload(run: str, url: str, images: list[Path], expected: dict[str, str], concurrency: int,
              report_dir: Path, report: Report, namespace: str = "") -> dict[str, Any]:
    where = f" (from network namespace {namespace})" if namespace else ""
    report(f"== {run} run: {len(images)} requests, {concurrency} at a time, to {url}{where}")
    outcome = run_workload(url, images, len(images), concurrency, expected, namespace=namespace)
    outcome.write_json(report_dir / f"workload-{run}.json")
    report(outcome.format_summary())
    answered = [r.finished_at for r in outcome.records if r.outcome == "correct"]
    return {**outcome.summary(), "first_answer_at": min(answered, default=None)}


def _wait_for_zero(settings: Settings, cold: dict[str, Any], report: Report) -> float | None:
    """Seconds from the cold run's last answer until no instance is left (None if it never happens)."""
    fleet = Ec2Fleet(AwsClients(settings).ec2, settings.stack)
    last_answer = cold["finished_at"] or time.time()
    deadline = time.monotonic() + settings.worker.idle_timeout + ZERO_MARGIN
    while time.monotonic() < deadline:
        if not [i for i in fleet.instances() if i.state in ("pending", "running")]:
            zero = time.time() - last_answer
            report(f"fleet back to 0 instances {zero:.1f} s after the last answer "
                   f"(worker.idle_timeout = {settings.worker.idle_timeout:g} s)")
            return zero
        time.sleep(0.25)
    report("the fleet did not come back to 0 instances")
    return None


def _timeline(settings: Settings, since: float, report_dir: Path, report: Report,
              rows: list[dict[str, Any]] | None = None, spans: list[Span] | None = None) -> list[dict[str, Any]]:
    """The autoscaler's rows since ``since`` (from its local file unless given), saved and drawn with the runs
    shaded."""
    rows = [r for r in (read_timeline(settings.timeline_path) if rows is None else rows) if r["t"] >= since - 2]
    (report_dir / "timeline.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    picture = plot_timeline(rows, report_dir / "timeline.png", "hybrid demo", answered=_answered_times(report_dir),
                            spans=spans or [], settings=settings)
    report(f"timeline: {picture}")
    return rows


def _run_spans(summaries: dict[str, dict[str, Any]]) -> list[Span]:
    """The cold and warm runs, from their first request's start to their last answer (epoch seconds)."""
    return [Span(f"{run} run", summary["started_at"], summary["finished_at"])
            for run, summary in summaries.items() if summary.get("started_at") and summary.get("finished_at")]


def _answered_times(report_dir: Path) -> list[float]:
    times: list[float] = []
    for run in ("cold", "warm"):
        path = report_dir / f"workload-{run}.json"
        if path.exists():
            times += [r["finished_at"] for r in json.loads(path.read_text())["records"] if r["outcome"] == "correct"]
    return times


def _passed(result: DemoResult) -> bool:
    runs = [result.summaries.get(run, {}) for run in ("cold", "warm")]
    all_right = all(run and run.get("wrong") == 0 and run.get("failed") == 0 and run.get("correct") for run in runs)
    return all_right and result.time_to_zero is not None


def _write_report(settings: Settings, result: DemoResult) -> None:
    (result.report_dir / "report.json").write_text(json.dumps({
        "stack": settings.stack, "passed": result.passed, "time_to_zero_s": result.time_to_zero,
        "max_fleet": result.max_fleet, "stages_s": result.stages, "first_answer_s": result.first_answer_s,
        "check": result.check,
        "idle_timeout_s": settings.worker.idle_timeout, "max_workers": settings.scaling.max_workers,
        "runs": result.summaries}, indent=2, default=str))
