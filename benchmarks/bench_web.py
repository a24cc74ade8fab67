"""Benchmark of the web tier: cache-hit throughput and latency, the cost of a cache miss beyond the model, and
where a cache hit's time goes.

Run: ``.venv/bin/python benchmarks/bench_web.py [--quick | --cache-only]`` (only 127.0.0.1 is contacted; nothing is
left running; ``--cache-only`` runs part 6 alone, in seconds, without the emulator or the model).
Results go to stdout, progress lines to stderr. The photos are four real ones shipped with scikit-image
(``coffee``, ``chelsea``, ``rocket``, ``astronaut``), resized with PIL and encoded as JPEG (quality 92).

Setup. ``start_emulator`` starts the local AWS server and its instance runner in a temporary state folder; a stack
is set up (``build_aws_stack(...).up()``) and one app-tier instance launched as tests/integration/rig.py's
``Stack.launch`` does (the runner starts a worker process for it, found by ``instances/<id>/pid``;
``worker.idle_timeout`` 120 s so it stays up). ``hybrid web`` runs as a subprocess on a free loopback port, gunicorn gthread with the default
``web.threads``. Each server configuration is measured in turn: ``--processes 1`` first, then ``--processes 2``.

Part 1, cache hits. The cache is warmed by posting 16 distinct JPEGs (4 photos x 4 sizes) once each (misses that
go to the worker), then each is posted again with ``Accept: application/json`` and must answer ``cached: true``.
The 2-process server starts after the 1-process one stopped (which flushes the cache file), so both of its
processes load every entry from the file; it is checked the same way (each image posted several times on new
connections, so both processes answer some). Then ``CONCURRENCY`` (32) client threads, each on its own keep-alive
``http.client`` connection, post the warm images in turn for a fixed time (10 s; 4 s with ``--quick``) after an
untimed warm-up of 1 s. Requests are multipart/form-data, field ``inputFile``, built once per image before the run
(so the client spends its CPU on HTTP only) and answered in text/plain; every answer must be 200 and exactly
``name:label`` as learned while warming, else it counts as an error. ``requests/s`` is the answered requests over
the time from the start until the last thread finished its last request; latency is per request at the client
(send until the whole body is read), nearest-rank percentiles. As a ceiling of the HTTP stack alone, the same
clients then hammer ``GET /healthz`` (no upload, no handler work) for a shorter time.
CPU: user+system time from /proc/<pid>/stat during the timed window, of the gunicorn master and its worker
processes ("server"), of this client process, of the local AWS server + instance runner + app-tier worker
("emulator side", idle pollers here: a cache hit touches no queue), and the machine's total busy time from
/proc/stat, each as a share of ONE core (this machine has ``os.cpu_count()`` cores, so 100 % x cores is all of it);
"other processes" is the machine's busy time not accounted to any of those (another job on a shared machine), and a
NOTE is printed when it exceeds 20 % of a core, because then the figures understate a quiet machine.
The client competes with the server for the same CPUs: read the client share as CPU a real client would not take
from the server.

Part 2, a cache miss beyond the model. With the worker running and idle, ``MISSES`` (30; 10 with ``--quick``)
never-seen JPEGs (other sizes than the warm set) are posted one at a time with ``Accept: application/json``;
end-to-end latency is measured at the client and the answer's ``timings`` (``store_ms``: S3 exists+put,
``queue_and_classify_ms``: send request -> reply delivered, ``total_ms``: the service's whole time) are kept. Then
the model time of the same images is measured in this process, ``load_classifier("onnx", 1).classify([bytes])``
per image, median of several calls (decode + preprocess + model, as a worker does for a batch of one). Overhead =
end-to-end - model time, per image; the table gives medians (and p90) of each part:
``before/after the service`` = end-to-end - total_ms (HTTP, multipart parse, the upload's decode check, JSON
answer); ``queue+worker overhead`` = queue_and_classify_ms - model (SQS send, the worker's long poll, S3 get,
two S3 puts, reply, the dispatcher's long poll and delete).

Part 3, goals from the issue: at least 1000 cache hits/s and p99 under 20 ms on this machine, PASS/FAIL per server
configuration with the measured values. With 32 requests always in flight the two are linked (Little's law: mean
latency = 32 / rate), so p99 < 20 ms needs at least 1600 requests/s here.

Part 4, where a cache hit's time goes, in this process (no HTTP, no client, one thread): the Flask app is built
with ``create_app(settings, build_runtime(settings))`` for the same stack (same cache file, its own reply queue)
and its test client posts the same pre-built multipart bodies ``TEST_CLIENT_CALLS`` times (2000; 500 with
``--quick``), in four variants: as served (with the per-request INFO log line written through a root handler with
the CLI's format to a file, as ``hybrid web`` does to its stderr), then without the log line, with the image
decode (``hybrid.core.decoding.check_decodable``, which the upload check calls) a no-op, and without both. The
last three are what-ifs, patched in this process for the measurement only and restored; project code is not changed.
``decodes/hit`` counts ``check_decodable`` calls per request: 1 means the upload is decoded before the cache lookup,
0 that a hit skips it. Beside them, the per-call cost of the pieces: ``check_decodable`` of each warm image (open,
size check, then a full decode, JPEG at reduced scale, or for PNG a check of the whole file without decoding its
pixels; and ``decode_image``, the worker's whole decode, for comparison), SHA-256,
``ResultCache.get``, werkzeug's multipart parse; and the server CPU per request measured over HTTP in part 1.
All medians of per-call wall time with nothing else of this benchmark busy but idle pollers.

The code under test may change while the benchmark runs (others edit the project): a fingerprint (SHA-256 of
web_tier/*.py, hybrid/core/decoding.py, hybrid/cli/*.py, hybrid/aws/*.py) is printed in the header, taken at each
server start and for part 4, and a WARNING says so if they differ.

Part 6, the result cache's file cost, in this process (no server): a ``ResultCache`` in a temporary folder, with
``max_entries`` 100,000 (the default ``web.cache_max_entries``) and no flusher thread, is filled with 100,000
entries (five-label top-5s, model id ``efficientnet-lite0/imagenet@<12 hex>``) and flushed once (this first write
creates the file whole: the cost of a compaction of 100,000 entries). Then ``CACHE_WRITES`` (15) times: a put of a
new image (which evicts one) and a flush, timed with ``time.process_time`` (CPU of this process, user + system);
median and max. Then the CPU of opening a second cache on the file (what another server process pays when it
starts, or after the file was rewritten). Goal from the issue: a write at 100,000 entries under 5 ms of CPU.

Part 5, teardown in ``finally`` blocks: the web server gets SIGTERM (and SIGKILL after 30 s), the stack goes down
(instances first), the emulator stops; then any process naming the state folder, or a worker its pid file still
names, gets a WARNING (``common.wait_for_no_leftovers``).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import io
import json
import math
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, for ``import common`` (see common.py)

import common
from common import PHOTOS, percentile, progress, table

HIT_SIZES = ((320, 240), (400, 300), (512, 384), (640, 480))
CONCURRENCY = 32
PROCESS_COUNTS = (1, 2)
WORKERS = 1
GOAL_RATE = 1000.0
GOAL_P99_MS = 20.0
CACHE_ENTRIES = 100_000
CACHE_WRITES = 15
GOAL_CACHE_WRITE_MS = 5.0
OTHERS = "other processes (not this benchmark)"
BOUNDARY = "hybridbench" + secrets.token_hex(8)


@dataclass(frozen=True)
class Plan:
    """How much work each measurement does."""

    duration_s: float
    warmup_s: float
    healthz_s: float
    misses: int
    model_reps: int
    test_client_calls: int
    verify_posts: int


FULL = Plan(duration_s=10.0, warmup_s=1.0, healthz_s=3.0, misses=30, model_reps=5, test_client_calls=2000,
            verify_posts=4)
QUICK = Plan(duration_s=4.0, warmup_s=1.0, healthz_s=2.0, misses=10, model_reps=3, test_client_calls=500,
             verify_posts=2)


# ---------------------------------------------------------------- small helpers

def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle (nor waiting on I/O) since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def child_pids(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent and fields[0] != "Z":
                found.append(int(entry.name))
    return sorted(found)


CODE_FILES = ("web_tier/*.py", "web_tier/cache/*.py", "hybrid/core/decoding.py", "hybrid/cli/*.py", "hybrid/aws/*.py")


def code_fingerprint() -> str:
    """A short hash of the code under test (web tier, the decode check, the CLI, the AWS adapters), to see if it
    changed mid-run."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(p for pattern in CODE_FILES for p in ROOT.glob(pattern)):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:10]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def median_call_seconds(call: Callable[[], Any], calls: int) -> float:
    """Median wall time of ``calls`` calls, after one untimed call."""
    call()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


