"""``hybrid bench compare``: the same images classified in-process and through the whole pipeline, side by side.

    hybrid bench compare [--count 40] [--concurrency 20] [--workers N] [--json PATH]

One run, three parts; progress lines go to stderr, the table to stdout.

1. **In-process.** ``load_classifier("onnx", threads=1)``: the runtime and thread count every worker uses.
   ``hybrid.tools.samples.build_samples`` writes COUNT distinct JPEGs (plus the warm-up and sequential-sample images
   below, all distinct; a fresh random seed each run, so no earlier run's result cache can answer them) into a
   temporary folder and labels them with that classifier. Then, on a machine with none of the stack running yet,
   each measured ``REPS`` times (median), after one untimed batch:

   * decode: ``decode_image`` of every image's bytes (JPEG decode, resize, crop, normalise);
   * model: ``predict`` on the pre-decoded arrays in batches of ``worker.batch_size`` (model only);
   * classify: ``classify`` on the bytes in batches of ``worker.batch_size`` (decode + model, what a worker
     calls); its images/s is the in-process throughput.

2. **Pipeline**, on the embedded default, started exactly as ``hybrid demo`` starts it (``demo_settings``,
   ``local.up``): local AWS server and instance runner, the stack, the autoscaler and the web tier. The fleet is
   fixed, so the comparison is about the pipeline and not about scaling: ``scaling.min_workers`` =
   ``scaling.max_workers`` = N (``--workers``, default 2: this machine's core count when it was written) and
   ``worker.idle_timeout`` = 3600 s so no worker ends itself mid-run. Once N worker processes run, 2 x N
   warm-up images are sent, then ``run_workload(url, images, COUNT, CONCURRENCY, expected)`` sends the COUNT
   images once each. Reported: end-to-end throughput (COUNT over first send to last answer), latency p50/p95
   per request, cache hits during the run (from ``/status``; must be 0), and the overhead per image =
   (end-to-end time per image at that throughput) - (model time per image). With N > 1 workers running in
   parallel the time per image is wall time shared by N workers, so the overhead can understate what each
   image costs: the CPU table says where the core time went.

   Then ``PROBES`` (10) further unseen images are posted one at a time with ``Accept: application/json``; the
   answer's ``timings`` (``store_ms``: storing the image in S3; ``queue_and_classify_ms``: SQS send until the reply is
   delivered; ``total_ms``: the service's whole time) split each request's latency into: web tier before/after
   the service (client latency - total_ms: HTTP, multipart parse, upload check, answer), store, and queueing and
   transfer (queue_and_classify_ms - the in-process time of ``classify([image])`` for that image, a batch of
   one as the worker runs it here, measured in part 1).

   CPU: user + system time from ``/proc/<pid>/stat`` during the timed run, per process group (web tier =
   gunicorn master and workers, local AWS server, instance runner, autoscaler, workers, this client process) and
   the machine's busy time from ``/proc/stat``; "other processes" is busy time none of them used.

3. **Verdict.** The ratio end-to-end throughput / in-process classify throughput (same runtime, one thread), and
   PASS/FAIL against the goal of at least ``GOAL_RATIO`` (80 %). A FAIL is printed as such; it is a finding, not
   an error.

The stack always comes down (``local.down``) in a ``finally`` block. Exit codes: 0 the run completed (whatever
the ratio), 1 an answer was wrong or failed (or the run could not complete, or a process was left over), 2 bad
usage. ``--json PATH`` writes every figure.
"""
from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
import requests

from app_tier.classifier import load_classifier
from hybrid.core import procs
from hybrid.core.decoding import decode_image
from hybrid.core.errors import HybridError
from hybrid.core.localserver import read_record
from hybrid.core.settings import Settings
from hybrid.core.wait import Poll, wait_for
from hybrid.local import stack as local
from hybrid.local.instance_folders import worker_processes
from hybrid.tools.demo import own_stack_settings
from hybrid.tools.samples import build_samples
from hybrid.tools.workload import run_workload

log = logging.getLogger(__name__)

GOAL_RATIO = 0.80
REPS = 3
PROBES = 10
WARMUP_PER_WORKER = 2
IDLE_TIMEOUT_S = 3600
FLEET_TIMEOUT_S = 90.0
REQUEST_TIMEOUT_S = 120.0
DEFAULT_WORKERS = 2
DEFAULT_STATE_DIR = ".hybrid/bench"
RUNTIME = "onnx"
BUSY_NOTE = 0.20
THREADS = 1

