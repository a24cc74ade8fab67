"""The workload generator: many concurrent image uploads to a web tier, every `name:label` reply checked.

    hybrid workload --url http://127.0.0.1:8000/ --images DIR [--requests N] [--concurrency C] [--expected DIR.csv]
                    [--field inputFile] [--report PATH] [--timeout S] [--retries R] [--quiet]

Each request is one multipart POST of one image (field ``--field``, file name = the image's file name) from a pool
of C threads, each with its own keep-alive ``requests.Session``. A connection error, a 502 or a 503 is retried with
jittered exponential backoff (``hybrid.core.retry``: a random wait of up to 0.2 s, 0.4 s, 0.8 s, ... capped at
5 s), up to ``--retries`` times; a 4xx, a 504 or a read timeout is an answer and counts as failed. Each reply
gets one outcome:

    correct   200 and "name:label" with the image's name (its file name without extension) and, with --expected
              (a CSV with header name,label or the course's Image,Results), the expected label. Without
              --expected labels are not checked (the summary says so).
    wrong     200, but the name or the label differs, or the body is not "name:label"
    failed    any other status, or no answer at all after the retries

Library use (the demo script, benchmarks)::

    report = run_workload(url, find_images(folder), requests=200, concurrency=50, expected=read_expected(csv))
    print(report.format_summary()); report.write_json(path); sys.exit(report.exit_code)

The caller's objects are frozen out of the garbage collector while the requests run (``gc.freeze``): a full
collection of a large caller (the demo holds the model it labelled the samples with) paused every client thread for
0.14 s in the middle of a measured burst.

Exit codes of the command: 0 every request correct, 1 any wrong or failed, 2 bad usage (no images, unreadable
expected CSV, bad URL, report folder missing).
"""
from __future__ import annotations

import csv
import gc
import itertools
import json
import logging
import math
import mimetypes
import random
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from itertools import cycle, islice
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from hybrid.core import netns
from hybrid.core.errors import ConfigError
from hybrid.core.retry import Backoff, Random, retry

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"})
RETRY_STATUSES = frozenset({502, 503})
BACKOFF = Backoff(base=0.2, cap=5.0)
MAX_EXAMPLES = 10
MAX_ANSWER_CHARS = 300
CORRECT, WRONG, FAILED = "correct", "wrong", "failed"
HEADER_NAMES = (("name", "label"), ("image", "results"))
"""Header rows of an expected-labels CSV (any case): the project's ``name,label`` and the course's ``Image,Results``."""


# ---------------------------------------------------------------- inputs

def find_images(folder: Path) -> list[Path]:
    """The images in ``folder`` (not its sub-folders): jpg/jpeg/png/webp/gif/bmp in any case, hidden files skipped,
    sorted by file name. Raises ConfigError when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"--images {folder}: not a folder")
    images = sorted((p for p in folder.iterdir() if _is_image(p)), key=lambda p: p.name)
    if not images:
        raise ConfigError(f"--images {folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
    return images


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()


def image_key(file_name: str) -> str:
    """The name a reply should carry: the file name without folders and without an image extension."""
    path = Path(file_name)
    return path.stem if path.suffix.lower() in IMAGE_SUFFIXES else path.name


def read_expected(csv_path: Path) -> dict[str, str]:
    """Expected labels from a ``name,label`` CSV, keyed by image name (file name without extension; a name given
    with an image extension is accepted). The header row, ``name,label`` or the course's ``Image,Results``, is
    optional; blank lines are skipped.
    Raises ConfigError, naming the file and line, for an unreadable file, a row without exactly two non-empty
    cells, a name given two different labels, or a file with no rows."""
    rows = _csv_rows(Path(csv_path))
    if rows and _is_header(rows[0][1]):
        rows = rows[1:]
    expected: dict[str, str] = {}
    for line, row in rows:
        name, label = _parse_row(csv_path, line, row)
        if expected.get(name, label) != label:
            raise ConfigError(f"--expected {csv_path}, line {line}: {name!r} already has label {expected[name]!r}")
        expected[name] = label
    if not expected:
        raise ConfigError(f"--expected {csv_path}: no name,label rows")
    return expected


def _csv_rows(csv_path: Path) -> list[tuple[int, list[str]]]:
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            return [(n, row) for n, row in enumerate(csv.reader(handle), 1) if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"--expected {csv_path}: cannot read it ({exc})") from None


def _is_header(row: Sequence[str]) -> bool:
    return tuple(c.strip().lower() for c in row) in HEADER_NAMES


def _parse_row(csv_path: Path, line: int, row: Sequence[str]) -> tuple[str, str]:
    cells = [c.strip() for c in row]
    if len(cells) != 2 or not all(cells):
        raise ConfigError(f"--expected {csv_path}, line {line}: expected 'name,label', got {','.join(row)!r}")
    return image_key(cells[0]), cells[1]


def check_url(url: str) -> str:
    """The URL if it is an absolute http(s) URL with a host; ConfigError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--url {url!r}: expected an http:// or https:// URL with a host, "
                          "e.g. http://127.0.0.1:8000/")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"--url {url!r}: the port is not a number from 0 to 65535") from None
    return url


