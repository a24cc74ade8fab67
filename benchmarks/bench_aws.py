"""Benchmark of the local AWS server: SQS rates of the emulator vs plain moto, stack ``up`` / ``down`` times, and
the client and server cost of single S3 and SQS calls on the emulator vs plain moto.

Run: ``.venv/bin/python benchmarks/bench_aws.py [--quick]`` (only 127.0.0.1 is contacted; nothing is left running).

Part 1, SQS, against two servers started side by side in one run, both on 127.0.0.1 with the same moto:
  * ``patched``: the project's emulator (``hybrid.local.awsserver.start_emulator``: moto plus ``sqs_fixes``);
  * ``unpatched``: a plain ``python -m moto.server``.
Every message body is 1000 bytes. Rows:
  * ``send into empty queue``: ``send_message_batch`` of 10, one thread, the first N messages of a new queue.
  * ``receive+delete @ depth D``: one queue per server is filled to D messages (untimed; both servers are filled
    at the same time), then one thread repeats ``receive_message(MaxNumberOfMessages=10)`` +
    ``delete_message_batch`` and tops the queue up with a batch of as many new messages after each round, so every
    receive sees a queue of depth D. Messages per second over the timed receive and delete calls only. ``n`` is
    how many messages were timed: a slow server stops at a per-row time budget rather than the target count.
  * ``send @ depth D``: the top-up batches of that row, timed apart: the send rate at depth D.
  * ``depth 3000 / depth 100``: the ratio of the receive+delete rates. Near 1.0 means receive cost does not grow
    with queue depth; far below 1.0 means it does (plain moto walks the whole queue for each received message).
    With ``--quick`` the deepest depth is 1000 (filling a queue gets slower with depth on both servers).
  * ``concurrent``: 8 threads drain one queue of N messages together, each repeating receive
    (VisibilityTimeout=60, WaitTimeSeconds=1) + delete until a receive comes back empty. ``duplicates`` counts
    deliveries of a MessageId already delivered: with a 60 s visibility timeout it must be 0; anything else means
    receive is not atomic across concurrent requests.
Servers are measured one at a time; only the untimed fills run on both at once.

Part 2, ``up`` / ``down`` of a stack (buckets, queues, security group, key pair, image record) on the patched
emulator, with a fresh stack name each repetition: the first ``up`` (creates everything), a second ``up`` (must
change nothing), then ``down``. Median and min in seconds over the repetitions, and each run in order: the first
run also pays one-time costs (the server loads its EC2/S3 backends, the client builds its sessions).

Part 3, per-call cost, on the two servers of Part 1: one thread makes N calls of one kind in a row (a block), for
each of these rows:
  * S3: ``put_object`` of a 45 KB body (random bytes) to a new key; the same with ``IfNoneMatch="*"`` (the web
    tier's upload); ``get_object`` of a 45 KB object, body read; ``put_object`` of a 10-byte body to a new key.
  * SQS, 300-byte bodies: ``send_message``; ``send_message_batch`` of 10; ``receive_message(MaxNumberOfMessages=10)``
    + ``delete_message_batch`` (one row per pair: 2 calls; it receives what the batches sent);
    ``get_queue_attributes(All)``. Calls rotate over 10 queues per server, so no queue holds more than about N
    messages (Part 1 measures how depth costs); the queues are purged after each round.
A round runs every row, the servers taking turns on each row; rounds alternate which server goes first, so noise
(large on a 2-core machine) falls on both alike. One untimed warm-up round of 10 calls comes first. Columns, each
the median over the rounds of a block's total divided by N:
  * ``wall ms``; ``client CPU ms``: ``time.thread_time`` of the calling thread (botocore builds, signs and parses;
    opening a connection costs here too);
  * ``server CPU ms``: utime + stime of the server process (``/proc/<pid>/stat``), net of its background: the
    emulator answers its instance runner's ``describe_instances`` 4 times a second. That rate is what a server
    spent while only the other was being called; it is printed under the table. /proc counts in 10 ms ticks, so a
    block's figure is exact to 10 ms / N per call; ``server min-max`` is the spread over the rounds;
  * ``connects/call``: TCP connections the client opened (``urllib3``'s ``HTTPConnection.connect``, counted in this
    process). Plain moto closes every connection after its answer (1 per call); the emulator keeps them (0);
  * ``server CPU unpatched/patched``: the ratio of the two servers' server CPU medians.
"""
from __future__ import annotations