_T0 = time.monotonic()


def progress(line: str) -> None:
    """One progress line on stderr, with the seconds since the command started."""
    click.echo(f"  {time.monotonic() - _T0:6.1f} s  {line}", err=True)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


# ---------------------------------------------------------------- figures

@dataclass
class InProcess:
    """Part 1: the classifier alone, in this process."""

    runtime: str
    threads: int
    model_id: str
    batch_size: int
    images: int
    decode_ms_per_image: float
    model_ms_per_image: float
    classify_ms_per_image: float
    classify_images_per_s: float
    model_images_per_s: float
    labels_right: int


@dataclass
class Probe:
    """One sequential request of an unseen image with its JSON timings (milliseconds)."""

    name: str
    status: int | None
    outcome: str
    cached: bool | None
    latency_ms: float
    store_ms: float | None = None
    queue_and_classify_ms: float | None = None
    total_ms: float | None = None
    inference_ms: float | None = None


@dataclass
class Pipeline:
    """Part 2: the local stack end to end."""

    url: str = ""
    workers: int = 0
    fleet_ready_s: float = 0.0
    warmup: dict[str, Any] = field(default_factory=dict)
    workload: dict[str, Any] = field(default_factory=dict)
    cache_hits_during_run: int | None = None
    cpu: dict[str, Any] = field(default_factory=dict)
    probes: list[Probe] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)


@dataclass
class BenchResult:
    count: int
    concurrency: int
    workers: int
    cores: int
    seed: int
    stack: str
    state_dir: str
    in_process: InProcess | None = None
    pipeline: Pipeline = field(default_factory=Pipeline)
    error: str = ""
    run_s: float = 0.0

    def answers_wrong(self) -> int:
        """Wrong or failed answers anywhere in the run (in-process labels, warm-up, workload, probes)."""
        bad = sum(run.get("wrong", 0) + run.get("failed", 0) for run in (self.pipeline.warmup, self.pipeline.workload))
        bad += sum(p.outcome != "correct" for p in self.pipeline.probes)
        if self.in_process:
            bad += self.in_process.images - self.in_process.labels_right
        return bad

    def comparison(self) -> dict[str, Any]:
        """Throughputs, ratio, verdict and the overhead per image (empty until both parts have run)."""
        e2e_rate = self.pipeline.workload.get("throughput_rps", 0.0)
        if not (self.in_process and e2e_rate):
            return {}
        base = self.in_process.classify_images_per_s
        ratio = e2e_rate / base
        per_image_ms = 1000.0 / e2e_rate
        return {
            "in_process_images_per_s": round(base, 3), "end_to_end_images_per_s": round(e2e_rate, 3),
            "ratio": round(ratio, 4), "goal_ratio": GOAL_RATIO, "passed": ratio >= GOAL_RATIO,
            "end_to_end_ms_per_image": round(per_image_ms, 3),
            "overhead_ms_per_image": round(per_image_ms - self.in_process.model_ms_per_image, 3),
            "overhead_beyond_decode_ms_per_image": round(per_image_ms - self.in_process.classify_ms_per_image, 3),
            "ideal_fleet_images_per_s": round(base * min(self.workers, self.cores), 3),
        }

    @property
    def exit_code(self) -> int:
        return 1 if self.error or self.answers_wrong() or self.pipeline.leftovers else 0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "comparison": self.comparison(), "answers_wrong_or_failed": self.answers_wrong(),
                "exit_code": self.exit_code}


# ---------------------------------------------------------------- sample images

@dataclass(frozen=True)
class SampleSet:
    """The timed images (in-process and workload), the warm-up images and the sequential probes: all distinct."""

    timed: list[Path]
    warmup: list[Path]
    probes: list[Path]
    expected: dict[str, str]


def make_samples(folder: Path, count: int, warmup: int, classifier: Any, seed: int) -> SampleSet:
    started = time.monotonic()
    samples = build_samples(folder, count + warmup + PROBES, seed, classifier=classifier)
    paths = [s.path for s in samples]
    progress(f"built {len(paths)} distinct sample images (seed {seed}) in {time.monotonic() - started:.1f} s")
    return SampleSet(paths[:count], paths[count:count + warmup], paths[count + warmup:],
                     {s.name: s.label for s in samples})


# ---------------------------------------------------------------- part 1: in-process

