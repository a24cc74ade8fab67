"""Benchmark of the autoscaler on the local AWS server with local instances: reaction time and a 100-request burst.

Run: ``.venv/bin/python benchmarks/bench_autoscale.py [--quick] [--plot PNG]`` (only 127.0.0.1 is contacted;
nothing is left running). Results go to stdout, progress lines to stderr. About 1 minute; ``--quick`` about 30 s.

Setup. ``start_emulator`` starts the project's local AWS server and its instance runner in a temporary state folder;
the runner turns every pending/running app-tier EC2 instance into a ``hybrid worker`` process (polling
``describe_instances`` every 0.25 s). A stack is set up with ``build_aws_stack(settings).up()``, with
``worker.idle_timeout = 3`` and ``scaling.max_workers = 20`` (10 with ``--quick``); the other settings are the
defaults (``scaling.poll_interval = 1`` s, ``messages_per_worker = 1``, ``worker.batch_size = 8``). The autoscaler
is ``build_autoscaler(settings, timeline)`` running ``scaler.run(stop)`` in a thread of this script. Requests name
one of four real photos from scikit-image (coffee, chelsea, rocket, astronaut; JPEG quality 92 with PIL), each
uploaded once to the input bucket. A thread of this script long-polls the response queue and stamps each reply with
``time.time()`` as it arrives. All times below are wall-clock seconds.

Part 1, reaction time from a fleet at 0 (3 repetitions, 1 with ``--quick``; between them the script waits until the
stack has no pending/running instance). One request is sent; t=0 is right after its ``send_message_batch``
returned (the message is then visible in the request queue). Every 20 ms the script polls ``describe_instances``
and the request queue's ``ApproximateNumberOfMessagesNotVisible``:
  (a) ``instance seen``: the first instance of the stack is pending or running;
  (b) ``consumed``: the request is in flight (a worker received it);
  (c) ``answered``: its reply arrived on the response queue.
(c) is broken down into consecutive steps that add up to it:
  * ``wait for tick``: t=0 to the autoscaler tick that saw the backlog and launched (its timeline row's ``t``);
    uniform in 0..poll_interval, it is the price of polling;
  * ``launch call``: that tick's observation to the instance seen in ``describe_instances`` (run_instances);
  * ``runner pickup``: instance seen to the ``hybrid worker`` process's start time (/proc/<pid>/stat); the runner
    polls every 0.25 s, and the first worker it ever starts also waits for its one-time ``hybrid models prepare``;
  * ``worker start``: process start to the request in flight: python, imports, model load, clients, first receive;
  * ``classify+reply``: in flight to reply received: S3 get, classification, two S3 puts, reply, our long poll.
Median and min over the repetitions; each repetition's figures follow.

Part 2, burst: 100 requests (the photos in turn) sent with ``send_message_batch`` (10 per call) to a fleet at 0.
A sampler thread counts the stack's pending+running instances every 0.25 s. Printed: the time from the first send
to the first sample at ``max_workers`` (``max instances ever seen`` says how close it got if never), the time to
all answered, the per-request latency (its batch's send returned -> its reply arrived; it includes queueing: with
everything sent at t=0, it is mostly waiting for a worker), and the time from the last answer to the first sample
at 0 instances (each worker stops after ``idle_timeout`` without work; the figure also holds the final empty long
poll, the terminate call and the 0.25 s sampling). ``--plot PNG`` draws this burst's autoscaler timeline (queue
depths, answered requests and the fleet over time) with ``hybrid.autoscale.plot.plot_timeline``.
How to read it: the policy wants one worker per queued message (``messages_per_worker = 1``), but a worker takes
up to ``batch_size = 8`` at once, so only ceil(100 / 8) = 13 workers can get work; the others start, find the queue
empty and stop after ``idle_timeout``. The local server's instances are ``running`` at once (never ``pending``).

Teardown, always: the autoscaler threads stop, the stack goes down (terminating its instances, whose workers the
runner kills), the emulator and runner stop; then a WARNING is printed for each process of this run still alive
after 5 s (naming the state folder, or a worker its pid file names: ``common.wait_for_no_leftovers``); ``hybrid
worker`` processes of other state folders (not started here) are listed.

Caveat: every worker, the local server, the runner and this script share this machine's CPUs; on a small machine
20 workers starting at once slow each other down, which a real fleet of separate instances would not.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, for ``import common`` (see common.py)

import common
from common import PHOTOS, percentile, progress

IDLE_TIMEOUT = 3
BURST_REQUESTS = 100
SEND_BATCH = 10
REACTION_POLL = 0.02
SAMPLE_INTERVAL = 0.25
REACTION_TIMEOUT = 90.0
BURST_TIMEOUT = 150.0
ZERO_TIMEOUT = 60.0
LIVE_STATES = ["pending", "running"]


@dataclass(frozen=True)
class Plan:
    """How much work the run does."""

    reps: int
    max_workers: int


FULL = Plan(reps=3, max_workers=20)
QUICK = Plan(reps=1, max_workers=10)


# ---------------------------------------------------------------- small helpers

def seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def cmdline(pid: str) -> list[str] | None:
    """A live (non-zombie) process's arguments, or None."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
    return None if state == "Z" or not raw else raw.decode(errors="replace").rstrip("\0").split("\0")


