"""The upload endpoint fuzzed (hypothesis): random multipart bodies, headers, field names, file names and bytes
(random, and real PNG, JPEG, GIF and WEBP files mutated or cut short). Whatever arrives, the answer is never a 5xx,
and a refused request (4xx) never put an object in the bucket nor a message on the request queue.

The app is the real Flask app over the real request path (``create_app`` with ``assemble``d fakes of the bucket and
queues); the stand-in worker decodes with the worker's own ``decode_image``, so an upload the web tier accepted but
the worker refuses shows up here as a refusal after queueing.

Beside the fuzzing, the catalogue of hostile inputs the earlier testers sent (bombs, truncated and corrupt files,
oversized bodies, hostile names, SVG with a script, ...), each a named case: a clean 4xx, nothing queued."""
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


# ------------------------------------------------------------------ the catalogue of hostile inputs, each by name

def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with(width: int = 64, height: int = 48, raw: bytes | None = None, stream: bytes | None = None,
             tail: bytes | None = None, depth: int = 8, colour: int = 0, interlace: int = 0) -> bytes:
    """A hand-built PNG: zero rows unless ``raw`` (filtered rows) or ``stream`` (the zlib bytes) is given."""
    if stream is None:
        stream = zlib.compress(raw if raw is not None else bytes((1 + width * depth // 8) * height))
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", stream) + (chunk(b"IEND", b"") if tail is None else tail)


def corrupt_stream() -> bytes:
    stream = bytearray(zlib.compress(bytes(range(256)) * 13))
    stream[8:16] = b"\xff" * 8
    return bytes(stream)


def bad_filter() -> bytes:
    raw = bytearray(65 * 48)
    raw[65 * 20] = 9
    return png_with(raw=bytes(raw))


def gif_claiming(width: int, height: int) -> bytes:
    screen = struct.pack("<HHBBB", width, height, 0, 0, 0)
    frame = b",\0\0\0\0" + struct.pack("<HH", width, height) + b"\0\2\2L\1\0;"
    return b"GIF89a" + screen + frame


def bmp_claiming(width: int, height: int) -> bytes:
    header = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(header) + 16, 0, 0, 54) + header + bytes(16)


def cut(data: bytes, fraction: float) -> bytes:
    return data[:int(len(data) * fraction)]


SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.cookie)</script></svg>'
PHOTO = encoded("JPEG", size=(200, 150), quality=90)
HOSTILE = {  # name -> (file name, bytes); each one is refused with a 4xx
    "empty file": ("a.jpg", b""),
    "plain text": ("notes.jpg", b"just some text, not pixels"),
    "html": ("page.png", b"<html><body><img src=x onerror=alert(1)></body></html>"),
    "svg with a script": ("logo.svg", SVG),
    "svg named png": ("logo.png", SVG),
    "pdf": ("doc.jpg", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF"),
    "zip": ("a.png", b"PK\x03\x04" + bytes(60)),
    "gzip": ("a.png", zlib.compress(b"x" * 1000)),
    "elf binary": ("a.jpg", b"\x7fELF\x02\x01\x01" + bytes(120)),
    "jpeg magic only": ("a.jpg", b"\xff\xd8\xff" + bytes(10)),
    "gif header only": ("a.gif", b"GIF89a"),
    "png signature only": ("a.png", b"\x89PNG\r\n\x1a\n"),
    "tiff": ("a.tif", encoded("TIFF")),
    "ppm": ("a.ppm", encoded("PPM")),
    "ico": ("a.ico", encoded("ICO", size=(32, 32))),
    "half a jpeg": ("a.jpg", cut(PHOTO, 0.5)),
    "most of a jpeg": ("a.jpg", cut(PHOTO, 0.97)),
    "half a progressive jpeg": ("a.jpg", cut(encoded("JPEG", size=(200, 150), progressive=True), 0.5)),
    "half a png": ("a.png", cut(encoded("PNG", size=(200, 150)), 0.5)),
    "png without its iend": ("a.png", png_with(tail=b"")),
    "png cut inside iend": ("a.png", png_with()[:-6]),
    "png with a bad crc": ("a.png", png_with()[:-16] + b"\0" + png_with()[-15:]),
    "png with a corrupt stream and good crcs": ("a.png", png_with(stream=corrupt_stream())),
    "png with too few rows": ("a.png", png_with(raw=bytes(65 * 47))),
    "png with an unknown row filter": ("a.png", bad_filter()),
    "interlaced png with too few bytes": ("a.png", png_with(raw=bytes(100), interlace=1)),
    "half a 16-bit png": ("a.png", cut(encoded("PNG", "I;16", size=(300, 200)), 0.5)),
    "png claiming 9000 x 9000": ("bomb.png", png_claiming(9000, 9000)),
    "png claiming 20000 x 20000": ("bomb.png", png_claiming(20000, 20000)),
    "png claiming a 100000 side": ("bomb.png", png_claiming(100000, 1)),
    "png claiming 0 x 0": ("a.png", png_claiming(0, 0)),
    "real bomb just over the cap": ("bomb.png", encoded("PNG", "L", size=(4097, 4097))),
    "gif claiming 65535 x 65535": ("bomb.gif", gif_claiming(65535, 65535)),
    "bmp claiming 50000 x 50000": ("bomb.bmp", bmp_claiming(50000, 50000)),
    "half a gif": ("a.gif", cut(encoded("GIF", "P", size=(200, 150)), 0.5)),
    "half a webp": ("a.webp", cut(encoded("WEBP", size=(200, 150)), 0.5)),
    "over the byte limit": ("big.jpg", PHOTO + bytes(MAX_UPLOAD)),
    "hostile path, no image": ("../../etc/passwd", b"root:x:0:0"),
    "control characters, no image": ("a\x00b\nc\r.jpg", b"nothing"),
    "a very long name, no image": ("x" * 10_000 + ".jpg", b"nothing"),
}
REQUESTS = {  # name -> keyword arguments of a POST that is no single-file upload
    "no file": {"data": {"note": "hello"}},
    "two files": {"data": {"inputFile": (io.BytesIO(PHOTO), "a.jpg"), "myfile": (io.BytesIO(PHOTO), "b.jpg")}},
    "raw image body": {"data": PHOTO, "content_type": "image/jpeg"},
    "multipart without a boundary": {"data": b"--x\r\n\r\n" + PHOTO, "content_type": "multipart/form-data"},
    "multipart cut short": {"data": b"--xyz\r\nContent-Disposition: form-data; name=\"inputFile\"; filename=\"a.jpg\""
                                    b"\r\n\r\n" + PHOTO[:500], "content_type": "multipart/form-data; boundary=xyz"},
}


@pytest.mark.parametrize("case", [*HOSTILE, *REQUESTS])
def test_every_hostile_input_gets_a_clean_4xx_and_queues_nothing(service, case):
    client, inputs, requests_queue = service
    if case in HOSTILE:
        name, data = HOSTILE[case]
        post = {"data": {"inputFile": (io.BytesIO(data), name)}, "content_type": "multipart/form-data"}
    else:
        post = REQUESTS[case]
    objects, sent = len(inputs.objects), len(requests_queue.sent)
    response = client.post("/", **post)
    text = response.get_data(as_text=True)
    assert 400 <= response.status_code < 500 and text.startswith("error: "), (response.status_code, text)
    assert (len(inputs.objects), len(requests_queue.sent)) == (objects, sent)


def test_the_catalogue_holds_forty_hostile_inputs_and_a_good_photo_still_passes(service):
    client, _, _ = service
    assert len(HOSTILE) + len(REQUESTS) >= 40
    response = client.post("/", data={"inputFile": (io.BytesIO(PHOTO), "ok.jpg")}, content_type="multipart/form-data")
    assert response.status_code == 200