def measure_in_process(classifier: Any, samples: SampleSet, batch_size: int) -> tuple[InProcess, dict[str, float]]:
    """The in-process figures of the timed images, and classify([image]) ms of each probe image."""
    datas = [path.read_bytes() for path in samples.timed]
    classifier.classify(datas[:batch_size])  # untimed: first-call allocations
    decode_s = median([_time_decode(datas) for _ in range(REPS)])
    arrays = [_decode(data) for data in datas]
    model_s = median([_time_predict(classifier, arrays, batch_size) for _ in range(REPS)])
    timings = [_time_classify(classifier, datas, batch_size) for _ in range(REPS)]
    classify_s, labels = median([t for t, _ in timings]), timings[-1][1]
    right = sum(labels[i] == samples.expected[p.stem] for i, p in enumerate(samples.timed))
    count = len(datas)
    figures = InProcess(classifier.runtime, THREADS, classifier.model_id, batch_size, count,
                        round(1000 * decode_s / count, 3), round(1000 * model_s / count, 3),
                        round(1000 * classify_s / count, 3), round(count / classify_s, 3),
                        round(count / model_s, 3), right)
    return figures, _probe_inference_ms(classifier, samples.probes)


def _decode(data: bytes) -> np.ndarray:
    return decode_image(data)


def _time_decode(datas: Sequence[bytes]) -> float:
    started = time.perf_counter()
    for data in datas:
        _decode(data)
    return time.perf_counter() - started


def _time_predict(classifier: Any, arrays: Sequence[np.ndarray], batch_size: int) -> float:
    batches = [np.stack(arrays[i:i + batch_size]) for i in range(0, len(arrays), batch_size)]
    started = time.perf_counter()
    for batch in batches:
        classifier.predict(batch)
    return time.perf_counter() - started


def _time_classify(classifier: Any, datas: Sequence[bytes], batch_size: int) -> tuple[float, list[str]]:
    labels: list[str] = []
    started = time.perf_counter()
    for i in range(0, len(datas), batch_size):
        labels += [getattr(p, "label", "") for p in classifier.classify(datas[i:i + batch_size])]
    return time.perf_counter() - started, labels


def _probe_inference_ms(classifier: Any, probes: Sequence[Path]) -> dict[str, float]:
    """Per probe image, the median ms of classify([its bytes]): decode + model for a batch of one."""
    result = {}
    for path in probes:
        data = path.read_bytes()
        result[path.stem] = round(1000 * median([_time_classify(classifier, [data], 1)[0] for _ in range(REPS)]), 3)
    return result


# ---------------------------------------------------------------- CPU accounting from /proc

@dataclass(frozen=True)
class CpuSnapshot:
    processes: dict[int, tuple[int, float]]
    """pid -> (session id, user + system CPU seconds)"""
    busy_s: float
    at: float


def take_snapshot() -> CpuSnapshot:
    stats = {pid: procs.read_stat(pid) for pid in procs.pids()}
    processes = {pid: (stat.session, stat.cpu_seconds) for pid, stat in stats.items() if stat}
    return CpuSnapshot(processes, procs.machine_busy_seconds(), time.monotonic())


Group = tuple[set[int], set[int]]
"""(session ids, pids): a process belongs to the group when its session or its pid is listed."""


def process_groups(settings: Settings, worker_pids: set[int]) -> dict[str, Group]:
    """The stack's process groups: each service was started in its own session, each worker made its own."""
    records = local.read_records(settings)
    info = read_record(settings.state_path)
    session_of = {"web tier": records["web"].pid if "web" in records else 0,
                  "local AWS server": info.pid if info else 0,
                  "instance runner": info.runner_pid if info else 0,
                  "autoscaler": records["autoscaler"].pid if "autoscaler" in records else 0}
    groups: dict[str, Group] = {name: ({pid}, set()) for name, pid in session_of.items()}
    groups[f"workers ({len(worker_pids)})"] = (set(worker_pids), set())
    groups["client (this process)"] = (set(), {os.getpid()})
    return groups


def cpu_between(before: CpuSnapshot, after: CpuSnapshot, groups: dict[str, Group]) -> dict[str, Any]:
    """CPU seconds per group between two snapshots, the rest of the machine, and the wall time."""
    used = {name: 0.0 for name in groups}
    for pid, (session, seconds) in after.processes.items():
        name = next((n for n, (sessions, pids) in groups.items() if session in sessions or pid in pids), None)
        if name:
            used[name] += max(0.0, seconds - before.processes.get(pid, (session, 0.0))[1])
    busy = after.busy_s - before.busy_s
    used["other processes"] = max(0.0, busy - sum(used.values()))
    return {"wall_s": round(after.at - before.at, 3), "machine_busy_s": round(busy, 3),
            "groups_s": {name: round(seconds, 3) for name, seconds in used.items()}}


