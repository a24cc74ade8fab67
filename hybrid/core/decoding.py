"""Image bytes in, the model's input out: one float32 array (3, 224, 224), or a :class:`BadImageError` saying why not.

The steps: open with PIL (only the formats in ``ALLOWED_FORMATS``), check the declared size against the limits below
before decoding a pixel, let JPEG decode at reduced scale (``draft``), force a full load under the process's decode
budget (a truncated file is an error, never a grey-filled guess), bring 16-bit greyscale to 8 bits (the top byte:
PIL's own conversion clips it, all white), shrink by a whole factor at once (``reduce``, to at least twice the size
the model needs) and let the full-size pixels go, apply the EXIF orientation, convert to RGB, resize the shorter side
to 256 (bilinear) and take the centre 224 x 224 square, then scale 0..255 to (x - 127) / 128.

``check_decodable`` is the web tier's vetting, with the same messages: a PNG is checked whole without decoding a pixel
(:mod:`hybrid.core.png_check`: every chunk's CRC, the image data inflated as a stream and dropped, the row filters),
every other format is decoded as ``decode_image`` decodes it (a JPEG at reduced scale, cheap). When PIL fails to
decode a PNG, ``decode_image`` runs that check to explain why, so both say the same; a good PNG is not inflated twice.
The check is a little stricter than PIL (it wants every CRC up to IEND); a PNG that passes it and still fails to
decode would be one whose whole data unfilters into pixels PIL will not take: none is known.

Memory. A decode holds its image's bytes of the process's :class:`~hybrid.core.decode_budget.DecodeBudget`
(``DECODE_BUDGET_BYTES``) while its full-size pixels exist, and waits when they are taken: however many threads
decode, a process holds at most about that much in pixels (measured: 6300 x 6300 greyscale was 224 MB a decode, 25 GB
for 128 threads, before). Importing this module makes glibc return freed pixels to the system at once
(:func:`~hybrid.core.decode_budget.map_large_allocations`), and the budget trims the heap when the last decode or
check in flight ends after ``TRIM_AFTER_BYTES`` of work. Formats decoded whole are capped at
``MAX_FULL_PIXELS``; a JPEG decodes at 1/8 scale when large, so it keeps the larger ``MAX_PIXELS`` (one in several
scans holds its full size in coefficients, and the budget counts that).

PIL's global settings are left alone: ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay False (its default) and
``Image.MAX_IMAGE_PIXELS`` keeps PIL's default, because the tighter limits here are checked on their own. While one
image opens, PIL's ``DecompressionBombWarning`` is turned into an error; before Python 3.14
``warnings.catch_warnings`` changes the process-wide filter for that moment.
"""
from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageOps

from hybrid.core.decode_budget import DecodeBudget, map_large_allocations
from hybrid.core.errors import HybridError
from hybrid.core.png_check import PngDamaged, check_png_data

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
MAX_PIXELS = 40_000_000  # a JPEG: over 2048 x 2048 it decodes at 1/8 scale (under 0.7 Mpx at this limit)
MAX_FULL_PIXELS = 4096 * 4096  # every other format decodes whole: a 4K or 5K screen, 16x what the model uses
MAX_SIDE = 12_000
RESIZE_SHORTER_SIDE = 256
CROP_SIZE = 224
REDUCING_GAP = 2  # ``reduce`` leaves the shorter side at least this many times RESIZE_SHORTER_SIDE
# Bytes a decode holds at its peak per full-size pixel (measured at 4096 x 4096, VmHWM): 4 for RGB and 1 for grey
# (PIL's own), 5 for a palette (1, and 4 for its RGB conversion), 8 for RGBA (4, and 4 for the RGB conversion that
# drops the alpha), 7 for 16-bit grey (2, and numpy's shift and 8-bit copies), 16 for WEBP (libwebp's canvas, the
# frame it hands over as bytes, PIL's image, its conversion).
HELD_PER_PIXEL = 5
HELD_PER_PIXEL_ALPHA_OR_16_BIT = 8
HELD_PER_PIXEL_WEBP = 16
COEFFICIENT_BYTES_PER_PIXEL = 6  # a JPEG in several scans: 3 samples (4:4:4) of 2 bytes each, at full size
DECODE_BUDGET_BYTES = 256 * 1024 * 1024  # per process: at the cap, two RGBA at once, or three RGB, or one WEBP
_SIXTEEN_BIT_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I")
TRIM_AFTER_BYTES = 256 * 1024 * 1024  # of decoding and checking done, before an idle moment trims the heap
_BUDGET = DecodeBudget(DECODE_BUDGET_BYTES, TRIM_AFTER_BYTES)
map_large_allocations()  # so that freed pixels leave the process: see hybrid.core.decode_budget


