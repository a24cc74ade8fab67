"""Benchmark of the app tier: the classifier alone, one worker end to end on the local AWS server, and memory.

Run: ``.venv/bin/python benchmarks/bench_app_tier.py [--quick]`` (only 127.0.0.1 is contacted; nothing is left
running). Tables go to stdout, progress lines to stderr. The photos are four real ones shipped with scikit-image
(``coffee``, ``chelsea``, ``rocket``, ``astronaut``), encoded as JPEG (quality 92) with PIL.

Part 1, model only. Each runtime (``load_classifier("onnx", threads=1)``, ``load_classifier("torch", threads=1)``)
runs in a fresh child process of this script with ``OMP_NUM_THREADS=1``, as a worker does, so neither runtime's
imports or memory leak into the other's figures. For each batch size (1, 8, 16) and each call:
  * ``predict``: ``classifier.predict(batch)`` on images already decoded and preprocessed (model + softmax + top-5);
  * ``classify``: ``classifier.classify(list_of_jpeg_bytes)``, JPEG decode and preprocessing included, which is
    what a worker calls.
One repetition is 16 images (16 calls at batch 1, 2 at batch 8, 1 at batch 16); one untimed repetition warms up
each row first. ``images/s`` is the median over the repetitions (with their min..max); ``ms/call`` is the median
time of one call, i.e. the latency of one batch.

Part 2, one worker through the local server. ``start_emulator`` starts the local AWS server and its instance
runner, which turns app-tier EC2 instances into ``hybrid worker`` processes (onnx via ``worker.runtime = auto``,
``worker.batch_size = 8``, one thread). A stack is set up, ONE instance launched with the settings as user data,
and the worker is timed from ``run_instances`` to its first reply (``cold start``: process start, model load, first
batch). Then:
  * ``unloaded``: requests sent one at a time, each waiting for its reply: the latency of a request that finds the
    worker idle (SQS long polls on both sides, S3 get, classify, two S3 puts, reply, delete);
  * ``burst``: N requests (the four photos in turn, each uploaded once to the input bucket under
    ``sha256/<hex>``) are sent at once with ``send_message_batch``; every reply is collected from the response
    queue. ``images/s`` is N over the time from the first send to the last reply. The latency percentiles of the
    burst include queueing (everything was enqueued at t=0, so p50 is about half the burst), so read them as "time
    to drain", and the unloaded row as the per-request latency.
  * ``CPU during burst``: user+system CPU time during the burst (from /proc/<pid>/stat) of the worker, the local
    server (moto), the instance runner (it polls ``describe_instances`` every 0.25 s) and this client, each as a
    share of one core. Near 100 % for the worker means the single-threaded worker is compute-bound; well below
    means it waits on SQS / S3. All of them share this machine's CPUs, so on a small machine the local server
    and the client take CPU a real worker on its own instance would have to itself.
The ratio lines divide the end-to-end rate by the model-only onnx rates at batch 8 (the worker's batch size):
``classify`` (decode included) is the fair comparison; 1.0 would mean the AWS round trips cost nothing.

Part 3, memory, in MiB (kB / 1024 from /proc/<pid>/status, as ``hybrid.local.awsserver.process.rss_mb``): the worker
(found by the runner's pid file ``instances/<id>/pid``) once loaded and idle after its first reply (VmRSS), and its peak
over its whole life after the burst (VmHWM); the same for the model-only children (before loading the model,
after load + one batch-1 call, the peak once every row up to batch 8 had run -- the worker's batch size -- and the
peak up to batch 16; rows run in order of batch size, the table prints them grouped by call). The issue's goal is
at most 300 MB per worker on the fast path (onnx): PASS when both the idle RSS and the peak of the worker are at
most 300 MiB. ``libtorch mapped`` (part 2) says whether /proc/<pid>/maps of the worker holds libtorch: on the fast
path it must say no (the ONNX export is cached, so the worker never imports torch).

Part 4, teardown: the stack goes down (which terminates the instance, and the runner kills its worker) and the
emulator stops, in ``finally`` blocks; then any process still naming the temporary state folder in its command
line, or a worker its pid file still names, gets a WARNING (``common.wait_for_no_leftovers``).
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, for ``import common`` (see common.py)

import common
from common import PHOTOS, progress, table

from hybrid.core.procs import memory_mb

RUNTIMES = ("onnx", "torch")
MODEL_BATCHES = (1, 8, 16)
IMAGES_PER_REP = 16
WORKER_BATCH = 8
RSS_GOAL_MIB = 300.0
SEND_BATCH = 10


@dataclass(frozen=True)
class Plan:
    """How much work each measurement does."""

    model_reps: int
    requests: int
    unloaded_requests: int


FULL = Plan(model_reps=7, requests=200, unloaded_requests=8)
QUICK = Plan(model_reps=3, requests=60, unloaded_requests=4)


# ---------------------------------------------------------------- small helpers

def maps_library(pid: int, name: str) -> bool | None:
    """Whether a shared library whose path contains ``name`` is mapped into the process (None if unreadable)."""
    try:
        return name in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None


def fmt_mib(value: float | None) -> str:
    return f"{value:.0f}" if value is not None else "n/a"


# ---------------------------------------------------------------- photos

def jpeg_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.size


def write_photos(photos: dict[str, bytes], folder: Path) -> None:
    for name, data in photos.items():
        (folder / f"{name}.jpg").write_bytes(data)


def read_photos(folder: Path) -> list[bytes]:
    return [(folder / f"{name}.jpg").read_bytes() for name in PHOTOS]


# ---------------------------------------------------------------- part 1: model only (child process)

@dataclass
class ModelRow:
    runtime: str
    call: str
    batch: int
    rates: list[float]
    call_seconds: list[float]
    peak: float

    @property
    def median_rate(self) -> float:
        return statistics.median(self.rates)


def time_calls(call: Callable[[Any], Any], batches: list[Any]) -> list[float]:
    """Runs ``call`` on each batch; the seconds each took."""
    seconds = []
    for batch in batches:
        started = time.perf_counter()
        call(batch)
        seconds.append(time.perf_counter() - started)
    return seconds


def measure_row(call: Callable[[Any], Any], make_batch: Callable[[int], Any], batch: int,
                reps: int) -> tuple[list[float], list[float]]:
    """One untimed warm-up repetition, then ``reps`` timed ones of IMAGES_PER_REP images each."""
    batches = [make_batch(batch) for _ in range(IMAGES_PER_REP // batch)]
    time_calls(call, batches)
    rates, calls = [], []
    for _ in range(reps):
        seconds = time_calls(call, batches)
        rates.append(IMAGES_PER_REP / sum(seconds))
        calls += seconds
    return rates, calls


def child_main(runtime: str, photo_dir: Path, reps: int) -> int:
    """Child mode: loads one runtime, measures predict / classify, prints one JSON line."""
    import numpy as np

    from app_tier.classifier import load_classifier
    from hybrid.core.decoding import decode_image

    photos = read_photos(photo_dir)
    decoded = [decode_image(data) for data in photos]
    rss_base = memory_mb("self").get("VmRSS")
    classifier = load_classifier(runtime, threads=1)
    classifier.classify(photos[:1])
    rss_loaded = memory_mb("self").get("VmRSS")

    def pixels(size: int) -> Any:
        return np.stack([decoded[i % len(decoded)] for i in range(size)])

    def encoded(size: int) -> list[bytes]:
        return [photos[i % len(photos)] for i in range(size)]

    rows = []
    for batch in MODEL_BATCHES:
        for call_name, call, make_batch in (("predict", classifier.predict, pixels),
                                            ("classify", classifier.classify, encoded)):
            rates, calls = measure_row(call, make_batch, batch, reps)
            rows.append({"call": call_name, "batch": batch, "rates": rates, "call_seconds": calls,
                         "peak": memory_mb("self").get("VmHWM")})
    print(json.dumps({"runtime": classifier.runtime, "model_id": classifier.model_id, "rss_base": rss_base,
                      "rss_loaded": rss_loaded, "peak": memory_mb("self").get("VmHWM"),
                      "torch_imported": "torch" in sys.modules, "rows": rows}))
    return 0


# ---------------------------------------------------------------- part 1: model only (parent)

@dataclass
class ModelResult:
    runtime: str
    model_id: str
    rss_base: float
    rss_loaded: float
    peak: float
    torch_imported: bool
    rows: list[ModelRow]

    def row(self, call: str, batch: int) -> ModelRow:
        return next(r for r in self.rows if r.call == call and r.batch == batch)

    def peak_up_to(self, batch: int) -> float:
        """VmHWM once every row of at most ``batch`` images had run (rows run in order of batch size)."""
        return max(r.peak for r in self.rows if r.batch <= batch)


def run_model_child(runtime: str, photo_dir: Path, reps: int) -> ModelResult:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child-runtime", runtime,
                           "--photo-dir", str(photo_dir), "--reps", str(reps)],
                          check=False, capture_output=True, text=True, env=env, cwd=ROOT,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"model child for {runtime} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    rows = [ModelRow(runtime, r["call"], r["batch"], r["rates"], r["call_seconds"], r["peak"])
            for r in data.pop("rows")]
    return ModelResult(rows=rows, **data)


def model_table(results: list[ModelResult]) -> str:
    rows = []
    for result in results:
        for row in sorted(result.rows, key=lambda r: (r.call != "predict", r.batch)):
            rows.append([result.runtime, row.call, str(row.batch), f"{row.median_rate:.1f}",
                         f"{min(row.rates):.1f}..{max(row.rates):.1f}",
                         f"{statistics.median(row.call_seconds) * 1000:.1f}",
                         f"{statistics.median(row.call_seconds) * 1000 / row.batch:.1f}"])
    return table(["runtime", "call", "batch", "images/s", "min..max", "ms/call", "ms/image"], rows)


# ---------------------------------------------------------------- part 2: one worker on the local server

@dataclass
class WorkerRun:
    instance_id: str = ""
    pid: int = 0
    runtime_line: str = ""
    torch_mapped: bool | None = None
    cold_start_s: float = 0.0
    unloaded_s: list[float] = field(default_factory=list)
    requests: int = 0
    send_s: float = 0.0
    burst_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    duplicates: int = 0
    worker_cpu_s: float = 0.0
    emulator_cpu_s: float = 0.0
    runner_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    rss_idle: float | None = None
    rss_after: float | None = None
    peak: float | None = None
    teardown: list[str] = field(default_factory=list)
    leftovers: list[tuple[int, str]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return (self.requests - self.errors) / self.burst_s if self.burst_s else 0.0


@dataclass(frozen=True)
class Rig:
    """Plain boto3 clients on the local server plus the stack's queue URLs and bucket."""

    s3: Any
    sqs: Any
    ec2: Any
    stack: str
    requests_url: str
    responses_url: str

    @property
    def input_bucket(self) -> str:
        return f"{self.stack}-input"

    @property
    def response_queue(self) -> str:
        return f"{self.stack}-responses"