# ---------------------------------------------------------------- part 2: the pipeline

def measure_pipeline(settings: Settings, child_args: list[str], samples: SampleSet, concurrency: int,
                     workers: int, inference_ms: dict[str, float], pipeline: Pipeline) -> None:
    """Brings the stack up, runs warm-up, the timed workload and the probes into ``pipeline``; always tears down."""
    try:
        pipeline.url = local.up(settings, child_args, report=progress)
        pipeline.workers = workers
        worker_pids = _wait_for_fleet(settings, workers, pipeline)
        pipeline.warmup = _workload("warm-up", pipeline.url, samples.warmup, samples.expected, workers)
        _timed_run(settings, pipeline, samples, concurrency, worker_pids)
        pipeline.probes = [_probe(pipeline.url, path, samples.expected, inference_ms) for path in samples.probes]
        progress(f"sequential sample: {len(pipeline.probes)} unseen images sent one at a time")
    finally:
        pipeline.leftovers = local.down(settings, report=progress)


def _wait_for_fleet(settings: Settings, workers: int, pipeline: Pipeline) -> set[int]:
    state_dir, started = settings.state_path.resolve(), time.monotonic()

    def probe() -> Poll[set[int]]:
        pids = set(worker_processes(state_dir).values())
        return Poll(pids, done=len(pids) >= workers, state=f"{len(pids)} of {workers} workers running")

    pids = wait_for(f"{workers} workers to run", probe, timeout=FLEET_TIMEOUT_S, interval=0.2)
    pipeline.fleet_ready_s = round(time.monotonic() - started, 3)
    progress(f"fleet: {len(pids)} worker processes running ({pipeline.fleet_ready_s:.1f} s)")
    return pids


def _workload(run: str, url: str, images: list[Path], expected: dict[str, str], concurrency: int) -> dict[str, Any]:
    outcome = run_workload(f"{url}/", images, len(images), concurrency, expected, timeout=REQUEST_TIMEOUT_S)
    summary = outcome.summary()
    summary["problems"] = [record.describe() for record in outcome.examples()]
    progress(f"{run}: {summary['correct']}/{summary['requests']} right in {summary['total_s']:.2f} s")
    return summary


def _timed_run(settings: Settings, pipeline: Pipeline, samples: SampleSet, concurrency: int,
               worker_pids: set[int]) -> None:
    hits_before = _cache_hits(pipeline.url)
    before = take_snapshot()
    pipeline.workload = _workload("timed run", pipeline.url, samples.timed, samples.expected, concurrency)
    after = take_snapshot()
    all_workers = worker_pids | set(worker_processes(settings.state_path.resolve()).values())
    pipeline.cpu = cpu_between(before, after, process_groups(settings, all_workers))
    hits_after = _cache_hits(pipeline.url)
    if hits_before is not None and hits_after is not None:
        pipeline.cache_hits_during_run = hits_after - hits_before


def _cache_hits(url: str) -> int | None:
    try:
        reply = requests.get(f"{url}/status", timeout=10)
        return int(reply.json()["counters"]["hits"])
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return None


def _probe(url: str, path: Path, expected: dict[str, str], inference_ms: dict[str, float]) -> Probe:
    """One upload with ``Accept: application/json``: outcome, client latency and the service's timings."""
    started = time.perf_counter()
    try:
        reply = requests.post(f"{url}/", files={"inputFile": (path.name, path.read_bytes(), "image/jpeg")},
                              headers={"Accept": "application/json"}, timeout=REQUEST_TIMEOUT_S)
        body = reply.json() if reply.status_code == 200 else {}
    except (requests.RequestException, ValueError) as exc:
        log.warning("probe %s failed: %s", path.name, exc)
        return Probe(path.stem, None, "failed", None, round(1000 * (time.perf_counter() - started), 3))
    latency_ms = round(1000 * (time.perf_counter() - started), 3)
    timings = body.get("timings", {})
    right = body.get("name") == path.stem and body.get("label") == expected[path.stem]
    outcome = "failed" if reply.status_code != 200 else "correct" if right else "wrong"
    return Probe(path.stem, reply.status_code, outcome, body.get("cached"), latency_ms, timings.get("store_ms"),
                 timings.get("queue_and_classify_ms"), timings.get("total_ms"), inference_ms.get(path.stem))