def missing_labels(images: Iterable[Path], expected: dict[str, str]) -> list[str]:
    """Image names the expected labels do not cover."""
    return sorted({image_key(p.name) for p in images} - expected.keys())


def plan_requests(images: Sequence[Path], count: int | None) -> list[Path]:
    """The image of each request: one per image by default, cycling through them when ``count`` is larger."""
    return list(images) if count is None else list(islice(cycle(images), count))


# ---------------------------------------------------------------- one request

@dataclass(frozen=True)
class Reply:
    """What came back for one request after its retries: ``status`` None when no HTTP answer came at all."""

    status: int | None
    answer: str
    attempts: int


def post_with_retries(post: Callable[[], requests.Response], retries: int,
                      sleep: Callable[[float], None] = time.sleep, rand: Random = random.random) -> Reply:
    """Calls ``post`` until it answers something other than a connection error, 502 or 503, at most
    ``retries + 1`` times, with the project's jittered backoff (``BACKOFF``) between tries."""
    tries = itertools.count(1)
    reply, _ = retry(lambda: _attempt(post, next(tries)), "POST", retries + 1, done=lambda outcome: not outcome[1],
                     backoff=BACKOFF, sleep=sleep, rand=rand)
    return reply


def _attempt(post: Callable[[], requests.Response], attempt: int) -> tuple[Reply, bool]:
    try:
        response = post()
    except requests.ConnectionError as exc:
        return Reply(None, describe_error(exc), attempt), True
    except requests.RequestException as exc:
        return Reply(None, describe_error(exc), attempt), False
    text = response.content.decode("utf-8", "replace").strip()[:MAX_ANSWER_CHARS]
    return Reply(response.status_code, text, attempt), response.status_code in RETRY_STATUSES


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_ANSWER_CHARS]


def classify(name: str, status: int | None, answer: str, label: str | None) -> str:
    """The outcome of one reply to image ``name``: correct, wrong or failed. ``label`` None: labels not checked."""
    if status != 200:
        return FAILED
    got_name, colon, got_label = answer.partition(":")
    if not colon or not got_name or not got_label.strip():
        return WRONG
    if got_name != name or (label is not None and got_label.strip() != label):
        return WRONG
    return CORRECT


def expected_answer(name: str, label: str | None) -> str:
    return f"{name}:{label if label is not None else '*'}"


@dataclass(frozen=True)
class RequestRecord:
    """One request of a run, as the JSON report keeps it (times are epoch seconds, latency includes retries)."""

    index: int
    file: str
    name: str
    status: int | None
    answer: str
    expected: str
    outcome: str
    started_at: float
    finished_at: float
    latency: float
    attempts: int

    def describe(self) -> str:
        got = f"{self.answer!r} ({self.status})" if self.status is not None else self.answer
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{self.outcome:<7} {self.file}: expected {self.expected!r}, got {got}{tries}"


# ---------------------------------------------------------------- the report