def make_rig(url: str, stack: str) -> Rig:
    sqs = common.local_client(url, "sqs")
    return Rig(common.local_client(url, "s3"), sqs, common.local_client(url, "ec2"), stack,
               sqs.get_queue_url(QueueName=f"{stack}-requests")["QueueUrl"],
               sqs.get_queue_url(QueueName=f"{stack}-responses")["QueueUrl"])


def find_worker_pid(state_dir: Path, instance_id: str, timeout: float = 60.0) -> int:
    """The pid of the instance's worker, from the runner's pid file (a forked worker's command line is its
    runner's)."""
    from hybrid.local.instance_folders import worker_processes

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = worker_processes(state_dir).get(instance_id)
        if pid:
            return pid
        time.sleep(0.1)
    raise RuntimeError(f"no worker process for {instance_id} after {timeout:.0f} s")


def upload_photos(rig: Rig, photos: dict[str, bytes]) -> dict[str, str]:
    """Each distinct image once in the input bucket under sha256/<hex>; name -> key."""
    return {name: common.upload_image(rig.s3, rig.input_bucket, data) for name, data in photos.items()}


def request_bodies(rig: Rig, keys: dict[str, str], count: int, label: str) -> dict[str, str]:
    """``count`` requests cycling over the photos: request id -> body."""
    from hybrid.core.messages import ClassifyRequest

    names = list(keys)
    bodies = {}
    for i in range(count):
        photo = names[i % len(names)]
        request_id = uuid.uuid4().hex
        bodies[request_id] = ClassifyRequest(request_id, keys[photo], f"{label}-{i}-{photo}.jpg",
                                             rig.response_queue).to_body()
    return bodies