# ---------------------------------------------------------------- photos and request bodies

def hit_images() -> dict[str, bytes]:
    """The warm set: 4 photos x 4 sizes, 16 distinct JPEGs."""
    return {f"{name}_{w}x{h}": common.photo_jpeg(name, (w, h)) for name in PHOTOS for w, h in HIT_SIZES}


def miss_images(count: int) -> dict[str, bytes]:
    """``count`` distinct JPEGs of sizes the warm set does not use (never seen by the cache)."""
    return {f"miss{i:02d}_{PHOTOS[i % 4]}": common.photo_jpeg(PHOTOS[i % 4], (333 + 7 * i, 251 + 5 * i))
            for i in range(count)}


def multipart(name: str, data: bytes) -> bytes:
    """A multipart/form-data body with one file in field ``inputFile``, named ``<name>.jpg``."""
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"inputFile\"; filename=\"{name}.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


# ---------------------------------------------------------------- the local AWS side

@dataclass
class Env:
    state_dir: Path
    stack_name: str
    settings: Any = None
    info: Any = None
    stack: Any = None
    instance_ids: list[str] = field(default_factory=list)
    worker_pids: list[int] = field(default_factory=list)
    teardown: list[str] = field(default_factory=list)


def find_worker_pids(env: Env) -> list[int]:
    """The workers' pids, from the runner's ``instances/<id>/pid`` files (a forked worker's command line does not
    name its instance)."""
    from hybrid.local.instance_folders import worker_processes

    pids = worker_processes(env.state_dir)
    return [pids[instance_id] for instance_id in env.instance_ids if instance_id in pids]


# ---------------------------------------------------------------- the web server subprocess

