"""State-holding fakes behind the project's own contracts (``hybrid.core.contracts``), for unit tests, and a polling wait
for threaded tests."""
from __future__ import annotations

import time
from typing import Sequence

from hybrid.core.contracts import Instance, Observed, Resource
from hybrid.core.errors import CloudError
from hybrid.core.naming import STACK_TAG


def eventually(condition, timeout=10.0):
    """Waits (polling) until ``condition()`` holds; fails after ``timeout`` seconds. Not a speed check."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.005)


class InMemoryDriver:
    """Holds resources of one kind in a dict, as a cloud would; can be told to fail a given create."""

    def __init__(self, kind: str, fail_on_create: str = "") -> None:
        self.kind = kind
        self.items: dict[str, Observed] = {}
        self.fail_on_create = fail_on_create
        self.calls: list[tuple[str, str]] = []

    def put_foreign(self, name: str) -> None:
        """A resource of that name that belongs to someone else (no stack tag)."""
        self.items[name] = Observed(self.kind, name, f"foreign-{name}", owned=False)

    def observe(self, resource: Resource) -> Observed | None:
        return self.items.get(resource.name)

    def create(self, resource: Resource) -> Observed:
        self.calls.append(("create", resource.name))
        if resource.name == self.fail_on_create:
            raise CloudError(f"injected failure creating {resource.name}")
        observed = Observed(self.kind, resource.name, f"id-{resource.name}",
                            owned=resource.tags.get(STACK_TAG) is not None, properties=dict(resource.properties))
        self.items[resource.name] = observed
        return observed

    def update(self, resource: Resource, observed: Observed) -> None:
        self.calls.append(("update", resource.name))
        self.items[resource.name] = Observed(self.kind, resource.name, observed.id, True, dict(resource.properties))

    def delete(self, observed: Observed) -> bool:
        self.calls.append(("delete", observed.name))
        return self.items.pop(observed.name, None) is not None


class FakeFleet:
    """Instances that take ``polls_to_terminate`` looks before they leave the live list after termination."""

    def __init__(self, polls_to_terminate: int = 2, now=lambda: 0.0) -> None:
        self.now = now
        self.live: dict[str, Instance] = {}
        self.countdown: dict[str, int] = {}
        self.polls_to_terminate = polls_to_terminate
        self.terminate_calls: list[list[str]] = []
        self.launch_calls: list[tuple[int, str]] = []
        self.fail_launches = 0

    def add(self, instance_id: str, state: str = "running") -> None:
        self.live[instance_id] = Instance(instance_id, state, launched_at=self.now())

    def instances(self) -> list[Instance]:
        for instance_id in list(self.countdown):
            self.countdown[instance_id] -= 1
            if self.countdown[instance_id] <= 0:
                del self.countdown[instance_id]
                self.live.pop(instance_id, None)
        return list(self.live.values())

    def launch(self, count: int, token: str) -> list[str]:
        self.launch_calls.append((count, token))
        if self.fail_launches:
            self.fail_launches -= 1
            raise CloudError("injected launch failure", "InsufficientInstanceCapacity")
        ids = [f"i-{len(self.live) + len(self.launch_calls)}-{n}" for n in range(count)]
        for instance_id in ids:
            self.add(instance_id, state="pending")
        return ids

    def terminate(self, instance_ids: Sequence[str]) -> None:
        self.terminate_calls.append(list(instance_ids))
        for instance_id in instance_ids:
            if instance_id in self.live and instance_id not in self.countdown:
                self.live[instance_id] = Instance(instance_id, "shutting-down", 0.0)
                self.countdown[instance_id] = self.polls_to_terminate


class InMemoryQueue:
    """A queue with visibility timeouts, receive counts and a dead-letter queue, on an injected clock."""

    def __init__(self, name: str, clock, max_receive: int = 3, dead_letters: "InMemoryQueue | None" = None) -> None:
        self.name, self.clock, self.max_receive, self.dead_letters = name, clock, max_receive, dead_letters
        self.messages: dict[str, dict] = {}
        self.log: list[tuple[str, object]] = []
        self._next = 0

    def send(self, bodies):
        for body in bodies:
            self._next += 1
            self.messages[f"m{self._next}"] = {"body": body, "visible_at": 0.0, "receives": 0, "receipt": ""}
        self.log.append(("send", list(bodies)))

    def receive(self, max_messages, wait_seconds, visibility=None):
        from hybrid.core.contracts import QueueMessage

        taken = self._take(max_messages, 30 if visibility is None else visibility)
        if not taken and wait_seconds:
            self.clock.sleep(wait_seconds)
            taken = self._take(max_messages, 30 if visibility is None else visibility)
        self.log.append(("receive", len(taken)))
        return [QueueMessage(mid, m["receipt"], m["body"], m["receives"]) for mid, m in taken]

    def _take(self, limit, visibility):
        taken = []
        for mid, message in list(self.messages.items()):
            if len(taken) == limit or message["visible_at"] > self.clock.now():
                continue
            if self.dead_letters is not None and message["receives"] >= self.max_receive:
                del self.messages[mid]
                self.dead_letters.send([message["body"]])
                continue
            message["receives"] += 1
            message["receipt"] = f"{mid}#{message['receives']}"
            message["visible_at"] = self.clock.now() + visibility
            taken.append((mid, message))
        return taken

    def delete(self, receipts):
        self.log.append(("delete", list(receipts)))
        for receipt in receipts:
            self.messages.pop(receipt.split("#")[0], None)

    def hide(self, receipts, seconds):
        self.log.append(("hide", (list(receipts), seconds)))
        for receipt in receipts:
            message = self.messages.get(receipt.split("#")[0])
            if message and message["receipt"] == receipt:
                message["visible_at"] = self.clock.now() + seconds

    def depth(self):
        from hybrid.core.contracts import QueueDepth

        visible = sum(m["visible_at"] <= self.clock.now() for m in self.messages.values())
        return QueueDepth(visible, len(self.messages) - visible)


class InMemoryStore:
    """A bucket in a dict; ``failures`` makes the next N calls of an operation raise a transient error."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.objects: dict[str, bytes] = {}
        self.failures: dict[str, int] = {}

    def _maybe_fail(self, operation: str) -> None:
        if self.failures.get(operation, 0) > 0:
            self.failures[operation] -= 1
            raise CloudError(f"injected transient {operation} failure", "SlowDown")

    def put(self, key, data, content_type="application/octet-stream"):
        self._maybe_fail("put")
        self.objects[key] = data

    def put_if_absent(self, key, data):
        self._maybe_fail("put")
        if key in self.objects:
            return False
        self.objects[key] = data
        return True

    def get(self, key, max_bytes=None):
        from hybrid.core.errors import NotFoundError, TooLargeError

        self._maybe_fail("get")
        if key not in self.objects:
            raise NotFoundError(f"no object {key}", "NoSuchKey")
        if max_bytes is not None and len(self.objects[key]) > max_bytes:
            raise TooLargeError(f"object {key} is too large")
        return self.objects[key]

    def exists(self, key):
        return key in self.objects