import os

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime  # noqa: E402
import itertools  # noqa: E402
import secrets  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Iterator  # noqa: E402

import botocore.config  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, for ``import common`` (see common.py)

import common

BODY_BYTES = 1000
BATCH = 10
THREADS = 8
CLIENT_CONFIG = botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5,
                                       read_timeout=120, max_pool_connections=THREADS * 2)


@dataclass(frozen=True)
class Plan:
    """How much work each measurement does."""

    send_messages: int
    depths: tuple[int, ...]
    receive_messages: int
    row_budget_s: float
    concurrent_messages: int
    concurrent_budget_s: float
    stack_repeats: int
    call_rounds: int
    calls_per_round: int


FULL = Plan(send_messages=500, depths=(100, 1000, 3000), receive_messages=300, row_budget_s=15.0,
            concurrent_messages=1000, concurrent_budget_s=60.0, stack_repeats=3, call_rounds=5,
            calls_per_round=100)
# Filling a queue costs O(depth) per message on both servers (moto recomputes every queue attribute on each send),
# so 0 -> 3000 takes about 90 s; --quick stops at depth 1000.
QUICK = Plan(send_messages=200, depths=(100, 1000), receive_messages=100, row_budget_s=6.0,
             concurrent_messages=300, concurrent_budget_s=20.0, stack_repeats=1, call_rounds=5,
             calls_per_round=50)


@dataclass(frozen=True)
class Rate:
    messages: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    def cell(self) -> str:
        return f"{self.per_second:,.1f} (n={self.messages})"


@dataclass(frozen=True)
class Concurrent:
    deliveries: int
    unique: int
    seconds: float

    @property
    def duplicates(self) -> int:
        return self.deliveries - self.unique


@dataclass(frozen=True)
class DepthResult:
    receive_delete: Rate
    send: Rate


@dataclass
class SqsResults:
    send: Rate = Rate(0, 0.0)
    depth: dict[int, DepthResult] = field(default_factory=dict)
    concurrent: Concurrent = Concurrent(0, 0, 0.0)


# ---------------------------------------------------------------- servers

@dataclass(frozen=True)
class Server:
    """A local AWS server under test: where it answers and its process (for its CPU time)."""

    url: str
    pid: int