class WebProcess:
    """`hybrid web --processes N` as a subprocess on a free loopback port (as tests/integration's WebServer)."""

    def __init__(self, env: Env, processes: int) -> None:
        self.env, self.processes = env, processes
        self.port = common.free_port()
        self.log_path = env.state_dir / f"web-p{processes}.log"
        self.args = [sys.executable, "-m", "hybrid", "--state-dir", str(env.state_dir), "--stack", env.stack_name,
                     "--set", f"web.bind=127.0.0.1:{self.port}", "web", "--processes", str(processes)]
        self.process: subprocess.Popen | None = None
        self.fingerprint = ""

    def start(self) -> WebProcess:
        self.fingerprint = code_fingerprint()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            cwd=ROOT, env={**os.environ, "AWS_EC2_METADATA_DISABLED": "true"})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.process.poll() is None:
            if len(self.worker_pids()) >= self.processes and self._healthy():
                return self
            time.sleep(0.2)
        raise RuntimeError(f"web tier did not come up; log:\n{self.log_tail()}")

    def _healthy(self) -> bool:
        try:
            status, _ = request(self.port, "GET", "/healthz", timeout=5)
        except OSError:
            return False
        return status == 200

    def worker_pids(self) -> list[int]:
        return child_pids(self.process.pid) if self.process else []

    def server_pids(self) -> list[int]:
        return [self.process.pid, *self.worker_pids()] if self.process else []

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self) -> str:
        if not self.process or self.process.poll() is not None:
            return f"web --processes {self.processes}: not running"
        started = time.perf_counter()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
            how = "SIGTERM"
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            how = "SIGKILL after 30 s"
        return f"web --processes {self.processes} stopped by {how} ({time.perf_counter() - started:.2f} s)"


@contextlib.contextmanager
def web_server(env: Env, processes: int) -> Iterator[WebProcess]:
    server = WebProcess(env, processes)
    try:
        yield server.start()
    finally:
        env.teardown.append(server.stop())


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            timeout: float = 120) -> tuple[int, bytes]:
    """One request on a new connection; (status, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body, headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def post_json(port: int, name: str, data: bytes, timeout: float = 180) -> tuple[int, dict[str, Any]]:
    status, body = request(port, "POST", "/", multipart(name, data),
                           {"Content-Type": CONTENT_TYPE, "Accept": "application/json"}, timeout)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {"error": body[:200].decode(errors="replace")}


# ---------------------------------------------------------------- part 1: cache hits

def warm_cache(port: int, images: dict[str, bytes]) -> dict[str, str]:
    """Posts each image once (a miss the worker answers); name -> label."""
    labels = {}
    for name, data in images.items():
        status, answer = post_json(port, name, data)
        if status != 200:
            raise RuntimeError(f"warming {name}: HTTP {status}: {answer}")
        labels[name] = answer["label"]
    return labels


def verify_hits(port: int, images: dict[str, bytes], labels: dict[str, str], times: int) -> tuple[int, int]:
    """Each image posted ``times`` times on new connections: (answers with cached=true and the right label, all)."""
    good = total = 0
    for _ in range(times):
        for name, data in images.items():
            status, answer = post_json(port, name, data, timeout=30)
            total += 1
            good += status == 200 and answer.get("cached") is True and answer.get("label") == labels[name]
    return good, total


@dataclass
class LoadResult:
    """What a timed hammer produced, with CPU seconds per party during the window."""

    label: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    reconnects: int = 0
    error_samples: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def pct_ms(self, fraction: float) -> float:
        return percentile(self.latencies, fraction) * 1000 if self.latencies else float("nan")


@dataclass(frozen=True)
class Shot:
    method: str
    path: str
    body: bytes | None
    headers: dict[str, str]
    expected: bytes | None  # exact answer body, or None to accept any 200


def upload_shots(images: dict[str, bytes], labels: dict[str, str]) -> list[Shot]:
    return [Shot("POST", "/", multipart(name, data), {"Content-Type": CONTENT_TYPE},
                 f"{name}:{labels[name]}".encode()) for name, data in images.items()]


def client_thread(port: int, shots: list[Shot], offset: int, stop_at: list[float], go: threading.Event,
                  result: LoadResult, lock: threading.Lock) -> None:
    """One client on its own keep-alive connection, cycling over ``shots`` until ``stop_at[0]``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies, errors, reconnects, samples = [], 0, 0, []
    go.wait()
    n = offset
    while time.perf_counter() < stop_at[0]:
        shot = shots[n % len(shots)]
        n += 1
        started = time.perf_counter()
        try:
            connection.request(shot.method, shot.path, shot.body, shot.headers)
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            errors += 1
            samples.append(f"{type(exc).__name__}: {exc}")
            connection.close()
            continue
        elapsed = time.perf_counter() - started
        if response.status != 200 or (shot.expected is not None and body != shot.expected):
            errors += 1
            samples.append(f"HTTP {response.status}: {body[:80]!r}")
        else:
            latencies.append(elapsed)
        if response.will_close:
            reconnects += 1
    connection.close()
    with lock:
        result.latencies += latencies
        result.errors += errors
        result.reconnects += reconnects
        result.error_samples += samples[:3]