def exec_workers_anywhere() -> list[tuple[int, list[str]]]:
    """Every live ``python -m hybrid ... worker ...`` process on this machine, of any state folder (the project's
    helpers look at one state folder; a worker forked by a runner has its runner's command line and is not counted)."""
    found = []
    for entry in Path("/proc").iterdir():
        args = cmdline(entry.name) if entry.name.isdigit() else None
        if args and "hybrid" in args[1:3] and "worker" in args:
            found.append((int(entry.name), args))
    return found


def process_start_time(pid: int) -> float | None:
    """Wall-clock start of a process, from /proc/<pid>/stat (10 ms resolution)."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- the local stack

@dataclass
class Rig:
    """Plain boto3 clients on the local server, for sending, observing and collecting beside the project's code."""

    settings: Any
    url: str
    clients: dict[str, Any] = field(default_factory=dict)

    def new_client(self, service: str) -> Any:
        return common.local_client(self.url, service)

    def client(self, service: str) -> Any:
        """The main thread's client (each thread gets its own from ``new_client``, made in the main thread)."""
        if service not in self.clients:
            self.clients[service] = self.new_client(service)
        return self.clients[service]

    @property
    def stack(self) -> str:
        return self.settings.stack

    def queue_url(self, suffix: str) -> str:
        return self.client("sqs").get_queue_url(QueueName=f"{self.stack}-{suffix}")["QueueUrl"]

    def live_instances(self, ec2: Any = None) -> list[str]:
        """Ids of the stack's pending or running instances (``ec2``: a client of the calling thread)."""
        filters = [{"Name": "tag:hybrid:stack", "Values": [self.stack]},
                   {"Name": "instance-state-name", "Values": LIVE_STATES}]
        reservations = (ec2 or self.client("ec2")).describe_instances(Filters=filters)["Reservations"]
        return [i["InstanceId"] for r in reservations for i in r["Instances"]]

    def in_flight(self, url: str) -> int:
        attributes = self.client("sqs").get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def upload(self, image: bytes) -> str:
        return common.upload_image(self.client("s3"), f"{self.stack}-input", image)

    def send(self, url: str, requests: list[tuple[str, str, str]]) -> float:
        """Sends (id, key, name) requests in one batch; returns time.time() once the call returned."""
        from hybrid.core.messages import ClassifyRequest

        common.send_bodies(self.client("sqs"), url, [
            ClassifyRequest(rid, key, name, f"{self.stack}-responses").to_body() for rid, key, name in requests])
        return time.time()