class BadImageError(HybridError):
    """The bytes are not an image this service can classify; the message says why."""


def decode_image(data: bytes) -> np.ndarray:
    """Decode image bytes into the model's input: float32, shape (3, 224, 224), values in [-127/128, 1]."""
    with _refusing_bad_images():
        image = _opened(data)
        try:
            decoded = _decoded(image)
        except Exception:
            if image.format == "PNG":
                check_png_data(data)  # the web tier's check: its message, when it finds the fault
            raise
    return _normalise(_centre_crop(decoded))


def check_decodable(data: bytes) -> None:
    """Refuses what ``decode_image`` refuses, with the same ``BadImageError``, without its resize, crop and normalise,
    and for a PNG without decoding a pixel (see the module's docstring): for vetting an upload before it is queued."""
    with _refusing_bad_images():
        image = _opened(data)
        if image.format != "PNG":
            _decoded(image)
            return
        with _BUDGET.hold(0, work=_pixel_bytes(image)):  # no pixels held, but the trim counts the pieces inflated
            check_png_data(data)


def warm_decoder() -> None:
    """Decodes a tiny JPEG once. PIL imports its format plugins on the first ``Image.open`` of a process (about 15 ms
    here); a server calls this at start so its first request, or a forked worker's first image, does not pay it."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "JPEG")
    decode_image(buffer.getvalue())


@contextmanager
def _refusing_bad_images() -> Iterator[None]:
    """Turns whatever PIL or the checks raise on a bad image into one ``BadImageError`` saying why."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except BadImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise BadImageError(f"decompression bomb: {exc}") from None
        except PngDamaged as exc:
            raise BadImageError(f"{'truncated' if exc.truncated else 'corrupt'} image: {exc}") from None
        except Exception as exc:  # PIL raises many types on malformed input; each means "cannot decode"
            raise BadImageError(_describe_decode_failure(exc)) from None


def _opened(data: bytes) -> Image.Image:
    """The image opened and its declared size checked; no pixel decoded yet."""
    if not data:
        raise BadImageError("empty image: no bytes")
    image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    _check_size(image.format, *image.size)
    return image


def _decoded(image: Image.Image) -> Image.Image:
    """The upright RGB image, shrunk by a whole factor when large. The full-size pixels exist only inside the
    budget's hold: they are freed (``close``) before it is given back, and what is returned is a copy."""
    held = _coefficient_bytes(image)
    image.draft("RGB", (RESIZE_SHORTER_SIDE, RESIZE_SHORTER_SIDE))
    with _BUDGET.hold(held or _pixel_bytes(image)):
        try:
            image.load()
            return ImageOps.exif_transpose(_reduced(_eight_bit(image))).convert("RGB")
        finally:
            image.close()


def _pixel_bytes(image: Image.Image) -> int:
    """The bytes decoding ``image`` (at its draft size) holds at its peak: see ``HELD_PER_PIXEL``."""
    if image.format == "WEBP":
        per_pixel = HELD_PER_PIXEL_WEBP
    elif image.mode in ("RGBA", "LA", "PA") or image.mode in _SIXTEEN_BIT_GREY:
        per_pixel = HELD_PER_PIXEL_ALPHA_OR_16_BIT
    else:
        per_pixel = HELD_PER_PIXEL
    return per_pixel * image.width * image.height


