"""The web tier's request path against fakes of the queue and bucket contracts, with a stand-in app tier."""
import threading
import time

import pytest

from hybrid.core.errors import CloudError
from hybrid.core.messages import ClassifyReply, ClassifyRequest
from tests.fakes import BlockingQueue, GatedQueue, InMemoryStore
from web_tier.cache import CachedResult, ResultCache
from web_tier.runtime import assemble
from web_tier.service import ImageRejected, RequestTimeout
from web_tier.uploads import Upload


class StandInAppTier(threading.Thread):
    """Answers each request after ``delay``: label = first bytes of the image, b"bad" -> an error reply."""

    def __init__(self, requests, replies, inputs, delay=0.0):
        super().__init__(daemon=True)
        self.requests, self.replies, self.inputs, self.delay = requests, replies, inputs, delay
        self.stop = threading.Event()
        self.handled = []

    def run(self):
        while not self.stop.is_set():
            for message in self.requests.receive(10, 0.2):
                request = ClassifyRequest.from_body(message.body)
                self.handled.append(request)
                time.sleep(self.delay)
                image = self.inputs.get(request.key)
                reply = ClassifyReply(request.id, request.name, model="m@1", key=request.key,
                                      error="not an image" if image.startswith(b"bad") else "",
                                      label="" if image.startswith(b"bad") else image.split(b"-")[0].decode(),
                                      top5=() if image.startswith(b"bad") else ((image.split(b"-")[0].decode(), .9),))
                self.replies.send([reply.to_body()])


@pytest.fixture
def rig(tmp_path):
    def make(delay=0.0, timeout=5.0):
        inputs, requests, replies = InMemoryStore("in"), BlockingQueue("requests"), BlockingQueue("replies")
        cache = ResultCache(tmp_path / "cache.json", 1000, flush_interval=None)
        runtime = assemble(inputs, requests, replies, cache, timeout, wait_seconds=1)
        app_tier = StandInAppTier(requests, replies, inputs, delay)
        app_tier.start()
        made.append((runtime, app_tier))
        return runtime, app_tier, inputs, requests
    made = []
    yield make
    for runtime, app_tier in made:
        app_tier.stop.set()
        runtime.close()


def upload(data: bytes, name: str = "img") -> Upload:
    import hashlib

    return Upload(name, data, hashlib.sha256(data).hexdigest())


def test_a_miss_goes_through_the_bucket_and_queue_then_hits_the_cache(rig):
    runtime, app_tier, inputs, requests = rig()
    first = runtime.service.classify(upload(b"cat-1"))
    assert (first.label, first.cached) == ("cat", False)
    assert list(inputs.objects) == [f"sha256/{upload(b'cat-1').digest}"]
    second = runtime.service.classify(upload(b"cat-1", name="other-name"))
    assert (second.label, second.cached) == ("cat", True)
    assert len(requests.sent) == 1


def test_the_same_bytes_are_uploaded_once(rig):
    runtime, app_tier, inputs, requests = rig()
    runtime.service.classify(upload(b"dog-1"))
    runtime.cache.put("0" * 64, CachedResult("x", (), "m@2"))
    runtime.service.classify(upload(b"dog-1"))
    assert len(requests.sent) == 2 and len(inputs.objects) == 1


def test_identical_images_in_flight_share_one_request(rig):
    runtime, app_tier, inputs, requests = rig(delay=0.5)
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(runtime.service.classify(
        upload(b"owl-7", name=f"n{i}")))) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(requests.sent) == 1 and len(app_tier.handled) == 1
    assert {r.label for r in results} == {"owl"} and sum(r.shared for r in results) == 7


def test_a_rejected_image_raises_for_every_waiter(rig):
    runtime, _, _, _ = rig()
    with pytest.raises(ImageRejected, match="not an image"):
        runtime.service.classify(upload(b"bad-bytes"))
    assert runtime.cache.entries == 0


def test_a_timeout_then_the_late_reply_fills_the_cache(rig):
    runtime, app_tier, _, _ = rig(delay=1.0, timeout=0.3)
    with pytest.raises(RequestTimeout, match="within 0.3 s"):
        runtime.service.classify(upload(b"fox-1"))
    deadline = time.monotonic() + 5
    while runtime.cache.get(upload(b"fox-1").digest) is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert runtime.dispatcher.late_replies == 1
    assert runtime.service.classify(upload(b"fox-1")).cached