def hammer(port: int, shots: list[Shot], seconds: float, label: str,
           cpu_parties: dict[str, list[int]] | None = None) -> LoadResult:
    """CONCURRENCY threads for ``seconds``; CPU of each party (name -> pids) over the same window."""
    result, lock, go = LoadResult(label), threading.Lock(), threading.Event()
    stop_at = [math.inf]
    threads = [threading.Thread(target=client_thread, args=(port, shots, i * 7, stop_at, go, result, lock),
                                daemon=True) for i in range(CONCURRENCY)]
    for thread in threads:
        thread.start()
    parties = {**(cpu_parties or {}), "this client": [os.getpid()]}
    before = {name: sum(common.cpu_seconds(pid) for pid in pids) for name, pids in parties.items()}
    busy_before = machine_busy_seconds()
    started = time.perf_counter()
    stop_at[0] = started + seconds
    go.set()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - started
    result.cpu = {name: sum(common.cpu_seconds(pid) for pid in pids) - before[name]
                  for name, pids in parties.items()}
    machine = machine_busy_seconds() - busy_before
    result.cpu[OTHERS] = max(0.0, machine - sum(result.cpu.values()))
    result.cpu["machine (all processes)"] = machine
    return result


def measure_hits(server: WebProcess, env: Env, images: dict[str, bytes], labels: dict[str, str],
                 plan: Plan) -> tuple[LoadResult, LoadResult]:
    shots = upload_shots(images, labels)
    parties = {"server (gunicorn master + workers)": server.server_pids(),
               "emulator side (moto, runner, worker)": [env.info.pid, env.info.runner_pid, *env.worker_pids]}
    progress(f"--processes {server.processes}: untimed warm-up {plan.warmup_s:g} s")
    hammer(server.port, shots, plan.warmup_s, "warm-up")
    progress(f"--processes {server.processes}: {CONCURRENCY} clients posting cache hits for {plan.duration_s:g} s")
    hits = hammer(server.port, shots, plan.duration_s, f"cache hits, --processes {server.processes}", parties)
    progress(f"  {hits.rate:.0f} requests/s, p99 {hits.pct_ms(0.99):.1f} ms, {hits.errors} errors")
    health = [Shot("GET", "/healthz", None, {}, b"ok\n")]
    health_run = hammer(server.port, health, plan.healthz_s, f"GET /healthz, --processes {server.processes}",
                        parties)
    progress(f"  GET /healthz: {health_run.rate:.0f} requests/s")
    return hits, health_run


def load_table(results: list[LoadResult]) -> str:
    rows = []
    for r in results:
        rows.append([r.label, f"{r.seconds:.2f}", str(len(r.latencies)), f"{r.rate:.0f}",
                     f"{r.pct_ms(0.5):.1f}", f"{r.pct_ms(0.95):.1f}", f"{r.pct_ms(0.99):.1f}",
                     f"{max(r.latencies) * 1000:.1f}" if r.latencies else "n/a", str(r.errors), str(r.reconnects)])
    return table([f"{CONCURRENCY} keep-alive clients", "s", "answered", "req/s", "p50 ms", "p95 ms", "p99 ms",
                  "max ms", "errors", "reconn."], rows)


def cpu_table(results: list[LoadResult]) -> str:
    parties = list(results[0].cpu)
    rows = []
    for party in parties:
        rows.append([party] + [f"{r.cpu[party]:.2f} s ({100 * r.cpu[party] / r.seconds:.0f} %)" for r in results])
    per_request = ["server CPU per answered request"] + [
        f"{1000 * r.cpu['server (gunicorn master + workers)'] / max(1, len(r.latencies)):.2f} ms" for r in results]
    client = ["client CPU per answered request"] + [
        f"{1000 * r.cpu['this client'] / max(1, len(r.latencies)):.2f} ms" for r in results]
    return table(["CPU in the window (share of one core)"] + [r.label for r in results], rows + [per_request, client])


# ---------------------------------------------------------------- part 2: cache misses

@dataclass
class MissRow:
    name: str
    e2e_s: float
    timings: dict[str, float]
    cached: bool
    shared: bool
    model: str
    model_s: float = 0.0


def measure_misses(port: int, images: dict[str, bytes]) -> list[MissRow]:
    rows = []
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=180)
    try:
        for name, data in images.items():
            body = multipart(name, data)
            started = time.perf_counter()
            connection.request("POST", "/", body, {"Content-Type": CONTENT_TYPE, "Accept": "application/json"})
            response = connection.getresponse()
            raw = response.read()
            elapsed = time.perf_counter() - started
            answer = json.loads(raw)
            if response.status != 200:
                raise RuntimeError(f"miss {name}: HTTP {response.status}: {answer}")
            rows.append(MissRow(name, elapsed, answer["timings"], answer["cached"], answer["shared"],
                                answer["model"]))
    finally:
        connection.close()
    return rows


def model_times(images: dict[str, bytes], reps: int) -> tuple[str, str, dict[str, float]]:
    """In-process onnx classify([bytes]) per image: (runtime, model id, name -> median seconds)."""
    from app_tier.classifier import load_classifier

    classifier = load_classifier("onnx", 1)
    classifier.classify([next(iter(images.values()))])
    seconds = {name: median_call_seconds(lambda data=data: classifier.classify([data]), reps)
               for name, data in images.items()}
    return classifier.runtime, classifier.model_id, seconds