def _coefficient_bytes(image: Image.Image) -> int:
    """The bytes a JPEG decoded in several scans holds whatever its draft scale: libjpeg keeps every coefficient of
    the full-size image (2 bytes a sample; measured: 114 MB for a 6300 x 6300 progressive 4:2:0 JPEG of 350 KB).
    0 for every other image: it holds its decoded size."""
    if image.format != "JPEG" or not _several_scans(image):
        return 0
    return COEFFICIENT_BYTES_PER_PIXEL * image.width * image.height


def _several_scans(image: Image.Image) -> bool:
    """Whether a JPEG is progressive, or sequential with its first scan carrying fewer components than the image."""
    if image.info.get("progressive"):
        return True
    with image.fp.getbuffer() as data:  # the BytesIO that _opened made: its bytes, not a copy
        offset = 2
        while offset + 4 <= len(data) and data[offset] == 0xFF:
            marker, length = data[offset + 1], int.from_bytes(data[offset + 2:offset + 4])
            if marker == 0xDA:
                return offset + 4 < len(data) and data[offset + 4] < len(image.getbands())
            offset += 2 + length
    return False


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit greyscale as 8-bit greyscale, each value's top byte (PIL's ``convert("L")`` clips instead)."""
    if image.mode not in _SIXTEEN_BIT_GREY:
        return image
    pixels = np.asarray(image)
    if image.mode == "I":
        pixels = np.clip(pixels, 0, 0xFFFF)
    grey = Image.fromarray((pixels >> 8).astype(np.uint8), "L")
    grey.info = dict(image.info)
    return grey


def _reduced(image: Image.Image) -> Image.Image:
    """The image shrunk by the largest whole factor that keeps its shorter side at least ``REDUCING_GAP`` times
    ``RESIZE_SHORTER_SIDE`` (a box filter, one pass); itself when that factor is 1."""
    factor = min(image.size) // (REDUCING_GAP * RESIZE_SHORTER_SIDE)
    if factor < 2:
        return image
    if image.mode not in ("L", "RGB", "CMYK"):  # PIL's reduce takes no palette, and premultiplies an alpha
        image = image.convert("L" if image.mode == "LA" else "RGB")  # the alpha goes, as it does at the end
    return image.reduce(factor)


def _check_size(kind: str | None, width: int, height: int) -> None:
    limit = MAX_PIXELS if kind == "JPEG" else MAX_FULL_PIXELS
    if width * height > limit:
        raise BadImageError(f"decompression bomb: {width}x{height} is over the {limit:,}-pixel limit"
                            f"{'' if kind == 'JPEG' else f' for {kind}'}")
    if max(width, height) > MAX_SIDE:
        raise BadImageError(f"image too large: {width}x{height} has a side over {MAX_SIDE} pixels")
    if min(width, height) < 1:
        raise BadImageError(f"image has no pixels: {width}x{height}")


def _describe_decode_failure(exc: Exception) -> str:
    if isinstance(exc, Image.UnidentifiedImageError):
        return f"not an image in a supported format ({', '.join(ALLOWED_FORMATS)})"
    if "truncated" in str(exc).lower():
        return f"truncated image: {exc}"
    return f"corrupt image: {exc or type(exc).__name__}"


def _centre_crop(image: Image.Image) -> Image.Image:
    """Resize so the shorter side is 256, keep the centre 224 x 224; done as one resample of that region only."""
    width, height = image.size
    scale = RESIZE_SHORTER_SIDE / min(width, height)
    side = CROP_SIZE / scale
    left, top = (width - side) / 2, (height - side) / 2
    return image.resize((CROP_SIZE, CROP_SIZE), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))


def _normalise(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1)
    return np.ascontiguousarray((pixels - 127.0) / 128.0)