def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class WorkloadReport:
    """The records of one run, in request order, and what they add up to."""

    url: str
    concurrency: int
    labels_checked: bool
    records: list[RequestRecord] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counts = {CORRECT: 0, WRONG: 0, FAILED: 0}
        for record in self.records:
            counts[record.outcome] += 1
        return counts

    @property
    def exit_code(self) -> int:
        """0 when there were requests and every one was correct, else 1."""
        return 0 if self.records and all(r.outcome == CORRECT for r in self.records) else 1

    @property
    def total_s(self) -> float:
        """From the first send to the last answer."""
        if not self.records:
            return 0.0
        return max(r.finished_at for r in self.records) - min(r.started_at for r in self.records)

    def examples(self, limit: int = MAX_EXAMPLES) -> list[RequestRecord]:
        """The first wrong or failed requests, one per distinct (file, outcome, status, answer)."""
        picked: dict[tuple[Any, ...], RequestRecord] = {}
        for record in self.records:
            key = (record.file, record.outcome, record.status, record.answer)
            if record.outcome != CORRECT and key not in picked:
                picked[key] = record
                if len(picked) == limit:
                    break
        return list(picked.values())

    def summary(self) -> dict[str, Any]:
        latencies = [r.latency for r in self.records]
        total = self.total_s
        return {
            "url": self.url, "requests": len(self.records), "concurrency": self.concurrency,
            "labels_checked": self.labels_checked, **self.counts(),
            "retries": sum(r.attempts - 1 for r in self.records),
            "latency_s": latency_stats(latencies),
            "total_s": round(total, 4), "throughput_rps": round(len(self.records) / total, 3) if total > 0 else 0.0,
            "started_at": min((r.started_at for r in self.records), default=None),
            "finished_at": max((r.finished_at for r in self.records), default=None),
        }

    def to_json(self) -> dict[str, Any]:
        return {"summary": self.summary(), "examples": [asdict(r) for r in self.examples()],
                "records": [asdict(r) for r in self.records]}

    def write_json(self, path: Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        return path

    def format_summary(self) -> str:
        return "\n".join(format_summary_lines(self.summary(), self.examples()))


def latency_stats(latencies: Sequence[float]) -> dict[str, float]:
    average = sum(latencies) / len(latencies) if latencies else 0.0
    stats = {"avg": average, **{f"p{q}": percentile(latencies, q) for q in (50, 95, 99)},
             "max": max(latencies, default=0.0)}
    return {key: round(value, 4) for key, value in stats.items()}


def format_summary_lines(summary: dict[str, Any], examples: Sequence[RequestRecord]) -> list[str]:
    """The human summary: counts, latency, time and throughput, and the first wrong or failed requests."""
    lat = summary["latency_s"]
    lines = [
        f"{summary['requests']} requests to {summary['url']} from {summary['concurrency']} threads",
        (f"  correct {summary['correct']}   wrong {summary['wrong']}   failed {summary['failed']}"
         f"   (retries {summary['retries']})"),
        (f"  latency s: avg {lat['avg']:.3f}  p50 {lat['p50']:.3f}  p95 {lat['p95']:.3f}  p99 {lat['p99']:.3f}"
         f"  max {lat['max']:.3f}"),
        f"  total {summary['total_s']:.2f} s, throughput {summary['throughput_rps']:.1f} requests/s",
    ]
    if not summary["labels_checked"]:
        lines.append("  labels were not checked (no --expected CSV): a 200 'name:label' with the right name is correct")
    problems = summary["wrong"] + summary["failed"]
    if examples:
        lines.append(f"wrong or failed: {problems}, the first {len(examples)} distinct:")
        lines += [f"  {record.describe()}" for record in examples]
    return lines


# ---------------------------------------------------------------- the run

class SessionPool:
    """One keep-alive ``requests.Session`` per thread (a single pooled connection each), closed together."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sessions: list[requests.Session] = []

    def get(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self._new_session()
        return session

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        with self._lock:
            self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()


@dataclass(frozen=True)
class Target:
    """Where and how every request of a run is sent."""

    url: str
    field: str
    timeout: float
    retries: int
    expected: dict[str, str] | None
    sessions: SessionPool
    sleep: Callable[[float], None] = time.sleep


def send_image(target: Target, index: int, image: Path) -> RequestRecord:
    """One request: read the image, POST it with retries (timed), classify the reply. An image that cannot be
    read is a failed request with 0 attempts."""
    try:
        data = image.read_bytes()
    except OSError as exc:
        now = time.time()
        return make_record(index, image, Reply(None, f"cannot read the image: {exc}", 0), target.expected, now, now)
    content_type = mimetypes.guess_type(image.name)[0] or "application/octet-stream"
    session = target.sessions.get()
    # The multipart body is built before the clock starts: latency is the service's, not this generator's encoding
    # (100 threads encoding at once on a shared core would otherwise add their wait for the GIL to every request).
    prepared = session.prepare_request(requests.Request(
        "POST", target.url, files={target.field: (image.name, data, content_type)}))
    started_at, started = time.time(), time.perf_counter()
    reply = post_with_retries(lambda: session.send(prepared, timeout=target.timeout), target.retries, target.sleep)
    latency = time.perf_counter() - started
    return make_record(index, image, reply, target.expected, started_at, time.time(), latency)


def make_record(index: int, image: Path, reply: Reply, expected: dict[str, str] | None, started_at: float,
                finished_at: float, latency: float = 0.0) -> RequestRecord:
    name = image_key(image.name)
    label = expected[name] if expected is not None else None
    return RequestRecord(index, image.name, name, reply.status, reply.answer, expected_answer(name, label),
                         classify(name, reply.status, reply.answer, label), started_at, finished_at,
                         round(latency, 6), reply.attempts)


def run_workload(url: str, images: Sequence[Path], requests: int | None = None, concurrency: int = 100,
                 expected: dict[str, str] | None = None, field: str = "inputFile", timeout: float = 120.0,
                 retries: int = 3, progress: bool = False, namespace: str = "") -> WorkloadReport:
    """Sends ``requests`` uploads (default one per image, cycling when more) to ``url`` from ``concurrency``
    threads (fewer when there are fewer requests) and returns every request's record. ``progress`` draws a bar
    on stderr when it is a terminal. With ``namespace`` every sending thread lives in that network namespace (the
    local fixture's floating IPs exist only in its own); this needs root.

    Raises ConfigError for a bad URL, no images, counts below 1, or expected labels missing an image's name."""
    _check_run(url, images, requests, concurrency, expected)
    plan = plan_requests(images, requests)
    sessions = SessionPool()
    target = Target(url, field, timeout, retries, expected, sessions)
    threads = min(concurrency, len(plan))
    report = WorkloadReport(url, threads, expected is not None)
    if namespace:
        netns.check_can_enter(namespace)
    pool = ThreadPoolExecutor(threads, thread_name_prefix="workload",
                              initializer=netns.enter_for_good if namespace else None,
                              initargs=(namespace,) if namespace else ())
    gc.freeze()  # see the module's notes
    try:
        futures = [pool.submit(send_image, target, i, image) for i, image in enumerate(plan)]
        report.records = sorted(_collect(futures, progress), key=lambda r: r.index)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        sessions.close()
        gc.unfreeze()
    return report


def _check_run(url: str, images: Sequence[Path], requests: int | None, concurrency: int,
               expected: dict[str, str] | None) -> None:
    check_url(url)
    if not images:
        raise ConfigError("no images to send")
    if (requests is not None and requests < 1) or concurrency < 1:
        raise ConfigError(f"requests ({requests}) and concurrency ({concurrency}) must be at least 1")
    missing = missing_labels(images, expected) if expected is not None else []
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise ConfigError(f"--expected has no label for {len(missing)} image(s): {shown}")


def _collect(futures: list[Future[RequestRecord]], progress: bool) -> list[RequestRecord]:
    """Waits for every request, keeping the progress bar's done/total and outcome counts current."""
    from tqdm import tqdm

    counts = {CORRECT: 0, WRONG: 0, FAILED: 0}
    records = []
    with tqdm(total=len(futures), desc="requests", unit="req", file=sys.stderr, mininterval=0.2,
              disable=not (progress and sys.stderr.isatty())) as bar:
        for future in as_completed(futures):
            records.append(future.result())
            counts[records[-1].outcome] += 1
            bar.set_postfix(counts, refresh=False)
            bar.update()
    return records


def workload_inputs(images_dir: Path, expected_csv: Path | None,
            report_path: Path | None) -> tuple[list[Path], dict[str, str] | None]:
    """Everything checked before the first request, so bad usage never costs a run."""
    if report_path is not None and not report_path.resolve().parent.is_dir():
        raise ConfigError(f"--report {report_path}: folder {report_path.resolve().parent} does not exist")
    images = find_images(images_dir)
    return images, read_expected(expected_csv) if expected_csv is not None else None