def miss_table(rows: list[MissRow]) -> str:
    def col(label: str, values: list[float]) -> list[str]:
        return [label, f"{statistics.median(values):.1f}", f"{percentile(values, 0.9):.1f}",
                f"{min(values):.1f}", f"{max(values):.1f}"]

    e2e = [r.e2e_s * 1000 for r in rows]
    model = [r.model_s * 1000 for r in rows]
    total = [r.timings["total_ms"] for r in rows]
    store = [r.timings["store_ms"] for r in rows]
    queue = [r.timings["queue_and_classify_ms"] for r in rows]
    lines = [col("end-to-end at the client", e2e),
             col("model in-process: classify([bytes])", model),
             col("OVERHEAD = end-to-end - model", [a - b for a, b in zip(e2e, model)]),
             col("  before/after the service (e2e - total_ms)", [a - b for a, b in zip(e2e, total)]),
             col("  service total_ms", total),
             col("    store_ms (S3 exists + put)", store),
             col("    queue_and_classify_ms", queue),
             col("    queue+worker overhead (queue_and_classify - model)", [a - b for a, b in zip(queue, model)])]
    return table([f"{len(rows)} sequential misses (ms)", "median", "p90", "min", "max"], lines)


# ---------------------------------------------------------------- part 4: in-process breakdown of a hit

VARIANTS = (("as served (with the request log line to a file)", set()),
            ("  without the request log line", {"nolog"}),
            ("  with check_decodable a no-op", {"nodecode"}),
            ("  without both", {"nolog", "nodecode"}))


@dataclass
class Breakdown:
    handler_s: dict[str, float] = field(default_factory=dict)
    decode_s: dict[str, float] = field(default_factory=dict)
    worker_decode_s: float = 0.0
    sha_s: float = 0.0
    cache_get_s: float = 0.0
    parse_s: float = 0.0
    calls: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    decodes_per_hit: dict[str, float] = field(default_factory=dict)
    fingerprint: str = ""


def time_test_client(client: Any, bodies: list[bytes], calls: int, statuses: dict[int, int]) -> float:
    """Median seconds of one POST through the Flask test client (pre-built multipart bodies, text answers)."""
    times = []
    for n in range(calls + 1):
        started = time.perf_counter()
        response = client.post("/", data=bodies[n % len(bodies)], content_type=CONTENT_TYPE)
        elapsed = time.perf_counter() - started
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if n:
            times.append(elapsed)
    return statistics.median(times)


@contextlib.contextmanager
def what_if(patches: set[str], log_path: Path) -> Iterator[list[int]]:
    """For one measurement only: the request log as `hybrid web` has it (INFO lines through a root handler with the
    CLI's format, to a file), or switched off ("nolog"); ``hybrid.core.decoding.check_decodable``, which the upload
    check calls, counted (the list yielded holds the number of calls) and, with "nodecode", a no-op. Everything is
    restored on the way out; project code is not changed."""
    import logging

    from hybrid.core import decoding as preprocess

    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root, requests_log = logging.getLogger(), logging.getLogger("web_tier.requests")
    original = preprocess.check_decodable
    calls = [0]

    def counted(data: bytes) -> Any:
        calls[0] += 1
        return None if "nodecode" in patches else original(data)

    root.addHandler(handler)
    logging.getLogger("web_tier").setLevel(logging.INFO)  # as WebServer.load does
    requests_log.setLevel(logging.WARNING if "nolog" in patches else logging.NOTSET)
    preprocess.check_decodable = counted
    try:
        yield calls
    finally:
        preprocess.check_decodable = original
        requests_log.setLevel(logging.NOTSET)
        root.removeHandler(handler)
        handler.close()


def parse_seconds(body: bytes) -> float:
    """Werkzeug's multipart parse of one body (Request.files), as Flask does it per request."""
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    def parse() -> None:
        environ = EnvironBuilder(method="POST", path="/", input_stream=io.BytesIO(body), content_type=CONTENT_TYPE,
                                 content_length=len(body)).get_environ()
        Request(environ).files["inputFile"].read()

    def build_only() -> None:
        EnvironBuilder(method="POST", path="/", input_stream=io.BytesIO(body), content_type=CONTENT_TYPE,
                       content_length=len(body)).get_environ()

    return max(0.0, median_call_seconds(parse, 200) - median_call_seconds(build_only, 200))


def measure_breakdown(env: Env, images: dict[str, bytes], calls: int) -> Breakdown:
    import hashlib

    from hybrid.core.decoding import check_decodable, decode_image
    from web_tier.app import create_app
    from web_tier.runtime import build_runtime

    out = Breakdown(calls=calls, fingerprint=code_fingerprint())
    bodies = [multipart(name, data) for name, data in images.items()]
    runtime = build_runtime(env.settings)
    try:
        client = create_app(env.settings, runtime).test_client()
        for label, patches in VARIANTS:
            with what_if(patches, env.state_dir / "breakdown-requests.log") as decodes:
                out.handler_s[label] = time_test_client(client, bodies, calls, out.statuses)
            out.decodes_per_hit[label] = decodes[0] / (calls + 1)
        digests = [hashlib.sha256(data).hexdigest() for data in images.values()]
        out.cache_get_s = median_call_seconds(lambda: [runtime.cache.get(d) for d in digests], 200) / len(digests)
    finally:
        runtime.close()
    out.decode_s = {name: median_call_seconds(lambda data=data: check_decodable(data), 20)
                    for name, data in images.items()}
    out.worker_decode_s = statistics.median(median_call_seconds(lambda data=data: decode_image(data), 20)
                                        for data in images.values())
    datas = list(images.values())
    out.sha_s = median_call_seconds(lambda: [hashlib.sha256(d).hexdigest() for d in datas], 50) / len(datas)
    out.parse_s = statistics.median(parse_seconds(body) for body in bodies[:4])
    return out