class ReplyCollector(threading.Thread):
    """Long-polls the response queue and stamps every reply with time.time() on arrival."""

    def __init__(self, rig: Rig) -> None:
        super().__init__(daemon=True, name="reply-collector")
        self.sqs, self.url = rig.new_client("sqs"), rig.queue_url("responses")
        self.replies: dict[str, tuple[Any, float]] = {}
        self.duplicates = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            received, arrived = common.receive_replies(self.sqs, self.url, clock=time.time)
            for reply in received:
                self.duplicates += reply.id in self.replies
                self.replies.setdefault(reply.id, (reply, arrived))

    def wait_all(self, ids: set[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not ids <= self.replies.keys():
            time.sleep(0.05)
        return ids <= self.replies.keys()


class FleetSampler(threading.Thread):
    """Counts the stack's pending+running instances every 0.25 s as (time.time(), count)."""

    def __init__(self, rig: Rig) -> None:
        super().__init__(daemon=True, name="fleet-sampler")
        self.rig, self.ec2 = rig, rig.new_client("ec2")
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_INTERVAL):
            self.samples.append((time.time(), len(self.rig.live_instances(self.ec2))))

    def first_at_least(self, count: int, since: float) -> float | None:
        return next((t for t, n in self.samples if t >= since and n >= count), None)

    def first_zero(self, since: float) -> float | None:
        return next((t for t, n in list(self.samples) if t >= since and n == 0), None)

    def peak(self) -> int:
        return max((n for _, n in self.samples), default=0)


@contextmanager
def autoscaler(settings: Any, timeline: Path) -> Iterator[Any]:
    """``build_autoscaler`` ticking in a thread until the block ends."""
    from hybrid.autoscale.service import build_autoscaler

    scaler, stop = build_autoscaler(settings, timeline), threading.Event()
    thread = threading.Thread(target=scaler.run, args=(stop,), daemon=True, name="autoscaler")
    thread.start()
    try:
        yield scaler
    finally:
        stop.set()
        thread.join(timeout=15)
        if thread.is_alive():
            print("WARNING: the autoscaler thread did not stop within 15 s", file=sys.stderr)


def wait_for_zero(rig: Rig, timeout: float = ZERO_TIMEOUT) -> float:
    """Waits until the stack has no pending/running instance; returns how long that took."""
    started = time.monotonic()
    while rig.live_instances():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"the fleet is not back at 0 after {timeout:.0f} s: {rig.live_instances()}")
        time.sleep(0.1)
    return time.monotonic() - started


def read_rows(path: Path) -> list[dict[str, Any]]:
    from hybrid.autoscale.loop import read_timeline

    return read_timeline(path) if path.exists() else []


# ---------------------------------------------------------------- part 1: reaction

@dataclass
class Reaction:
    """Wall-clock moments of one request sent to a fleet at 0 (None: not observed)."""

    sent: float
    tick: float | None = None
    seen: float | None = None
    started: float | None = None
    consumed: float | None = None
    answered: float | None = None
    loops: int = 0
    polled_for: float = 0.0

    @property
    def loop_period(self) -> float:
        """Mean time of one poll loop: how precisely the moments are known."""
        return self.polled_for / max(1, self.loops)

    def since_sent(self, moment: float | None) -> float | None:
        return None if moment is None else moment - self.sent

    def steps(self) -> dict[str, float | None]:
        """The consecutive steps from send to reply."""
        order = [self.sent, self.tick, self.seen, self.started, self.consumed, self.answered]
        names = ["wait for tick", "launch call", "runner pickup", "worker start", "classify+reply"]
        return {name: None if a is None or b is None else b - a for name, a, b in zip(names, order, order[1:])}


