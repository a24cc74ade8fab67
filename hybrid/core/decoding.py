"""Image bytes in, the model's input out: one float32 array (3, 224, 224), or a :class:`BadImageError` saying why not.

The steps: open with PIL (only the formats in ``ALLOWED_FORMATS``), check the declared size against the limits below
before decoding a pixel, let JPEG decode at reduced scale (``draft``), force a full load (a truncated file is an
error, never a grey-filled guess), apply the EXIF orientation, convert to RGB, resize the shorter side to 256
(bilinear) and take the centre 224 x 224 square, then scale 0..255 to (x - 127) / 128. ``check_decodable`` runs the
same steps up to the decoded pixels and refuses the same bytes with the same messages, for a cheaper check.

PIL's global settings are left alone: ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay False (its default) and
``Image.MAX_IMAGE_PIXELS`` keeps PIL's default, because the tighter limit here is checked on its own. While one image
opens, PIL's ``DecompressionBombWarning`` is turned into an error; before Python 3.14 ``warnings.catch_warnings``
changes the process-wide filter for that moment.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

from hybrid.core.errors import HybridError

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
MAX_PIXELS = 40_000_000
MAX_SIDE = 12_000
RESIZE_SHORTER_SIDE = 256
CROP_SIZE = 224


class BadImageError(HybridError):
    """The bytes are not an image this service can classify; the message says why."""


def decode_image(data: bytes) -> np.ndarray:
    """Decode image bytes into the model's input: float32, shape (3, 224, 224), values in [-127/128, 1]."""
    return _normalise(_centre_crop(_decode_checked(data)))


def check_decodable(data: bytes) -> None:
    """Refuses exactly what ``decode_image`` refuses, with the same ``BadImageError``, but stops once every pixel is
    decoded (no resize, crop or normalise): for vetting an upload before it is queued."""
    _decode_checked(data)


def warm_decoder() -> None:
    """Decodes a tiny JPEG once. PIL imports its format plugins on the first ``Image.open`` of a process (about 15 ms
    here); a server calls this at start so its first request, or a forked worker's first image, does not pay it."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "JPEG")
    decode_image(buffer.getvalue())


def _decode_checked(data: bytes) -> Image.Image:
    """The upright RGB image, every pixel decoded, or a ``BadImageError`` saying why not."""
    if not data:
        raise BadImageError("empty image: no bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return _load_checked(data)
        except BadImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise BadImageError(f"decompression bomb: {exc}") from None
        except Exception as exc:  # PIL raises many types on malformed input; each means "cannot decode"
            raise BadImageError(_describe_decode_failure(exc)) from None


def _load_checked(data: bytes) -> Image.Image:
    """Open, check the declared size, decode every pixel, upright and RGB."""
    image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    _check_size(*image.size)
    image.draft("RGB", (RESIZE_SHORTER_SIDE, RESIZE_SHORTER_SIDE))
    image.load()
    return ImageOps.exif_transpose(image).convert("RGB")


def _check_size(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise BadImageError(f"decompression bomb: {width}x{height} is over the {MAX_PIXELS:,}-pixel limit")
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