def breakdown_report(out: Breakdown, images: dict[str, bytes], hits: list[LoadResult]) -> str:
    decode = statistics.median(out.decode_s.values())
    by_size: dict[tuple[int, int], list[float]] = {}
    for name, seconds in out.decode_s.items():
        w, h = (int(v) for v in name.rsplit("_", 1)[1].split("x"))
        by_size.setdefault((w, h), []).append(seconds)
    rows = [[f"Flask test client POST, {label.strip()}" if i == 0 else label, ms(seconds), f"{1 / seconds:.0f}",
             f"{out.decodes_per_hit[label]:.2f}"] for i, (label, seconds) in enumerate(out.handler_s.items())]
    rows += [["check_decodable(bytes) (the upload check), median of the warm images", ms(decode),
              f"{1 / decode:.0f}", ""]]
    rows += [[f"  {w}x{h} (median of 4 photos)", ms(statistics.median(v)), "", ""]
             for (w, h), v in sorted(by_size.items())]
    rows += [["decode_image(bytes) (the worker's decode: also resize, crop, normalise)", ms(out.worker_decode_s),
              "", ""],
             ["werkzeug multipart parse of one body", ms(out.parse_s), "", ""],
             ["hashlib.sha256(bytes).hexdigest()", ms(out.sha_s), "", ""],
             ["ResultCache.get(digest)", f"{out.cache_get_s * 1000:.4f}", "", ""]]
    for r in hits:
        server_cpu = r.cpu["server (gunicorn master + workers)"] / max(1, len(r.latencies))
        rows.append([f"over HTTP: server CPU per answered request ({r.label})", ms(server_cpu),
                     f"{1 / server_cpu:.0f}" if server_cpu else "", ""])
    sizes = [len(d) for d in images.values()]
    text = table([f"one cache hit (median of {out.calls} test-client calls)", "ms", "per s, 1 core",
                  "decodes/hit"], rows)
    return (f"{text}\nwarm images: {len(images)} JPEGs, {min(sizes) / 1000:.0f}..{max(sizes) / 1000:.0f} kB "
            f"(mean {statistics.mean(sizes) / 1000:.0f} kB); test-client statuses {out.statuses}; "
            f"code {out.fingerprint}")


# ---------------------------------------------------------------- part 3: goals

def goal_lines(hits: list[LoadResult]) -> list[str]:
    lines = []
    for r in hits:
        config = r.label.split(", ")[-1]
        rate_ok, p99_ok = r.rate >= GOAL_RATE and r.errors == 0, r.pct_ms(0.99) < GOAL_P99_MS
        lines.append(f"{'PASS' if rate_ok else 'FAIL'}  at least {GOAL_RATE:.0f} cache hits/s ({config}): "
                     f"{r.rate:.0f} requests/s, {r.errors} errors")
        lines.append(f"{'PASS' if p99_ok else 'FAIL'}  p99 under {GOAL_P99_MS:.0f} ms ({config}): "
                     f"p99 {r.pct_ms(0.99):.1f} ms (p50 {r.pct_ms(0.5):.1f} ms)")
    lines.append(f"note: with {CONCURRENCY} requests always in flight, mean latency = {CONCURRENCY} / rate (Little's "
                 f"law), so p99 < {GOAL_P99_MS:.0f} ms needs at least {CONCURRENCY / GOAL_P99_MS * 1000:.0f} "
                 "requests/s here")
    return lines


# ---------------------------------------------------------------- part 6: the result cache's file cost

@dataclass
class CacheWrites:
    entries: int
    write_s: list[float]  # CPU seconds of each put + flush
    shared_write_s: list[float]  # the same, each after another cache on the file wrote one
    first_write_s: float  # CPU seconds of the first flush, which writes every entry
    open_s: float  # CPU seconds to open a second cache on the file
    file_bytes: int


def measure_cache_writes(cache_module: Any = None, entries: int = CACHE_ENTRIES,
                         writes: int = CACHE_WRITES) -> CacheWrites:
    """Part 6 against ``cache_module`` (``web_tier.cache`` unless given: anything with its ``ResultCache``,
    ``CachedResult`` and ``image_digest``, such as an older version of it)."""
    if cache_module is None:
        import web_tier.cache as cache_module  # project code only when measured: importing this script stays cheap

    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        path = Path(tmp) / "cache.json"
        cache = cache_module.ResultCache(path, entries, flush_interval=None)
        for i in range(entries):
            cache.put(cache_module.image_digest(b"image %d" % i), cached_result(cache_module, f"label {i}"))
        started = time.process_time()
        cache.flush()
        first_write_s = time.process_time() - started
        write_s = timed_writes(cache_module, cache, "new", writes)
        started = time.process_time()
        other = cache_module.ResultCache(path, entries, flush_interval=None)
        open_s = time.process_time() - started
        shared_write_s = timed_writes(cache_module, cache, "newer", writes,
                                      lambda i: timed_writes(cache_module, other, f"other {i}", 1))
        other.close()
        cache.close()
        return CacheWrites(entries, write_s, shared_write_s, first_write_s, open_s, path.stat().st_size)