class FakePrediction:
    def __init__(self, label: str) -> None:
        self.label = label
        self.top5 = ((label, 0.9), ("other", 0.05))


class FakeClassifier:
    """Labels an image by its first bytes (b"cat..." -> "cat"); bytes starting with b"bad" are a bad image."""

    model_id = "fake-model@1"

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[int] = []
        self.delay = delay

    def classify(self, images):
        import time

        self.batches.append(len(images))
        time.sleep(self.delay)
        return [ValueError("cannot identify image file") if image.startswith(b"bad")
                else FakePrediction(image.split(b"-")[0].decode()) for image in images]


class BlockingQueue:
    """A thread-safe queue whose receive really waits (up to ``wait_seconds``) for a send: for threaded tests."""

    def __init__(self, name: str) -> None:
        import threading

        self.name = name
        self.bodies: list[str] = []
        self.sent: list[str] = []
        self._ready = threading.Condition()
        self._next = 0

    def send(self, bodies):
        with self._ready:
            self.bodies.extend(bodies)
            self.sent.extend(bodies)
            self._ready.notify_all()

    def receive(self, max_messages, wait_seconds, visibility=None):
        from hybrid.core.contracts import QueueMessage

        with self._ready:
            self._ready.wait_for(lambda: self.bodies, timeout=wait_seconds)
            taken, self.bodies = self.bodies[:max_messages], self.bodies[max_messages:]
        messages = []
        for body in taken:
            self._next += 1
            messages.append(QueueMessage(f"m{self._next}", f"r{self._next}", body))
        return messages

    def delete(self, receipts):
        return None

    def hide(self, receipts, seconds):
        return None

    def depth(self):
        from hybrid.core.contracts import QueueDepth

        with self._ready:
            return QueueDepth(len(self.bodies), 0)