def send_requests(rig: Rig, bodies: dict[str, str]) -> dict[str, float]:
    """Sends in batches of 10; request id -> perf_counter time its batch was sent."""
    items, sent = list(bodies.items()), {}
    for start in range(0, len(items), SEND_BATCH):
        chunk = items[start:start + SEND_BATCH]
        now = time.perf_counter()
        common.send_bodies(rig.sqs, rig.requests_url, [body for _, body in chunk])
        sent.update({request_id: now for request_id, _ in chunk})
    return sent


def collect_replies(rig: Rig, expected: set[str], timeout: float) -> tuple[dict[str, tuple[Any, float]], int]:
    """Replies of ``expected`` request ids: id -> (reply, perf_counter time received), and duplicates seen."""
    replies: dict[str, tuple[Any, float]] = {}
    duplicates, deadline = 0, time.monotonic() + timeout
    while not expected <= replies.keys() and time.monotonic() < deadline:
        received, now = common.receive_replies(rig.sqs, rig.responses_url)
        for reply in received:
            if reply.id in replies:
                duplicates += 1
            elif reply.id in expected:
                replies[reply.id] = (reply, now)
    missing = expected - replies.keys()
    if missing:
        raise RuntimeError(f"{len(missing)} of {len(expected)} replies missing after {timeout:.0f} s")
    return replies, duplicates


