"""The upload endpoint fuzzed (hypothesis): random multipart bodies, headers, field names, file names and bytes
(random, and real PNG, JPEG, GIF and WEBP files mutated or cut short). Whatever arrives, the answer is never a 5xx,
and a refused request (4xx) never put an object in the bucket nor a message on the request queue.

The app is the real Flask app over the real request path (``create_app`` with ``assemble``d fakes of the bucket and
queues); the stand-in worker decodes with the worker's own ``decode_image``, so an upload the web tier accepted but
the worker refuses shows up here as a refusal after queueing."""
from __future__ import annotations

import io
import struct
import threading
import zlib

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from hybrid.core.decoding import BadImageError, decode_image
from hybrid.core.messages import ClassifyReply, ClassifyRequest
from hybrid.core.settings import load
from tests.fakes import BlockingQueue, InMemoryStore
from web_tier.app import create_app
from web_tier.cache import ResultCache
from web_tier.runtime import assemble

MAX_UPLOAD = 64 * 1024


def encoded(fmt: str, mode: str = "RGB", size: tuple[int, int] = (48, 40), **options) -> bytes:
    buffer = io.BytesIO()
    Image.radial_gradient("L").resize(size).convert(mode).save(buffer, fmt, **options)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


SEEDS = [encoded("PNG"), encoded("PNG", "P"), encoded("PNG", "I;16"), encoded("JPEG"),
         encoded("JPEG", progressive=True), encoded("GIF", "P"), encoded("WEBP"), encoded("BMP"),
         encoded("TIFF"), png_claiming(9000, 9000), b"<svg onload=alert(1)><script>alert(1)</script></svg>"]


@st.composite
def mutated(draw) -> bytes:
    """A seed file with a few bytes changed, then perhaps cut short or grown."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data) + draw(st.binary(max_size=64))


NEAR_THE_LIMIT = st.builds(lambda seed, size: seed + bytes(max(0, size - len(seed))), st.sampled_from(SEEDS),
                           st.integers(MAX_UPLOAD - 2, MAX_UPLOAD + 2))  # a valid start padded to about the limit
FILE_BYTES = st.one_of(st.binary(max_size=2048), mutated(), mutated(), st.sampled_from(SEEDS), NEAR_THE_LIMIT)
FIELDS = st.one_of(st.sampled_from(["inputFile", "myfile"]), st.text(min_size=1, max_size=20))
NAMES = st.one_of(st.sampled_from(["cat.jpg", "../../etc/passwd", "a\x00b.png", "", "x" * 5000, ".."]), st.text())


@st.composite
def requests(draw) -> dict:
    """Keyword arguments of one test-client POST."""
    headers = {"Accept": draw(st.sampled_from(["*/*", "application/json", "text/html", "\x00\xff", ""]))}
    kind = draw(st.sampled_from(["files", "files", "files", "raw"]))
    if kind == "raw":
        content_type = draw(st.sampled_from(["multipart/form-data; boundary=xyz", "multipart/form-data",
                                             "application/octet-stream", "image/png", "text/plain", ""]))
        return {"data": draw(st.one_of(st.binary(max_size=4096), mutated())), "content_type": content_type,
                "headers": headers}
    files = draw(st.lists(st.tuples(FIELDS, NAMES, FILE_BYTES), min_size=0, max_size=3))
    form = {field: (io.BytesIO(data), name) for field, name, data in files}
    form.update(draw(st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=50), max_size=2)))
    return {"data": form, "content_type": "multipart/form-data", "headers": headers}


class StandInWorker(threading.Thread):
    """Answers each request as a worker would: the worker's decode, then a fixed label, or the decode's error."""

    def __init__(self, requests_queue, replies, inputs) -> None:
        super().__init__(daemon=True)
        self.requests_queue, self.replies, self.inputs = requests_queue, replies, inputs
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for message in self.requests_queue.receive(10, 0.2):
                request = ClassifyRequest.from_body(message.body)
                try:
                    decode_image(self.inputs.get(request.key))
                    reply = ClassifyReply(request.id, request.name, "thing", (("thing", 1.0),), "m@1", key=request.key)
                except BadImageError as error:
                    reply = ClassifyReply(request.id, request.name, model="m@1", error=str(error), key=request.key)
                self.replies.send([reply.to_body()])


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    inputs, requests_queue, replies = InMemoryStore("in"), BlockingQueue("requests"), BlockingQueue("replies")
    cache = ResultCache(tmp_path_factory.mktemp("cache") / "results.json", 1000, flush_interval=None)
    runtime = assemble(inputs, requests_queue, replies, cache, 10.0, wait_seconds=1)
    worker = StandInWorker(requests_queue, replies, inputs)
    worker.start()
    app = create_app(load(None, {}, {"web.max_upload_bytes": str(MAX_UPLOAD)}), runtime)
    yield app.test_client(), inputs, requests_queue
    worker.stop.set()
    runtime.close()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow, HealthCheck.data_too_large])
@given(post=requests())
def test_never_a_5xx_and_a_refusal_queues_nothing(service, post):
    client, inputs, requests_queue = service
    objects, sent = len(inputs.objects), len(requests_queue.sent)
    response = client.post("/", **post)
    event(f"answered {response.status_code}")  # shown by --hypothesis-show-statistics
    assert response.status_code < 500, response.get_data(as_text=True)
    if response.status_code >= 400:
        assert (len(inputs.objects), len(requests_queue.sent)) == (objects, sent), \
            f"refused with {response.status_code} after queueing: {response.get_data(as_text=True)}"
    else:
        assert response.status_code == 200