def cached_result(cache_module: Any, label: str) -> Any:
    """A result as the app tier answers: five labels, a model id like the real one's."""
    return cache_module.CachedResult(label, tuple((f"label number {k}", 0.5 / (k + 1)) for k in range(5)),
                                     "efficientnet-lite0/imagenet@0123456789ab")


def timed_writes(cache_module: Any, cache: Any, tag: str, count: int,
                 before_each: Callable[[int], Any] = lambda i: None) -> list[float]:
    """CPU seconds of ``count`` writes to ``cache``, each a put of a new image and a flush; ``before_each(i)`` runs
    untimed before the i-th."""
    seconds = []
    for i in range(count):
        before_each(i)
        digest, result = cache_module.image_digest(f"{tag} {i}".encode()), cached_result(cache_module, tag)
        started = time.process_time()
        cache.put(digest, result)
        cache.flush()
        seconds.append(time.process_time() - started)
    return seconds


def median_ms(seconds: list[float]) -> float:
    """The median in milliseconds."""
    return statistics.median(seconds) * 1000


def cache_write_report(out: CacheWrites) -> str:
    write_ms = median_ms(out.write_s)
    rows = [[f"a write (put + flush), median of {len(out.write_s)}", f"{write_ms:.2f}"],
            [f"a write (put + flush), max of {len(out.write_s)}", f"{max(out.write_s) * 1000:.2f}"],
            ["a write after another cache on the file wrote one, median", f"{median_ms(out.shared_write_s):.2f}"],
            ["a write after another cache on the file wrote one, max", f"{max(out.shared_write_s) * 1000:.2f}"],
            ["the first write (every entry: a compaction's cost)", f"{out.first_write_s * 1000:.1f}"],
            ["opening a second cache on the file", f"{out.open_s * 1000:.1f}"]]
    verdict = "PASS" if write_ms < GOAL_CACHE_WRITE_MS else "FAIL"
    return "\n".join([table([f"result cache at {out.entries:,} entries (file {out.file_bytes / 1e6:.1f} MB)",
                              "CPU ms"], rows),
                       f"{verdict}  a cache write at {out.entries:,} entries under {GOAL_CACHE_WRITE_MS:g} ms of CPU: "
                       f"{write_ms:.2f} ms"])


# ---------------------------------------------------------------- the whole run

@dataclass
class Results:
    labels: dict[str, str] = field(default_factory=dict)
    verified: list[tuple[str, int, int]] = field(default_factory=list)
    hits: list[LoadResult] = field(default_factory=list)
    health: list[LoadResult] = field(default_factory=list)
    misses: list[MissRow] = field(default_factory=list)
    model: tuple[str, str] = ("", "")
    breakdown: Breakdown | None = None
    server_notes: list[str] = field(default_factory=list)
    fingerprints: list[str] = field(default_factory=list)
    leftovers: list[tuple[int, str]] = field(default_factory=list)


def run_all(plan: Plan, env: Env, hit_set: dict[str, bytes], miss_set: dict[str, bytes], res: Results) -> None:
    from hybrid.core.settings import load

    env.settings = load(None, {}, {"stack": env.stack_name, "state_dir": str(env.state_dir),
                                   "worker.idle_timeout": "120"})
    progress("starting the local AWS server and instance runner")
    with common.local_server(env.state_dir, env.teardown.append) as env.info, \
            common.aws_stack(env.settings, env.teardown.append) as env.stack:
        env.instance_ids = common.launch_app_tier(common.local_client(env.info.url, "ec2"), env.stack, env.settings,
                                                  WORKERS)
        progress(f"stack {env.stack_name} is up; launched {', '.join(env.instance_ids)}")
        for processes in PROCESS_COUNTS:
            run_server(plan, env, processes, hit_set, miss_set, res)
        progress("model time in this process (onnx, 1 thread)")
        runtime, model_id, seconds = model_times(miss_set, plan.model_reps)
        res.model = (runtime, model_id)
        for row in res.misses:
            row.model_s = seconds[row.name]
        progress(f"in-process breakdown: Flask test client x {plan.test_client_calls}, {len(VARIANTS)} variants")
        res.breakdown = measure_breakdown(env, hit_set, plan.test_client_calls)
        progress("tearing down")


def run_server(plan: Plan, env: Env, processes: int, hit_set: dict[str, bytes], miss_set: dict[str, bytes],
               res: Results) -> None:
    progress(f"starting hybrid web --processes {processes}")
    with web_server(env, processes) as server:
        if not res.labels:
            progress(f"warming the cache with {len(hit_set)} images (the first waits for the worker's cold start)")
            started = time.perf_counter()
            res.labels = warm_cache(server.port, hit_set)
            env.worker_pids = find_worker_pids(env)
            progress(f"  warm in {time.perf_counter() - started:.1f} s; worker pids {env.worker_pids}")
        good, total = verify_hits(server.port, hit_set, res.labels, 1 if processes == 1 else plan.verify_posts)
        res.verified.append((f"--processes {processes}", good, total))
        hits, health = measure_hits(server, env, hit_set, res.labels, plan)
        res.hits.append(hits)
        res.health.append(health)
        res.server_notes.append(f"--processes {processes}: pids master {server.process.pid}, workers "
                                f"{server.worker_pids()}; log lines {count_lines(server.log_path)}; code "
                                f"{server.fingerprint}")
        res.fingerprints.append(server.fingerprint)
        if processes == 1:
            progress(f"{len(miss_set)} sequential cache misses")
            res.misses = measure_misses(server.port, miss_set)