def round_trip(rig: Rig, keys: dict[str, str], count: int, label: str, timeout: float) -> list[float]:
    """``count`` requests one at a time, each waiting for its reply; the seconds each took."""
    seconds, names = [], list(keys)
    for n in range(count):
        photo = names[n % len(names)]
        bodies = request_bodies(rig, {photo: keys[photo]}, 1, f"{label}{n}")
        sent = send_requests(rig, bodies)
        replies, _ = collect_replies(rig, set(bodies), timeout)
        seconds += [replies[i][1] - sent[i] for i in bodies]
    return seconds


def runtime_line(state_dir: Path, instance_id: str) -> str:
    """The worker's own line saying which model and runtime it loaded."""
    log_path = state_dir / "instances" / instance_id / "worker.log"
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no worker.log)"
    return next((line.strip() for line in lines if ": model " in line), "(no model line in worker.log)")


def burst(rig: Rig, keys: dict[str, str], run: WorkerRun, info: Any, count: int) -> None:
    """N requests at once; fills the burst figures of ``run``."""
    bodies = request_bodies(rig, keys, count, "burst")
    pids = (run.pid, info.pid, info.runner_pid, os.getpid())
    cpu_before = [common.cpu_seconds(pid) for pid in pids]
    started = time.perf_counter()
    sent = send_requests(rig, bodies)
    run.send_s = time.perf_counter() - started
    replies, run.duplicates = collect_replies(rig, set(bodies), timeout=max(60.0, count * 1.0))
    run.burst_s = max(at for _, at in replies.values()) - started
    run.worker_cpu_s, run.emulator_cpu_s, run.runner_cpu_s, run.client_cpu_s = (
        common.cpu_seconds(pid) - before for pid, before in zip(pids, cpu_before))
    run.requests = count
    run.errors = sum(1 for reply, _ in replies.values() if not reply.ok)
    run.latencies_s = [at - sent[i] for i, (_, at) in replies.items()]