# ---------------------------------------------------------------- the whole run

def run_compare(settings: Settings, child_args: list[str], result: BenchResult) -> None:
    """Part 1 then part 2, filling ``result``; raises HybridError when the run cannot complete."""
    with tempfile.TemporaryDirectory(prefix="hybrid-bench-") as folder:
        classifier = load_classifier(RUNTIME, threads=THREADS)
        samples = make_samples(Path(folder) / "images", result.count, WARMUP_PER_WORKER * result.workers,
                               classifier, result.seed)
        result.in_process, inference_ms = measure_in_process(classifier, samples, settings.worker.batch_size)
        progress(f"in-process: {result.in_process.classify_images_per_s:.1f} images/s (classify, decode + model)")
        measure_pipeline(settings, child_args, samples, result.concurrency, result.workers, inference_ms,
                         result.pipeline)


def bench_settings(overrides: Mapping[str, Any], assignments: list[str], workers: int) -> tuple[Settings, list[str]]:
    """The demo's settings for this run: the parent ``hybrid`` command's --stack, --state-dir and --set, then the
    fixed fleet."""
    fleet = [f"scaling.min_workers={workers}", f"scaling.max_workers={workers}",
             f"worker.idle_timeout={IDLE_TIMEOUT_S}"]
    return own_stack_settings(overrides, [*assignments, *fleet], "bench", DEFAULT_STATE_DIR)


# ---------------------------------------------------------------- output

def format_report(result: BenchResult) -> list[str]:
    lines = _header(result)
    if result.comparison():
        lines += ["", *_side_by_side(result), "", *_overhead(result)]
    if result.pipeline.probes:
        lines += ["", *_probe_lines(result.pipeline.probes)]
    if result.pipeline.cpu:
        lines += ["", *_cpu_lines(result.pipeline.cpu, result.count)]
    lines += ["", *_verdict(result)]
    return lines


def _header(result: BenchResult) -> list[str]:
    ip = result.in_process
    model = f"{ip.model_id} on {ip.runtime}, {ip.threads} thread, batches of {ip.batch_size}" if ip else "(no model)"
    return [f"hybrid bench compare: {result.count} images, {model}",
            (f"pipeline: {result.workers} worker(s), fixed (this machine has {result.cores} cores), "
            f"{result.concurrency} concurrent requests, stack {result.stack}")]


def _side_by_side(result: BenchResult) -> list[str]:
    ip, run = result.in_process, result.pipeline.workload
    assert ip is not None
    lat = run["latency_s"]
    hits = result.pipeline.cache_hits_during_run
    rows = [["throughput (images/s)", f"{ip.classify_images_per_s:.1f}", f"{run['throughput_rps']:.1f}"],
            ["time per image (ms)", f"{ip.classify_ms_per_image:.1f}", f"{1000 / run['throughput_rps']:.1f}"
             if run["throughput_rps"] else "-"],
            ["  decode (ms/image)", f"{ip.decode_ms_per_image:.1f}", "-"],
            ["  model (ms/image)", f"{ip.model_ms_per_image:.1f}", "-"],
            ["latency p50 / p95 (s)", "-", f"{lat['p50']:.3f} / {lat['p95']:.3f}"],
            ["answers right", f"{ip.labels_right}/{ip.images}", f"{run['correct']}/{run['requests']}"],
            ["cache hits during the run", "-", "?" if hits is None else str(hits)]]
    return table(["", "in-process", "pipeline"], rows)


def _overhead(result: BenchResult) -> list[str]:
    c, ip = result.comparison(), result.in_process
    assert ip is not None
    return [(f"overhead per image: {c['end_to_end_ms_per_image']:.1f} ms end to end - {ip.model_ms_per_image:.1f} ms "
            f"model = {c['overhead_ms_per_image']:.1f} ms (of which decode {ip.decode_ms_per_image:.1f} ms, "
            f"the rest {c['overhead_beyond_decode_ms_per_image']:.1f} ms)"),
            (f"  (end-to-end ms per image is wall time at the measured throughput, shared by {result.workers} "
            f"worker(s); see CPU below for core time)")]