def count_lines(path: Path) -> int:
    try:
        return len(path.read_text(errors="replace").splitlines())
    except OSError:
        return 0


# ---------------------------------------------------------------- report

def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def header(plan: Plan, quick: bool) -> str:
    from hybrid.core.settings import Settings

    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (f"hybrid web-tier benchmark -- {now}, {os.cpu_count()} CPUs ({common.cpu_model()}), "
            f"python {sys.version.split()[0]}, flask {common.package_version('flask')}, werkzeug "
            f"{common.package_version('werkzeug')}, gunicorn {common.package_version('gunicorn')} (gthread, "
            f"{Settings().web.threads} threads/process), {'--quick' if quick else 'full'} "
            f"({plan.duration_s:g} s per load run, {CONCURRENCY} clients, {plan.misses} misses); "
            f"load average before: {load_average()}; code {code_fingerprint()}")


def print_report(res: Results, plan: Plan, hit_set: dict[str, bytes], env: Env) -> None:
    if res.hits:
        print(f"\n1. Cache hits: {CONCURRENCY} client threads (http.client, one keep-alive connection each) for "
              f"{plan.duration_s:g} s; /healthz for {plan.healthz_s:g} s")
        for config, good, total in res.verified:
            print(f"cache verified before the run ({config}): {good}/{total} JSON answers cached=true, right label")
        print(load_table(res.hits + res.health))
        print(cpu_table(res.hits + res.health))
        for r in res.hits + res.health:
            if r.cpu[OTHERS] > 0.2 * r.seconds:
                print(f"NOTE: during {r.label} processes outside this benchmark took {r.cpu[OTHERS]:.2f} s of CPU "
                      f"({100 * r.cpu[OTHERS] / r.seconds:.0f} % of one core): the machine was shared, figures are "
                      "lower than on a quiet machine")
            if r.error_samples:
                print(f"errors in {r.label}: {r.error_samples[:3]}")
    if res.misses:
        runtime, model_id = res.model
        served = sorted({r.model for r in res.misses})
        flags = sum(r.cached or r.shared for r in res.misses)
        print(f"\n2. Cache misses, one at a time, --processes 1, {WORKERS} worker; in-process model: {runtime} "
              f"{model_id} (worker answered with {', '.join(served)}); answers cached/shared: {flags}")
        if res.misses[0].model_s:
            print(miss_table(res.misses))
    if res.hits:
        print("\n3. Goals (issue), on this machine with the client on the same CPUs")
        print("\n".join(goal_lines(res.hits)))
    if res.breakdown:
        print("\n4. Where a cache hit's time goes (in this process, no HTTP)")
        print(breakdown_report(res.breakdown, hit_set, res.hits))
    seen = [*res.fingerprints, *([res.breakdown.fingerprint] if res.breakdown else []), code_fingerprint()]
    if len(set(seen)) > 1:
        print(f"\nWARNING: the code under test ({', '.join(CODE_FILES)}) changed during the run (fingerprints "
              f"{' -> '.join(seen)}, in order: servers, part 4, end): figures of different parts measure different "
              "code; run again")
    print("\n5. Teardown")
    for line in res.server_notes + env.teardown:
        print(line)
    if res.leftovers:
        print("\n".join(f"WARNING: process left running: pid {pid}: {cmd[:160]}" for pid, cmd in res.leftovers))
    else:
        print("leftover processes (web server, worker, runner, emulator): none")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Web-tier benchmark: cache hits/s and latency, miss overhead.")
    parser.add_argument("--quick", action="store_true", help="4 s load runs, 10 misses (about 30 s; full about 50 s)")
    parser.add_argument("--cache-only", action="store_true",
                        help="only part 6, the result cache's write cost at 100,000 entries (seconds, no server)")
    args = parser.parse_args(argv)
    if args.cache_only:
        print(f"\n6. The result cache's file cost (this process, {os.cpu_count()} CPUs ({common.cpu_model()}), "
              f"python {sys.version.split()[0]})")
        print(cache_write_report(measure_cache_writes()), flush=True)
        return 0
    plan = QUICK if args.quick else FULL
    print(header(plan, args.quick), flush=True)
    hit_set, miss_set = hit_images(), miss_images(plan.misses)
    res = Results()
    failed: BaseException | None = None
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        env = Env(Path(tmp).resolve(), f"bweb-{secrets.token_hex(3)}")
        try:
            run_all(plan, env, hit_set, miss_set, res)
        except BaseException as exc:  # noqa: BLE001 - report what was measured, then fail
            failed = exc
        finally:
            res.leftovers = common.wait_for_no_leftovers(env.state_dir)
        print_report(res, plan, hit_set, env)
    progress(f"part 6: the result cache's write cost at {CACHE_ENTRIES:,} entries")
    print("\n6. The result cache's file cost (this process, no server)")
    print(cache_write_report(measure_cache_writes()), flush=True)
    print(f"\ntotal run time {common.since_start():.1f} s; load average after: {load_average()}", flush=True)
    if failed is not None:
        raise failed
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