def measure_worker(plan: Plan, photos: dict[str, bytes]) -> WorkerRun:
    """Part 2 and the worker's memory, with teardown and the leftover-process check."""
    run = WorkerRun()
    with tempfile.TemporaryDirectory(prefix="bench-app-tier-") as tmp:
        state_dir = Path(tmp).resolve()
        name = f"bench-{secrets.token_hex(3)}"
        try:
            run_worker_phase(plan, photos, state_dir, name, run)
        finally:
            run.leftovers = common.wait_for_no_leftovers(state_dir)
            for pid, cmd in run.leftovers:
                progress(f"WARNING: process left running: pid {pid}: {cmd[:160]}")
    return run


def run_worker_phase(plan: Plan, photos: dict[str, bytes], state_dir: Path, name: str, run: WorkerRun) -> None:
    from hybrid.core.settings import load

    settings = load(None, {}, {"stack": name, "state_dir": str(state_dir), "worker.idle_timeout": "60"})
    if settings.worker.batch_size != WORKER_BATCH:
        progress(f"note: worker.batch_size is {settings.worker.batch_size}, not {WORKER_BATCH}")
    progress("starting the local AWS server and instance runner")
    with common.local_server(state_dir, run.teardown.append) as info, \
            common.aws_stack(settings, run.teardown.append) as stack:
        rig = make_rig(info.url, name)
        keys = upload_photos(rig, photos)
        progress(f"stack {name} is up; launching one worker instance")
        launched = time.perf_counter()
        run.instance_id = common.launch_app_tier(rig.ec2, stack, settings)[0]
        warm_up = request_bodies(rig, {"coffee": keys["coffee"]}, 1, "warmup")
        send_requests(rig, warm_up)
        collect_replies(rig, set(warm_up), timeout=180)
        run.cold_start_s = time.perf_counter() - launched
        run.pid = find_worker_pid(state_dir, run.instance_id, timeout=10)
        run.runtime_line = runtime_line(state_dir, run.instance_id)
        progress(f"worker {run.instance_id} (pid {run.pid}) answered its first request after "
                 f"{run.cold_start_s:.1f} s")
        time.sleep(1.0)
        run.rss_idle = memory_mb(run.pid).get("VmRSS")
        run.torch_mapped = maps_library(run.pid, "libtorch")
        run.unloaded_s = round_trip(rig, keys, plan.unloaded_requests, "single", timeout=60)
        progress(f"sending a burst of {plan.requests} requests")
        burst(rig, keys, run, info, plan.requests)
        status = memory_mb(run.pid)
        run.rss_after, run.peak = status.get("VmRSS"), status.get("VmHWM")
        progress(f"burst answered in {run.burst_s:.1f} s; tearing down")


def worker_report(run: WorkerRun, onnx: ModelResult) -> str:
    unloaded = run.unloaded_s
    lat = run.latencies_s
    rows = [
        ["cold start: run_instances -> first reply", f"{run.cold_start_s:.2f} s"],
        [f"unloaded latency, {len(unloaded)} sequential requests: p50 / max",
         f"{statistics.median(unloaded) * 1000:.0f} / {max(unloaded) * 1000:.0f} ms"],
        [f"burst: {run.requests} requests sent in", f"{run.send_s:.2f} s"],
        ["burst: all replies in (first send -> last reply)", f"{run.burst_s:.2f} s"],
        ["burst: error replies / duplicate replies", f"{run.errors} / {run.duplicates}"],
        ["END-TO-END images/s", f"{run.rate:.1f}"],
        ["burst latency incl. queueing: p50 / p95 / max",
         f"{common.percentile(lat, 0.5):.2f} / {common.percentile(lat, 0.95):.2f} / {max(lat):.2f} s"],
    ]
    for label, seconds in (("worker", run.worker_cpu_s), ("emulator (moto)", run.emulator_cpu_s),
                           ("instance runner", run.runner_cpu_s), ("this client", run.client_cpu_s)):
        rows.append([f"CPU during burst: {label} (share of one core)",
                     f"{seconds:.2f} s ({100 * seconds / run.burst_s:.0f} %)"])
    for call in ("classify", "predict"):
        model_rate = onnx.row(call, WORKER_BATCH).median_rate
        rows.append([f"ratio end-to-end / onnx {call}() batch {WORKER_BATCH} ({model_rate:.1f} images/s)",
                     f"{run.rate / model_rate:.2f}"])
    torch = {True: "yes", False: "no", None: "unknown"}[run.torch_mapped]
    heading = f"worker: {run.runtime_line}\nlibtorch mapped in the worker process: {torch}\n"
    return heading + table(["one worker (batch_size 8, 1 thread)", "value"], rows)