def test_a_miss_is_checked_and_a_hit_is_not(rig):
    runtime, _, _, requests = rig()
    checked = []
    runtime.service.classify(upload(b"elk-1"), check=checked.append)
    assert checked == [b"elk-1"]

    def refuse(data):
        raise AssertionError("a cache hit must not be decoded again")
    assert runtime.service.classify(upload(b"elk-1"), check=refuse).cached
    with pytest.raises(ValueError):
        runtime.service.classify(upload(b"new-1"), check=lambda data: (_ for _ in ()).throw(ValueError("bad")))
    assert len(requests.sent) == 1, "a refused miss enqueues nothing"


def test_a_miss_reports_the_time_to_send_within_the_time_to_queue_and_classify(rig):
    runtime, _, _, _ = rig()
    timings = runtime.service.classify(upload(b"yak-1")).timings
    assert set(timings) == {"store_ms", "send_ms", "queue_and_classify_ms", "total_ms"}
    assert 0 <= timings["send_ms"] <= timings["queue_and_classify_ms"] <= timings["total_ms"]


def test_a_failed_send_raises_the_queue_error_and_leaves_no_waiter(tmp_path):
    requests = GatedQueue("requests")
    requests.fail_next = 1
    cache = ResultCache(tmp_path / "cache.json", 1000, flush_interval=None)
    runtime = assemble(InMemoryStore("in"), requests, BlockingQueue("replies"), cache, 5.0, wait_seconds=1)
    try:
        with pytest.raises(CloudError, match="injected failure"):
            runtime.service.classify(upload(b"gnu-1"))
        assert (runtime.dispatcher.waiting, runtime.service.inflight) == (0, 0)
        assert runtime.status()["request_sends"]["failed_batches"] == 1
    finally:
        runtime.close()



@pytest.mark.parametrize("stopped, answer", [
    ((), "ok\n"),
    (("sender",), "request sender stopped\n"),
    (("dispatcher", "sender"), "reply dispatcher stopped; request sender stopped\n"),
])
def test_healthz_fails_while_either_thread_of_the_request_path_is_stopped(rig, stopped, answer):
    from hybrid.core.settings import load
    from web_tier.app import create_app

    runtime, *_ = rig()
    if "sender" in stopped:
        runtime.sender.close()
    if "dispatcher" in stopped:
        runtime.dispatcher.stop()
    response = create_app(load(None, {}, {}), runtime).test_client().get("/healthz")
    assert (response.status_code, response.get_data(as_text=True)) == (503 if stopped else 200, answer)


def test_readyz_names_the_first_queue_or_bucket_that_does_not_answer_while_healthz_stays_ok(tmp_path):
    from hybrid.core.errors import EmulatorNotRunning
    from hybrid.core.settings import load
    from web_tier.app import create_app

    server = {"up": True, "asked": []}

    def answers(what):
        def call():
            server["asked"].append(what)
            if not server["up"]:
                raise EmulatorNotRunning("the local AWS server does not answer")
        return call

    checks = tuple((what, answers(what)) for what in ("request queue", "reply queue", "input bucket"))
    cache = ResultCache(tmp_path / "cache.json", 1000, flush_interval=None)
    runtime = assemble(InMemoryStore("in"), BlockingQueue("requests"), BlockingQueue("replies"), cache, 5.0,
                       wait_seconds=1, checks=checks)
    try:
        client = create_app(load(None, {}, {}), runtime).test_client()
        ready = client.get("/readyz")
        assert (ready.status_code, ready.get_data(as_text=True)) == (200, "ready\n")
        server.update(up=False, asked=[])
        ready, live = client.get("/readyz"), client.get("/healthz")
        assert ready.status_code == 503 and ready.get_data(as_text=True).startswith("request queue: the local AWS")
        assert server["asked"] == ["request queue"], "one failing check ends the round"
        assert (live.status_code, live.get_data(as_text=True)) == (200, "ok\n"), "liveness ignores the cloud"
    finally:
        runtime.close()