def observe_reaction(rig: Rig, url: str, reaction: Reaction, request_id: str, collector: ReplyCollector) -> None:
    """Polls every 20 ms until the reply arrived, filling in the moments as they are seen."""
    from hybrid.local.instance_folders import worker_processes

    started, instance, pid = time.monotonic(), None, None
    while reaction.answered is None and time.monotonic() < started + REACTION_TIMEOUT:
        reaction.loops += 1
        if instance is None:
            live = rig.live_instances()
            instance, reaction.seen = (live[0], time.time()) if live else (None, None)
        if instance and pid is None:
            pid = worker_processes(rig.settings.state_path).get(instance)
            reaction.started = process_start_time(pid) if pid else None
        if reaction.consumed is None and rig.in_flight(url) > 0:
            reaction.consumed = time.time()
        if request_id in collector.replies:
            reaction.answered = collector.replies[request_id][1]
        time.sleep(REACTION_POLL)
    reaction.polled_for = time.monotonic() - started


def launch_tick(rows: list[dict[str, Any]], since: float) -> float | None:
    """Observation time of the first tick at or after ``since`` that launched."""
    return next((r["t"] for r in rows if r["t"] >= since and r.get("launch", 0) > 0), None)


def measure_reaction(rig: Rig, key: str, collector: ReplyCollector, timeline: Path, rep: int) -> Reaction:
    url = rig.queue_url("requests")
    request_id = uuid.uuid4().hex
    reaction = Reaction(sent=rig.send(url, [(request_id, key, f"reaction-{rep}")]))
    observe_reaction(rig, url, reaction, request_id, collector)
    reaction.tick = launch_tick(read_rows(timeline), reaction.sent)
    return reaction


def run_reactions(rig: Rig, settings: Any, keys: list[str], collector: ReplyCollector, plan: Plan,
                  folder: Path) -> list[Reaction]:
    timeline, results = folder / "reaction.jsonl", []
    with autoscaler(settings, timeline):
        for rep in range(plan.reps):
            wait_for_zero(rig)
            time.sleep(0.3)
            results.append(measure_reaction(rig, keys[rep % len(keys)], collector, timeline, rep))
            progress(f"reaction {rep + 1}/{plan.reps}: reply after "
                     f"{seconds(results[-1].since_sent(results[-1].answered))}")
        wait_for_zero(rig)
    return results


def stat_line(label: str, values: list[float | None], per_rep: bool) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return f"  {label:<48} n/a"
    each = "   (" + ", ".join(seconds(v) for v in values) + ")" if per_rep else ""
    return f"  {label:<48} median {statistics.median(known):6.2f} s   min {min(known):6.2f} s{each}"


def reaction_report(results: list[Reaction], poll_interval: float) -> str:
    per_rep = len(results) > 1
    lines = [f"Part 1: reaction time from a fleet at 0, one request, {len(results)} repetition(s)",
             "  (from the request visible in the queue; median / min; each repetition in brackets)",
             (f"  (one poll loop took {statistics.fmean(r.loop_period for r in results) * 1000:.0f} ms on average: "
              "each moment is known to about that, so a short step may read slightly negative)"),
             stat_line("(a) first instance seen", [r.since_sent(r.seen) for r in results], per_rep),
             stat_line("(b) first worker consuming it", [r.since_sent(r.consumed) for r in results], per_rep),
             stat_line("(c) first reply", [r.since_sent(r.answered) for r in results], per_rep),
             "  (c) broken down:"]
    explain = {"wait for tick": f"launch decision: wait for the tick (poll {poll_interval:g} s)",
               "launch call": "launch decision: run_instances",
               "runner pickup": "runner pickup (0.25 s polls)",
               "worker start": "worker start: python+imports+model",
               "classify+reply": "classification + reply"}
    for step, label in explain.items():
        lines.append(stat_line("  " + label, [r.steps()[step] for r in results], per_rep))
    return "\n".join(lines)


# ---------------------------------------------------------------- part 2: burst

@dataclass
class Burst:
    start: float
    sent_at: dict[str, float]
    complete: bool
    answered_at: dict[str, float]
    errors: int
    duplicates: int
    to_max: float | None
    to_zero: float | None
    peak: int
    rows: list[dict[str, Any]]

    @property
    def last_answer(self) -> float:
        return max(self.answered_at.values())

    def latencies(self) -> list[float]:
        return [self.answered_at[rid] - self.sent_at[rid] for rid in self.answered_at if rid in self.sent_at]