def memory_report(run: WorkerRun, models: list[ModelResult]) -> str:
    rows = [["worker (hybrid worker), idle after first reply", "", fmt_mib(run.rss_idle), "", ""],
            ["worker after the burst (batches of <= 8)", "", fmt_mib(run.rss_after), fmt_mib(run.peak), ""]]
    for result in models:
        rows.append([f"model-only child, {result.runtime}" + (" (torch imported)" if result.torch_imported else ""),
                     fmt_mib(result.rss_base), fmt_mib(result.rss_loaded),
                     fmt_mib(result.peak_up_to(WORKER_BATCH)), fmt_mib(result.peak)])
    text = table(["process (MiB)", "before load", "RSS loaded", "peak, batch <= 8", "peak, batch <= 16"], rows)
    worst = max((v for v in (run.rss_idle, run.peak) if v is not None), default=None)
    verdict = "n/a (not measured)" if worst is None else ("PASS" if worst <= RSS_GOAL_MIB else "FAIL")
    return (f"{text}\ngoal: at most {RSS_GOAL_MIB:.0f} MB per worker on the fast path (onnx): {verdict} "
            f"(idle RSS {fmt_mib(run.rss_idle)}, peak {fmt_mib(run.peak)} MiB)")


def teardown_report(run: WorkerRun) -> str:
    lines = list(run.teardown)
    if run.leftovers:
        lines += [f"WARNING: process left running: pid {pid}: {cmd[:160]}" for pid, cmd in run.leftovers]
    else:
        lines.append("leftover processes (worker, runner, emulator): none")
    return "\n".join(lines)


# ---------------------------------------------------------------- report

def header(plan: Plan, quick: bool) -> str:
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (f"hybrid app-tier benchmark -- {now}, {os.cpu_count()} CPUs ({common.cpu_model()}), "
            f"python {sys.version.split()[0]}, onnxruntime {common.package_version('onnxruntime')}, "
            f"torch {common.package_version('torch')}, {'--quick' if quick else 'full'} "
            f"({plan.model_reps} reps, {plan.requests} requests)")


def photos_line(photos: dict[str, bytes]) -> str:
    return "photos (JPEG q92): " + ", ".join(
        f"{name} {'x'.join(map(str, jpeg_size(data)))} {len(data) / 1000:.0f} kB" for name, data in photos.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="App-tier benchmark: classifier, one worker end to end, memory.")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and requests (under a minute)")
    parser.add_argument("--child-runtime", choices=RUNTIMES, help=argparse.SUPPRESS)
    parser.add_argument("--photo-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--reps", type=int, default=FULL.model_reps, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_runtime:
        return child_main(args.child_runtime, args.photo_dir, args.reps)
    plan = QUICK if args.quick else FULL
    print(header(plan, args.quick), flush=True)
    photos = {name: common.photo_jpeg(name) for name in PHOTOS}
    print(photos_line(photos), flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-photos-") as photo_dir:
        write_photos(photos, Path(photo_dir))
        models = []
        for runtime in RUNTIMES:
            progress(f"model only: {runtime}")
            models.append(run_model_child(runtime, Path(photo_dir), plan.model_reps))
    print(f"\n1. Model only: {models[0].model_id}, threads=1, one child process per runtime, median of "
          f"{plan.model_reps} reps of {IMAGES_PER_REP} images after one warm-up rep")
    print(model_table(models), flush=True)

    run = measure_worker(plan, photos)
    print(f"\n2. One worker through the local AWS server ({run.instance_id}, pid {run.pid})")
    print(worker_report(run, models[0]))
    print("\n3. Memory (MiB = kB / 1024 from /proc/<pid>/status)")
    print(memory_report(run, models))
    print("\n4. Teardown")
    print(teardown_report(run))
    print(f"\ntotal run time {common.since_start():.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