@contextlib.contextmanager
def unpatched_moto(log_path: Path) -> Iterator[Server]:
    """A plain ``python -m moto.server`` on a free port."""
    port = common.free_port()
    env = {**os.environ, "MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR": "false"}
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(url, process)
        yield Server(url, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def wait_until_answers(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    from hybrid.local.awsserver.process import answers

    deadline = time.monotonic() + timeout
    while not answers(url):
        if process.poll() is not None:
            raise RuntimeError(f"moto.server exited with code {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"moto.server did not answer at {url} within {timeout:.0f} s")
        time.sleep(0.1)


def sqs_client(url: str) -> Any:
    return common.local_client(url, "sqs", CLIENT_CONFIG)


# ---------------------------------------------------------------- SQS measurements

def body(number: int) -> str:
    return f"{number:010d}".ljust(BODY_BYTES, "x")


def new_queue(client: Any, label: str) -> str:
    return client.create_queue(QueueName=f"bench-{label}-{secrets.token_hex(3)}")["QueueUrl"]


def send_batch(client: Any, queue_url: str, count: int, first: int = 0) -> None:
    common.send_bodies(client, queue_url, [body(first + i) for i in range(count)])


def fill(client: Any, queue_url: str, count: int) -> None:
    for first in range(0, count, BATCH):
        send_batch(client, queue_url, min(BATCH, count - first), first)


def fill_all(targets: list[tuple[Any, str, int]]) -> None:
    """Untimed: sends ``count`` messages to each ``(client, queue_url, count)``, all servers at once."""
    with ThreadPoolExecutor(len(targets)) as pool:
        for future in [pool.submit(fill, *target) for target in targets]:
            future.result()


def measure_send(client: Any, count: int) -> Rate:
    queue_url = new_queue(client, "send")
    try:
        return Rate(count, timed(lambda: fill(client, queue_url, count))[0])
    finally:
        client.delete_queue(QueueUrl=queue_url)


def receive_and_delete(client: Any, queue_url: str, wait_seconds: int = 0) -> list[dict[str, Any]]:
    messages = client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=BATCH, VisibilityTimeout=60,
                                      WaitTimeSeconds=wait_seconds).get("Messages", [])
    common.delete_received(client, queue_url, messages)
    return messages


def measure_at_depth(client: Any, queue_url: str, depth: int, target: int, budget_s: float) -> DepthResult:
    """Receive+delete rate of a queue holding ``depth`` messages, topped up after every round.

    The top-up sends are timed apart: they give the send rate at that depth.
    """
    received = sent = 0
    receive_s = send_s = 0.0
    wall_start = time.monotonic()
    while received < target and time.monotonic() - wall_start < budget_s:
        seconds, messages = timed(lambda: receive_and_delete(client, queue_url))
        if not messages:
            raise RuntimeError(f"queue at depth {depth} returned no message")
        received, receive_s = received + len(messages), receive_s + seconds
        send_s += timed(lambda: send_batch(client, queue_url, len(messages)))[0]
        sent += len(messages)
    return DepthResult(Rate(received, receive_s), Rate(sent, send_s))


def measure_concurrent(url: str, queue_url: str, budget_s: float) -> Concurrent:
    """``THREADS`` consumers drain a filled queue together; counts repeated MessageIds."""
    delivered: list[str] = []
    lock, barrier = threading.Lock(), threading.Barrier(THREADS + 1)
    deadline = time.monotonic() + budget_s

    def consume() -> None:
        own = sqs_client(url)
        barrier.wait()
        while time.monotonic() < deadline:
            messages = receive_and_delete(own, queue_url, wait_seconds=1)
            if not messages:
                return
            with lock:
                delivered.extend(m["MessageId"] for m in messages)

    threads = [threading.Thread(target=consume, daemon=True) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return Concurrent(len(delivered), len(set(delivered)), time.perf_counter() - start)


def measure_sqs(urls: dict[str, str], plan: Plan) -> dict[str, SqsResults]:
    """Every SQS row for every server. Fills run on all servers at once; timed parts run one server at a time."""
    clients = {name: sqs_client(url) for name, url in urls.items()}
    results = {name: SqsResults() for name in urls}
    for name, client in clients.items():
        progress(name, "send")
        results[name].send = measure_send(client, plan.send_messages)
    queues = {name: new_queue(client, "depth") for name, client in clients.items()}
    depth_now = 0
    for depth in plan.depths:
        progress("all", f"fill to depth {depth}")
        fill_all([(clients[name], queues[name], depth - depth_now) for name in urls])
        depth_now = depth
        for name, client in clients.items():
            progress(name, f"receive+delete at depth {depth}")
            results[name].depth[depth] = measure_at_depth(client, queues[name], depth, plan.receive_messages,
                                                          plan.row_budget_s)
    for name, client in clients.items():
        client.delete_queue(QueueUrl=queues[name])
    queues = {name: new_queue(client, "conc") for name, client in clients.items()}
    progress("all", f"fill {plan.concurrent_messages} for the concurrent run")
    fill_all([(clients[name], queues[name], plan.concurrent_messages) for name in urls])
    for name, url in urls.items():
        progress(name, f"concurrent, {THREADS} threads")
        results[name].concurrent = measure_concurrent(url, queues[name], plan.concurrent_budget_s)
        clients[name].delete_queue(QueueUrl=queues[name])
    return results


# ---------------------------------------------------------------- stack up / down

@dataclass(frozen=True)
class StackRun:
    first_up: float
    second_up: float
    down: float
    first_changes: int
    second_changes: int


def time_stack(state_dir: Path, name: str) -> StackRun:
    from hybrid.aws.stack import build_aws_stack
    from hybrid.core.settings import load

    stack = build_aws_stack(load(overrides={"state_dir": str(state_dir), "stack": name}))
    first_up, first = timed(lambda: stack.up(report=common.ignore))
    second_up, second = timed(lambda: stack.up(report=common.ignore))
    down, _ = timed(lambda: stack.down(report=common.ignore))
    return StackRun(first_up, second_up, down, len(first), len(second))


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def stack_name(index: int) -> str:
    return f"bench-{index}-{secrets.token_hex(2)}"


# ---------------------------------------------------------------- per-call cost

PHOTO_BYTES = 45 * 1024
SMALL_BODY = b"0123456789"
MESSAGE = "m" * 300
GET_KEY = "photo-to-get"
CALL_QUEUES = 10
WARM_UP_CALLS = 10


class ConnectCounter:
    """Counts the TCP connections urllib3 (so boto3) opens in this process while ``installed``."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def installed(self) -> Iterator[ConnectCounter]:
        from urllib3.connection import HTTPConnection

        original = HTTPConnection.connect

        def connect(connection: Any) -> None:
            with self._lock:
                self.count += 1
            original(connection)

        HTTPConnection.connect = connect  # type: ignore[method-assign]
        try:
            yield self
        finally:
            HTTPConnection.connect = original  # type: ignore[method-assign]


@dataclass
class CallTarget:
    """One server's clients, bucket and queues for the per-call part."""

    server: Server
    s3: Any
    sqs: Any
    bucket: str
    queues: list[str]
    photo: bytes
    keys: Iterator[int] = field(default_factory=itertools.count)

    def queue(self, call: int) -> str:
        return self.queues[call % len(self.queues)]

    def new_key(self, prefix: str) -> str:
        return f"{prefix}/{next(self.keys)}"


def call_target(server: Server, photo: bytes) -> CallTarget:
    s3, sqs = common.local_client(server.url, "s3", CLIENT_CONFIG), sqs_client(server.url)
    bucket = f"bench-calls-{secrets.token_hex(3)}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=GET_KEY, Body=photo)
    return CallTarget(server, s3, sqs, bucket, [new_queue(sqs, f"call{n}") for n in range(CALL_QUEUES)], photo)


def put_photo(target: CallTarget, call: int) -> None:
    target.s3.put_object(Bucket=target.bucket, Key=target.new_key("put"), Body=target.photo)


def put_photo_if_absent(target: CallTarget, call: int) -> None:
    target.s3.put_object(Bucket=target.bucket, Key=target.new_key("new"), Body=target.photo, IfNoneMatch="*")


def get_photo(target: CallTarget, call: int) -> None:
    target.s3.get_object(Bucket=target.bucket, Key=GET_KEY)["Body"].read()


def put_small(target: CallTarget, call: int) -> None:
    target.s3.put_object(Bucket=target.bucket, Key=target.new_key("small"), Body=SMALL_BODY)


def send_one(target: CallTarget, call: int) -> None:
    target.sqs.send_message(QueueUrl=target.queue(call), MessageBody=MESSAGE)


def send_ten(target: CallTarget, call: int) -> None:
    common.send_bodies(target.sqs, target.queue(call), [MESSAGE] * BATCH)


def receive_ten(target: CallTarget, call: int) -> None:
    receive_and_delete(target.sqs, target.queue(call))


def queue_attributes(target: CallTarget, call: int) -> None:
    target.sqs.get_queue_attributes(QueueUrl=target.queue(call), AttributeNames=["All"])


CALLS: tuple[tuple[str, Callable[[CallTarget, int], None]], ...] = (
    ("S3 put_object 45 KB, new key", put_photo),
    ("S3 put_object 45 KB, IfNoneMatch=*, new key", put_photo_if_absent),
    ("S3 get_object 45 KB, body read", get_photo),
    ("S3 put_object 10 bytes, new key", put_small),
    ("SQS send_message 300 B", send_one),
    ("SQS send_message_batch of 10 x 300 B", send_ten),
    ("SQS receive_message(10) + delete_message_batch", receive_ten),
    ("SQS get_queue_attributes(All)", queue_attributes),
)


@dataclass(frozen=True)
class Block:
    """``calls`` calls of one kind in a row on one server: seconds of wall, client CPU and server CPU; connects."""

    calls: int
    wall_s: float
    client_s: float
    server_s: float
    connects: int


@dataclass
class CallCosts:
    """One server's blocks (one per round for each of ``CALLS``) and its background CPU: what it spent while only
    the other server was being called."""

    blocks: dict[str, list[Block]] = field(default_factory=dict)
    background_cpu_s: float = 0.0
    background_wall_s: float = 0.0

    @property
    def background_per_s(self) -> float:
        return self.background_cpu_s / self.background_wall_s if self.background_wall_s else 0.0

    def wall_ms(self, label: str) -> list[float]:
        return [1000 * b.wall_s / b.calls for b in self.blocks[label]]

    def client_ms(self, label: str) -> list[float]:
        return [1000 * b.client_s / b.calls for b in self.blocks[label]]

    def server_ms(self, label: str) -> list[float]:
        """Server CPU per call, net of the background."""
        return [1000 * (b.server_s - self.background_per_s * b.wall_s) / b.calls for b in self.blocks[label]]

    def connects_per_call(self, label: str) -> list[float]:
        return [b.connects / b.calls for b in self.blocks[label]]


def server_cpu(targets: dict[str, CallTarget]) -> dict[str, float]:
    return {name: common.cpu_seconds(target.server.pid) for name, target in targets.items()}


def time_block(name: str, label: str, call: Callable[[CallTarget, int], None], calls: int,
               targets: dict[str, CallTarget], counter: ConnectCounter, costs: dict[str, CallCosts]) -> None:
    """``calls`` calls in a row on server ``name``; what the other servers spent meanwhile is their background."""
    before, connects = server_cpu(targets), counter.count
    wall, client = time.perf_counter(), time.thread_time()
    for number in range(calls):
        call(targets[name], number)
    wall, client = time.perf_counter() - wall, time.thread_time() - client
    after = server_cpu(targets)
    for other in targets.keys() - {name}:
        costs[other].background_cpu_s += after[other] - before[other]
        costs[other].background_wall_s += wall
    block = Block(calls, wall, client, after[name] - before[name], counter.count - connects)
    costs[name].blocks.setdefault(label, []).append(block)


def call_round(targets: dict[str, CallTarget], calls: int, counter: ConnectCounter,
               costs: dict[str, CallCosts]) -> None:
    """Each of ``CALLS`` in turn, on each server in the order of ``targets``; then the queues are purged."""
    for label, call in CALLS:
        for name in targets:
            time_block(name, label, call, calls, targets, counter, costs)
    for target in targets.values():
        for queue_url in target.queues:
            target.sqs.purge_queue(QueueUrl=queue_url)


def measure_call_costs(servers: dict[str, Server], plan: Plan) -> dict[str, CallCosts]:
    """Part 3: rounds of ``plan.calls_per_round`` calls of each kind, the servers taking turns, the first server
    of a round alternating; after one untimed warm-up round."""
    photo = secrets.token_bytes(PHOTO_BYTES)
    targets = {name: call_target(server, photo) for name, server in servers.items()}
    costs = {name: CallCosts() for name in servers}
    with ConnectCounter().installed() as counter:
        progress("all", "per-call warm-up")
        call_round(targets, WARM_UP_CALLS, counter, {name: CallCosts() for name in servers})
        for number in range(plan.call_rounds):
            order = list(servers) if number % 2 == 0 else list(reversed(servers))
            progress("all", f"per-call round {number + 1} of {plan.call_rounds}, {order[0]} first")
            call_round({name: targets[name] for name in order}, plan.calls_per_round, counter, costs)
    for target in targets.values():
        for queue_url in target.queues:
            target.sqs.delete_queue(QueueUrl=queue_url)
    return costs


# ---------------------------------------------------------------- report

def ratio(results: SqsResults, depths: tuple[int, ...]) -> str:
    low, high = (results.depth[d].receive_delete.per_second for d in (depths[0], depths[-1]))
    return f"{high / low:.2f}" if low else "n/a"


def sqs_table(results: dict[str, SqsResults], plan: Plan) -> str:
    both, depths = list(results.values()), plan.depths
    rows = [["send (batch of 10) into empty queue, msgs/s", *(r.send.cell() for r in both)]]
    rows += [[f"send (batch of 10) @ depth {d}, msgs/s", *(r.depth[d].send.cell() for r in both)] for d in depths]
    rows += [[f"receive+delete @ depth {d}, msgs/s", *(r.depth[d].receive_delete.cell() for r in both)]
             for d in depths]
    rows.append([f"receive+delete: depth {depths[-1]} / depth {depths[0]}", *(ratio(r, depths) for r in both)])
    rows.append([f"concurrent {THREADS} threads receive+delete, msgs/s",
                 *(Rate(r.concurrent.unique, r.concurrent.seconds).cell() for r in both)])
    rows.append([f"concurrent duplicates / deliveries (of {plan.concurrent_messages})",
                 *(f"{r.concurrent.duplicates} / {r.concurrent.deliveries}" for r in both)])
    return common.table(["SQS, 1000-byte bodies", *(f"{name}" for name in results)], rows)


def stack_table(runs: list[StackRun]) -> str:
    rows = []
    for label, values in (("up (first, creates)", [r.first_up for r in runs]),
                          ("up (second, no changes)", [r.second_up for r in runs]),
                          ("down", [r.down for r in runs])):
        rows.append([label, f"{statistics.median(values):.3f}", f"{min(values):.3f}",
                     ", ".join(f"{v:.3f}" for v in values)])
    changes = ", ".join(f"{r.first_changes}/{r.second_changes}" for r in runs)
    return common.table(["stack on patched emulator", "median s", "min s", "each run, s"], rows) + \
        f"\nchanges made by first/second up, per run: {changes}"


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def call_cost_table(costs: dict[str, CallCosts], plan: Plan) -> str:
    names, median = list(costs), statistics.median
    rows = []
    for label, _ in CALLS:
        first_ms, last_ms = (median(costs[name].server_ms(label)) for name in (names[0], names[-1]))
        for index, name in enumerate(names):
            cost = costs[name]
            rows.append([label if index == 0 else "", name, f"{median(cost.wall_ms(label)):.2f}",
                         f"{median(cost.client_ms(label)):.2f}", f"{median(cost.server_ms(label)):.2f}",
                         spread(cost.server_ms(label)), f"{median(cost.connects_per_call(label)):.2f}",
                         f"{last_ms / first_ms:.2f}" if index == 0 and first_ms > 0 else ""])
    background = ", ".join(f"{name} {cost.background_per_s * 1000:.1f} ms/s" for name, cost in costs.items())
    return common.table([f"per call, median of {plan.call_rounds} rounds x {plan.calls_per_round}", "server",
                         "wall ms", "client CPU ms", "server CPU ms", "server min-max", "connects/call",
                         f"server CPU {names[-1].split()[0]}/{names[0].split()[0]}"], rows) + \
        f"\nserver CPU is net of each server's background CPU (what it spent while only the other was called):" \
        f"\n{background}"


def header() -> str:
    import moto

    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (f"hybrid AWS benchmark -- moto {moto.__version__}, python {sys.version.split()[0]}, "
            f"{os.cpu_count()} CPUs, {now}")


def progress(server: str, step: str) -> None:
    common.progress(f"[{server}] {step}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="depths 100 and 1000 only, fewer messages and calls, one stack run (about 1 minute)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    started = time.perf_counter()
    print(header() + (" (--quick)" if args.quick else ""), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-aws-") as tmp:
        state_dir = Path(tmp) / "state"
        with common.local_server(state_dir) as patched, unpatched_moto(Path(tmp) / "moto.log") as plain:
            servers = {"patched (emulator)": Server(patched.url, patched.pid), "unpatched moto": plain}
            results = measure_sqs({name: server.url for name, server in servers.items()}, plan)
            print()
            print(sqs_table(results, plan), flush=True)
            runs = []
            for index in range(plan.stack_repeats):
                progress("patched (emulator)", f"stack run {index + 1}")
                runs.append(time_stack(state_dir, stack_name(index)))
            print()
            print(stack_table(runs), flush=True)
            costs = measure_call_costs(servers, plan)
            print()
            print(call_cost_table(costs, plan))
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