class GatedQueue:
    """Records its sends call by call, for the request sender's tests. ``hold()`` keeps every send in flight until
    ``release()``; ``started`` is released once as each send begins. The next ``fail_next`` sends, and a send holding
    a body in ``fail_bodies``, raise a ``CloudError`` and keep nothing of that call, as ``SqsQueue.send`` fails a whole
    batch."""

    def __init__(self, name: str) -> None:
        import threading

        self.name = name
        self.batches: list[list[str]] = []
        self.failed_batches: list[list[str]] = []
        self.fail_bodies: set[str] = set()
        self.fail_next = 0
        self.started = threading.Semaphore(0)
        self._gate = threading.Event()
        self._gate.set()
        self._lock = threading.Lock()

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def send(self, bodies):
        self.started.release()
        self._gate.wait()
        with self._lock:
            if self.fail_next > 0 or self.fail_bodies & set(bodies):
                self.fail_next = max(0, self.fail_next - 1)
                self.failed_batches.append(list(bodies))
                raise CloudError(f"injected failure sending {len(bodies)} messages", "InternalError")
            self.batches.append(list(bodies))

    @property
    def sent(self) -> list[str]:
        with self._lock:
            return [body for batch in self.batches for body in batch]

    def depth(self):
        from hybrid.core.contracts import QueueDepth

        return QueueDepth(len(self.sent), 0)


class GatedClassifier(FakeClassifier):
    """A FakeClassifier that classifies only when the test lets it: each call waits for one ``let_through``.
    ``asked`` counts the calls begun (classified ones are in ``batches``); ``wait_until_asked`` waits for them."""

    def __init__(self, timeout: float = 10.0) -> None:
        import threading

        super().__init__()
        self.timeout = timeout
        self.asked = 0
        self._gate = threading.Semaphore(0)
        self._changed = threading.Condition()

    def let_through(self, calls: int = 1) -> None:
        for _ in range(calls):
            self._gate.release()

    def wait_until_asked(self, calls: int) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: self.asked >= calls, self.timeout), f"not asked {calls} times"

    def classify(self, images):
        with self._changed:
            self.asked += 1
            self._changed.notify_all()
        if not self._gate.acquire(timeout=self.timeout):
            raise AssertionError("the test never let this call through")
        return super().classify(images)


class HoldableQueue(InMemoryQueue):
    """An InMemoryQueue whose sends the test can hold (a held send waits inside the call until ``release``);
    ``started`` counts the sends begun, ``sends()`` lists the bodies of those done, ``wait_until`` waits for either."""

    def __init__(self, name: str, clock=None, timeout: float = 10.0) -> None:
        import threading

        from hybrid.core.clock import FakeClock

        super().__init__(name, clock or FakeClock())
        self.timeout = timeout
        self.started = 0
        self._open = threading.Event()
        self._open.set()
        self._changed = threading.Condition()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def send(self, bodies):
        self._note(lambda: setattr(self, "started", self.started + 1))
        if not self._open.wait(self.timeout):
            raise AssertionError("a held send was never released")
        self._note(lambda: InMemoryQueue.send(self, bodies))

    def sends(self) -> list[list[str]]:
        return [bodies for op, bodies in self.log if op == "send"]

    def wait_until(self, condition) -> None:
        with self._changed:
            assert self._changed.wait_for(condition, self.timeout), "the queue never got there"

    def _note(self, change) -> None:
        with self._changed:
            change()
            self._changed.notify_all()


class BrokenKeysStore(InMemoryStore):
    """An InMemoryStore whose puts of the keys in ``broken`` keep failing with a transient error."""

    def __init__(self, name: str, broken=()) -> None:
        super().__init__(name)
        self.broken = set(broken)

    def put(self, key, data, content_type="application/octet-stream"):
        if key in self.broken:
            raise CloudError(f"injected lasting put failure for {key}", "SlowDown")
        super().put(key, data, content_type)


class Journaled:
    """Wraps a fake and appends (name, method, "called" | "returned", args) to a shared journal around each call,
    so a test can check the order of calls across fakes; ``delays`` makes the named methods slow (seconds)."""

    def __init__(self, inner, name: str, journal: list, delays: dict | None = None) -> None:
        self.inner, self.name, self.journal, self.delays = inner, name, journal, delays or {}

    def __getattr__(self, method: str):
        import time

        action = getattr(self.inner, method)

        def journaled(*args, **kwargs):
            self.journal.append((self.name, method, "called", args))
            time.sleep(self.delays.get(method, 0.0))
            result = action(*args, **kwargs)
            self.journal.append((self.name, method, "returned", args))
            return result
        return journaled