def _probe_lines(probes: list[Probe]) -> list[str]:
    ok = [p for p in probes if p.total_ms is not None and p.queue_and_classify_ms is not None]
    cached = sum(bool(p.cached) for p in probes)
    lines = [(f"sequential sample: {len(probes)} unseen images one at a time, {len(ok)} with timings, "
             f"{cached} cached; medians in ms:")]
    if not ok:
        return lines
    m = {key: median([getattr(p, key) or 0.0 for p in ok]) for key in
         ("latency_ms", "total_ms", "store_ms", "queue_and_classify_ms", "inference_ms")}
    before_after = median([p.latency_ms - (p.total_ms or 0.0) for p in ok])
    queueing = median([(p.queue_and_classify_ms or 0.0) - (p.inference_ms or 0.0) for p in ok])
    rows = [["client latency", f"{m['latency_ms']:.1f}"],
            ["  web tier before/after the service (HTTP, parse, check)", f"{before_after:.1f}"],
            ["  service total_ms", f"{m['total_ms']:.1f}"],
            ["    store_ms (S3 put of the image)", f"{m['store_ms']:.1f}"],
            ["    queue_and_classify_ms", f"{m['queue_and_classify_ms']:.1f}"],
            ["      inference (in-process classify of 1 image)", f"{m['inference_ms']:.1f}"],
            ["      queueing + transfer (SQS, S3, polls)", f"{queueing:.1f}"]]
    return lines + table(["part", "ms"], rows)


def _cpu_lines(cpu: dict[str, Any], images: int) -> list[str]:
    wall = cpu["wall_s"] or 1e-9
    rows = [[name, f"{seconds:.2f}", f"{100 * seconds / wall:.0f} %", f"{1000 * seconds / images:.1f}"]
            for name, seconds in cpu["groups_s"].items()]
    rows.append(["machine total", f"{cpu['machine_busy_s']:.2f}", f"{100 * cpu['machine_busy_s'] / wall:.0f} %",
                 f"{1000 * cpu['machine_busy_s'] / images:.1f}"])
    lines = [f"CPU during the timed run ({cpu['wall_s']:.2f} s wall; 100 % = one core):",
             *table(["process group", "cpu s", "of one core", "ms/image"], rows)]
    other = cpu["groups_s"]["other processes"] / wall
    if other > BUSY_NOTE:
        lines.append(f"NOTE: processes outside this run used {other:.0%} of a core meanwhile: the pipeline "
                     "figures understate a quiet machine")
    return lines


def _verdict(result: BenchResult) -> list[str]:
    c = result.comparison()
    lines = [] if c else ["no comparison: the run did not produce both throughputs"]
    if c:
        lines += [(f"ratio end-to-end / in-process throughput: {c['end_to_end_images_per_s']:.1f} / "
                  f"{c['in_process_images_per_s']:.1f} = {c['ratio']:.2f} (same runtime, {THREADS} thread per "
                  "worker; goal at least 0.80)"),
                  (f"  context: {result.workers} worker(s) on {result.cores} cores could at best reach "
                  f"{c['ideal_fleet_images_per_s']:.1f} images/s in-process; end to end is "
                  f"{c['end_to_end_images_per_s'] / c['ideal_fleet_images_per_s']:.0%} of that"),
                  (f"{'PASS' if c['passed'] else 'FAIL'}: end-to-end throughput is {c['ratio']:.0%} of in-process "
                  f"(goal at least {GOAL_RATIO:.0%})")]
    lines += _problem_lines(result)
    lines.append(f"run time {result.run_s:.1f} s; exit {result.exit_code}")
    return lines


def _problem_lines(result: BenchResult) -> list[str]:
    lines = [f"error: {result.error}"] if result.error else []
    bad = result.answers_wrong()
    if bad:
        lines.append(f"{bad} answer(s) wrong or failed")
        for run in (result.pipeline.warmup, result.pipeline.workload):
            lines += [f"  {problem}" for problem in run.get("problems", [])]
        lines += [f"  {p.outcome} {p.name} (status {p.status})" for p in result.pipeline.probes
                  if p.outcome != "correct"]
    lines += [f"left over: {command}" for command in result.pipeline.leftovers]
    return lines


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Left-aligned first column, right-aligned others."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))]).rstrip()

    return [line(header), *(line(r) for r in rows)]


def run_bench(settings: Settings, child_args: list[str], result: BenchResult) -> None:
    """``run_compare``, with a failure kept in ``result.error`` and the run's wall time in ``result.run_s``."""
    started = time.monotonic()
    try:
        run_compare(settings, child_args, result)
    except HybridError as exc:
        result.error = str(exc)
    result.run_s = round(time.monotonic() - started, 3)