def send_burst(rig: Rig, keys: list[str], count: int) -> dict[str, float]:
    """Sends ``count`` requests in batches of 10; returns each one's time once its batch was sent."""
    url, sent_at = rig.queue_url("requests"), {}
    requests = [(uuid.uuid4().hex, keys[n % len(keys)], f"{PHOTOS[n % len(keys)]}-{n}") for n in range(count)]
    for start in range(0, count, SEND_BATCH):
        batch = requests[start:start + SEND_BATCH]
        moment = rig.send(url, batch)
        sent_at.update({rid: moment for rid, _, _ in batch})
    return sent_at


def wait_zero_after(sampler: FleetSampler, moment: float, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        zero = sampler.first_zero(moment)
        if zero is not None:
            return zero - moment
        time.sleep(SAMPLE_INTERVAL)
    return None


def run_burst(rig: Rig, settings: Any, keys: list[str], collector: ReplyCollector, folder: Path) -> Burst:
    timeline, sampler = folder / "burst.jsonl", FleetSampler(rig)
    wait_for_zero(rig)
    sampler.start()
    try:
        with autoscaler(settings, timeline):
            time.sleep(1.5)
            start = time.time()
            sent_at = send_burst(rig, keys, BURST_REQUESTS)
            progress(f"burst: {len(sent_at)} requests sent in {time.time() - start:.2f} s")
            complete = collector.wait_all(set(sent_at), BURST_TIMEOUT)
            answered = {rid: collector.replies[rid][1] for rid in sent_at if rid in collector.replies}
            progress(f"burst: {len(answered)}/{len(sent_at)} answered")
            to_zero = wait_zero_after(sampler, max(answered.values(), default=start), IDLE_TIMEOUT + ZERO_TIMEOUT)
            time.sleep(2 * settings.scaling.poll_interval)
    finally:
        sampler.stop.set()
        sampler.join(timeout=5)
    to_max = sampler.first_at_least(settings.scaling.max_workers, start)
    errors = sum(1 for rid in answered if not collector.replies[rid][0].ok)
    return Burst(start, sent_at, complete, answered, errors, collector.duplicates,
                 None if to_max is None else to_max - start, to_zero, sampler.peak(), read_rows(timeline))


def line(label: str, value: str) -> str:
    return f"  {label:<36} {value}"


def burst_report(burst: Burst, settings: Any) -> str:
    latencies, max_workers = burst.latencies(), settings.scaling.max_workers
    launches = sum(r.get("launch", 0) for r in burst.rows)
    tick_errors = sum(1 for r in burst.rows if r.get("error"))
    latency = (f"avg {statistics.fmean(latencies):.2f} s   p50 {percentile(latencies, 0.5):.2f} s   "
               f"p95 {percentile(latencies, 0.95):.2f} s" if latencies else "n/a")
    all_answered = seconds(burst.last_answer - burst.start) if burst.answered_at else "none answered"
    return "\n".join([
        (f"Part 2: burst of {len(burst.sent_at)} requests from 0 workers, scaling.max_workers = {max_workers} "
         f"(times from the first send)"),
        line("answered", f"{len(burst.answered_at)}/{len(burst.sent_at)} ({burst.errors} error replies, "
                         f"{burst.duplicates} duplicate replies)"),
        line(f"time to reach {max_workers} instances",
             seconds(burst.to_max) if burst.to_max is not None else "never reached"),
        line("max instances ever seen", f"{burst.peak} (pending + running, sampled every {SAMPLE_INTERVAL:g} s)"),
        line("time to all answered", all_answered),
        line("request latency (send -> reply)", latency),
        line("time to zero after last answer", (seconds(burst.to_zero) if burst.to_zero is not None
                                                 else "not back at 0")
             + f"   (worker.idle_timeout = {settings.worker.idle_timeout:g} s)"),
        line("autoscaler", f"{len(burst.rows)} ticks, {launches} instances launched, "
                           f"{tick_errors} ticks with a cloud error"),
    ])


def write_plot(burst: Burst, png: Path, settings: Any) -> Path:
    from hybrid.autoscale.plot import plot_timeline

    title = (f"autoscaler: burst of {len(burst.sent_at)} requests, max {settings.scaling.max_workers} workers, "
             f"idle_timeout {settings.worker.idle_timeout:g} s (local instances)")
    return plot_timeline(burst.rows, png, title, answered=list(burst.answered_at.values()))


# ---------------------------------------------------------------- main

def header(plan: Plan, quick: bool, settings: Any) -> str:
    import moto

    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    return "\n".join([
        f"hybrid autoscaler benchmark ({'quick' if quick else 'full'}), {now}",
        f"  {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}, moto {moto.__version__}",
        (f"  load average {os.getloadavg()[0]:.2f} (1 min) and {len(exec_workers_anywhere())} other hybrid worker "
         f"process(es) running at the start: they share the CPUs with this run"),
        (f"  local server + local instances; scaling.poll_interval = {settings.scaling.poll_interval:g} s, "
         f"messages_per_worker = {settings.scaling.messages_per_worker}, max_workers = {plan.max_workers}, "
         f"worker.idle_timeout = {settings.worker.idle_timeout:g} s, batch_size = {settings.worker.batch_size}"),
    ])


def report_leftovers(state_dir: Path, patience: float = 5.0) -> None:
    """Warns about every process of this run (workers above all) still alive after ``patience`` seconds."""
    remaining = common.wait_for_no_leftovers(state_dir, patience)
    for pid, cmd in remaining:
        print(f"WARNING: a process of this benchmark remains: pid {pid}: {cmd}")
    others = [pid for pid, args in exec_workers_anywhere() if str(state_dir) not in args]
    if not remaining:
        print("teardown: no hybrid worker process of this benchmark remains"
              + (f" ({len(others)} of another state folder, not started here: pids {others})" if others else ""))


def run(plan: Plan, quick: bool, png: Path | None) -> None:
    from hybrid.core.settings import load

    state_dir = Path(tempfile.mkdtemp(prefix="bench-autoscale-")).resolve()
    settings = load(None, {}, {"stack": f"bench-as-{secrets.token_hex(3)}", "state_dir": str(state_dir),
                               "worker.idle_timeout": str(IDLE_TIMEOUT),
                               "scaling.max_workers": str(plan.max_workers)})
    print(header(plan, quick, settings), flush=True)
    photos = {name: common.photo_jpeg(name) for name in PHOTOS}
    collector = None
    try:
        with common.local_server(state_dir, lambda _: progress("local server and instance runner stopped")) as info, \
                common.aws_stack(settings, lambda _: progress("stack down")):
            progress(f"local server at {info.url}, stack {settings.stack} up")
            rig = Rig(settings, info.url)
            keys = [rig.upload(photos[name]) for name in PHOTOS]
            collector = ReplyCollector(rig)
            collector.start()
            try:
                print("\n" + reaction_report(run_reactions(rig, settings, keys, collector, plan, state_dir),
                                             settings.scaling.poll_interval), flush=True)
                burst = run_burst(rig, settings, keys, collector, state_dir)
                print("\n" + burst_report(burst, settings), flush=True)
                if png:
                    print(f"  timeline plot written to {write_plot(burst, png, settings)}", flush=True)
            finally:
                collector.stop.set()
                collector.join(timeout=5)
    finally:
        print(flush=True)
        report_leftovers(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 reaction repetition and max_workers = 10")
    parser.add_argument("--plot", metavar="PNG", type=Path, help="write the burst's autoscaler timeline to PNG")
    args = parser.parse_args(argv)
    started = time.monotonic()
    run(QUICK if args.quick else FULL, args.quick, args.plot)
    print(f"total run time {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
