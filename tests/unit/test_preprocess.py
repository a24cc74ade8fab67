"""decode_image: the model's input from good images, one clear BadImageError from bad ones; check_decodable refuses
the same bad ones with the same error, and accepts the good ones."""
from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from hybrid.core.decoding import BadImageError, check_decodable, decode_image
from hybrid.core.errors import HybridError

MAGENTA = (255, 0, 127)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise_jpeg(width: int = 640, height: int = 480) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "JPEG", quality=90)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` x `height` 8-bit grey pixels: a decompression bomb's calling card."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + png_chunk(b"IEND", b""))


def truncated(data: bytes, fraction: float) -> bytes:
    return data[:int(len(data) * fraction)]


def corrupt_png() -> bytes:
    data = bytearray(encode(Image.new("RGB", (300, 200), MAGENTA), "PNG"))
    data[60:80] = b"\x00" * 20  # inside the compressed pixel data
    return bytes(data)


# ------------------------------------------------------------------ good images

@pytest.mark.parametrize("fmt, mode", [("JPEG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("GIF", "P"), ("WEBP", "RGB"),
                                       ("BMP", "RGB"), ("JPEG", "CMYK")])
def test_any_supported_format_and_mode_gives_rgb_float32_normalised(fmt, mode):
    pixels = decode_image(encode(Image.new("RGB", (300, 200), MAGENTA).convert(mode), fmt))
    assert pixels.shape == (3, 224, 224) and pixels.dtype == np.float32 and pixels.flags.c_contiguous
    # (x - 127) / 128 per channel, in R, G, B order; JPEG may move a value by a few levels
    np.testing.assert_allclose(pixels.mean(axis=(1, 2)), [(255 - 127) / 128, -127 / 128, 0], atol=4 / 128)


def test_black_and_white_map_to_the_ends_of_the_range():
    image = Image.new("L", (256, 256), 0)
    image.paste(255, (128, 0, 256, 256))
    pixels = decode_image(encode(image, "PNG"))
    assert pixels.min() == -127 / 128 and pixels.max() == 1.0


def test_greyscale_fills_all_three_channels():
    pixels = decode_image(encode(Image.new("L", (256, 256), 191), "PNG"))
    np.testing.assert_array_equal(pixels, np.full((3, 224, 224), (191 - 127) / 128, dtype=np.float32))


@pytest.mark.parametrize("size", [(1000, 256), (256, 1000)])
def test_keeps_the_centre_square_of_the_shorter_side(size):
    """A 224-pixel green band centred along the longer side, red outside it: the crop must be all green."""
    width, height = size
    image = Image.new("RGB", size, (255, 0, 0))
    band = (388, 0, 612, height) if width > height else (0, 388, width, 612)
    image.paste((0, 255, 0), band)
    pixels = decode_image(encode(image, "PNG"))
    np.testing.assert_allclose(pixels[:, [0, 111, 223], :][:, :, [0, 111, 223]].reshape(3, -1).T,
                               [[-127 / 128, 1.0, -127 / 128]] * 9, atol=1e-6)


def test_small_images_are_scaled_up():
    pixels = decode_image(encode(Image.new("RGB", (40, 30), MAGENTA), "PNG"))
    assert pixels.shape == (3, 224, 224)


def test_exif_orientation_is_applied():
    """Stored 256 wide x 512 high, red above blue; orientation 6 shows it turned 90 degrees clockwise."""
    image = Image.new("RGB", (256, 512), (255, 0, 0))
    image.paste((0, 0, 255), (0, 256, 256, 512))
    exif = Image.Exif()
    exif[0x0112] = 6
    pixels = decode_image(encode(image, "JPEG", quality=95, exif=exif))
    left, right = pixels[:, 112, 10], pixels[:, 112, 213]
    assert left[2] > 0.9 > left[0]  # blue on the left
    assert right[0] > 0.9 > right[2]  # red on the right


# ------------------------------------------------------------------ bad images

def test_bad_image_error_is_a_project_error():
    assert issubclass(BadImageError, HybridError)


def test_empty_bytes():
    with pytest.raises(BadImageError, match="empty"):
        decode_image(b"")


@pytest.mark.parametrize("data", [b"hello, this is text", b"\xff\xd8\xff" + b"\0" * 10, b"GIF89a"])
def test_not_an_image(data):
    with pytest.raises(BadImageError, match="not an image"):
        decode_image(data)


def test_formats_outside_the_allowed_list_are_refused():
    with pytest.raises(BadImageError, match="not an image in a supported format"):
        decode_image(encode(Image.new("RGB", (300, 200)), "TIFF"))


@pytest.mark.parametrize("fraction", [0.5, 0.98])
def test_truncated_jpeg_is_refused_not_grey_filled(fraction):
    with pytest.raises(BadImageError, match="truncated"):
        decode_image(truncated(noise_jpeg(), fraction))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_png_is_refused():
    with pytest.raises(BadImageError, match="truncated"):
        decode_image(truncated(encode(Image.new("RGB", (300, 200), MAGENTA), "PNG"), 0.5))


@pytest.mark.parametrize("side", [7000,  # over this module's 40-megapixel limit
                                  10000,  # over PIL's warning limit: the warning counts as an error
                                  20000])  # over PIL's error limit
def test_decompression_bomb_is_refused_before_decoding(side):
    with pytest.raises(BadImageError, match="decompression bomb"):
        decode_image(png_claiming(side, side))


def test_a_real_highly_compressible_bomb_is_refused():
    data = encode(Image.new("L", (8000, 8000)), "PNG")
    assert len(data) < 200_000
    with pytest.raises(BadImageError, match="decompression bomb"):
        decode_image(data)


@pytest.mark.parametrize("vet", [decode_image, check_decodable])
def test_pil_bomb_warning_becomes_the_error_and_filters_are_restored(vet):
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(BadImageError, match="could be decompression bomb"):
            vet(png_claiming(10000, 10000))
    assert caught == []
    assert warnings.filters == before


@pytest.mark.parametrize("size", [(13000, 10), (10, 13000)])
def test_huge_side_is_refused(size):
    with pytest.raises(BadImageError, match="too large"):
        decode_image(encode(Image.new("L", size), "PNG"))


def test_corrupt_data_after_a_valid_header():
    with pytest.raises(BadImageError):
        decode_image(corrupt_png())


# ------------------------------------------------------------------ check_decodable: the same verdict, less work

BAD_INPUTS = {  # the bad inputs of the tests above, built when used, and what decode_image's error says
    "empty": (lambda: b"", "empty"),
    "text": (lambda: b"hello, this is text", "not an image"),
    "jpeg magic only": (lambda: b"\xff\xd8\xff" + b"\0" * 10, "not an image"),
    "gif header only": (lambda: b"GIF89a", "not an image"),
    "tiff": (lambda: encode(Image.new("RGB", (300, 200)), "TIFF"), "not an image in a supported format"),
    "half a jpeg": (lambda: truncated(noise_jpeg(), 0.5), "truncated"),
    "most of a jpeg": (lambda: truncated(noise_jpeg(), 0.98), "truncated"),
    "half a png": (lambda: truncated(encode(Image.new("RGB", (300, 200), MAGENTA), "PNG"), 0.5), "truncated"),
    "over our pixel limit": (lambda: png_claiming(7000, 7000), "decompression bomb"),
    "over PIL's warning limit": (lambda: png_claiming(10000, 10000), "could be decompression bomb"),
    "over PIL's error limit": (lambda: png_claiming(20000, 20000), "decompression bomb"),
    "real bomb": (lambda: encode(Image.new("L", (8000, 8000)), "PNG"), "decompression bomb"),
    "too wide": (lambda: encode(Image.new("L", (13000, 10)), "PNG"), "too large"),
    "too tall": (lambda: encode(Image.new("L", (10, 13000)), "PNG"), "too large"),
    "corrupt pixel data": (corrupt_png, "corrupt image"),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_check_decodable_refuses_what_decode_image_refuses_with_the_same_error(name):
    make, says = BAD_INPUTS[name]
    data = make()
    with pytest.raises(BadImageError, match=says) as decoded:
        decode_image(data)
    with pytest.raises(BadImageError) as checked:
        check_decodable(data)
    assert str(checked.value) == str(decoded.value)


@pytest.mark.parametrize("fmt, mode, size", [
    ("JPEG", "RGB", (300, 200)), ("PNG", "RGBA", (300, 200)), ("PNG", "P", (300, 200)), ("GIF", "P", (300, 200)),
    ("WEBP", "RGB", (300, 200)), ("BMP", "RGB", (300, 200)), ("JPEG", "CMYK", (300, 200)), ("PNG", "L", (40, 30)),
    ("JPEG", "RGB", (6000, 4000)),  # just under both limits
])
def test_check_decodable_accepts_what_decode_image_accepts(fmt, mode, size):
    data = encode(Image.new("RGB", size, MAGENTA).convert(mode), fmt)
    assert decode_image(data).shape == (3, 224, 224)
    assert check_decodable(data) is None


def test_check_decodable_accepts_a_photo_with_an_exif_orientation():
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.new("RGB", (256, 512), MAGENTA), "JPEG", quality=95, exif=exif)
    assert check_decodable(data) is None


def test_pil_truncation_errors_are_called_truncated_whatever_their_case():
    from hybrid.core.decoding import _describe_decode_failure

    assert _describe_decode_failure(OSError("Truncated File Read")).startswith("truncated image: ")
    assert _describe_decode_failure(OSError("image file is truncated")).startswith("truncated image: ")


def test_warm_decoder_imports_the_format_plugins_a_first_upload_would_otherwise_import():
    import subprocess
    import sys

    probe = ("import sys; from hybrid.core.decoding import warm_decoder; "
             "before = 'PIL.JpegImagePlugin' in sys.modules; warm_decoder(); "
             "print(before, all(f'PIL.{n}ImagePlugin' in sys.modules for n in ('Jpeg', 'Png', 'Gif', 'Bmp')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]


# ------------------------------------------------------------------ 16-bit greyscale

def photo_grey() -> np.ndarray:
    from skimage import data
    return data.camera()  # 512 x 512, 8-bit grey


def sixteen_bit_png(grey: np.ndarray, byteorder: str = ">") -> bytes:
    """The 8-bit grey pixels as 16-bit (v * 257: the top byte is v again), saved as a 16-bit greyscale PNG."""
    wide = grey.astype(np.uint16) * 257
    image = Image.frombytes("I;16B" if byteorder == ">" else "I;16", (grey.shape[1], grey.shape[0]),
                            wide.astype(f"{byteorder}u2").tobytes())
    data = encode(image, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    return data


@pytest.mark.parametrize("byteorder", [">", "<"])
def test_a_16_bit_greyscale_png_decodes_as_its_8_bit_conversion(byteorder):
    grey = photo_grey()
    eight = decode_image(encode(Image.fromarray(grey), "PNG"))
    sixteen = decode_image(sixteen_bit_png(grey, byteorder))
    np.testing.assert_array_equal(sixteen, eight)
    assert (sixteen == 1.0).mean() < 0.01, "not the all-white of a clipping conversion"


def test_16_bit_values_are_scaled_to_8_bits_not_clipped():
    wide = np.full((300, 300), 0x8000, dtype=np.uint16)  # mid grey in 16 bits; clipping would call it white (255)
    data = encode(Image.frombytes("I;16", (300, 300), wide.tobytes()), "PNG")
    np.testing.assert_array_equal(decode_image(data), np.full((3, 224, 224), (128 - 127) / 128, dtype=np.float32))
    assert check_decodable(data) is None


def test_a_large_16_bit_png_is_reduced_and_still_matches_its_8_bit_conversion():
    grey = np.asarray(Image.fromarray(photo_grey()).resize((2100, 1500)))
    eight = decode_image(encode(Image.fromarray(grey), "PNG"))
    np.testing.assert_array_equal(decode_image(sixteen_bit_png(grey)), eight)


# ------------------------------------------------------------------ large images: shrunk early, within the budget

def test_a_large_png_is_reduced_before_the_resize_and_keeps_its_picture():
    """Red left half, blue right half, 4000 x 3000: reduce (box, by 5) then resize gives the same picture."""
    image = Image.new("RGB", (4000, 3000), (255, 0, 0))
    image.paste((0, 0, 255), (2000, 0, 4000, 3000))
    pixels = decode_image(encode(image, "PNG", compress_level=1))
    assert pixels[0, 112, 5] == 1.0 and pixels[2, 112, 5] == -127 / 128
    assert pixels[2, 112, 218] == 1.0 and pixels[0, 112, 218] == -127 / 128


def test_a_reduced_image_keeps_its_exif_orientation():
    image = Image.new("RGB", (1100, 2200), (255, 0, 0))
    image.paste((0, 0, 255), (0, 1100, 1100, 2200))
    exif = Image.Exif()
    exif[0x0112] = 6
    pixels = decode_image(encode(image, "PNG", exif=exif))
    assert pixels[2, 112, 10] > 0.9 > pixels[0, 112, 10]  # blue on the left
    assert pixels[0, 112, 213] > 0.9 > pixels[2, 112, 213]  # red on the right


@pytest.mark.parametrize("mode, options", [("P", {}), ("P", {"transparency": 0}), ("1", {}), ("LA", {}),
                                           ("RGBA", {}), ("I;16", {})])
def test_every_mode_of_a_large_image_is_reduced_and_decoded(mode, options):
    source = Image.new("RGB", (1200, 1100), MAGENTA).convert(mode) if mode != "I;16" \
        else Image.new("I;16", (1200, 1100), 0xFFFF)
    pixels = decode_image(encode(source, "PNG", **options))
    assert pixels.shape == (3, 224, 224) and pixels.dtype == np.float32


def test_a_full_decode_holds_its_bytes_of_the_budget_and_gives_them_back(monkeypatch):
    import hybrid.core.decoding as decoding

    held = []
    real = decoding._BUDGET.hold
    monkeypatch.setattr(decoding._BUDGET, "hold", lambda size, **work: held.append(size) or real(size, **work))
    decode_image(encode(Image.new("RGB", (1000, 800), MAGENTA), "PNG"))
    check_decodable(encode(Image.new("RGB", (1000, 800), MAGENTA), "GIF"))
    check_decodable(encode(Image.new("RGB", (1000, 800), MAGENTA), "PNG"))  # checked, never decoded: holds nothing
    assert held == [decoding.HELD_PER_PIXEL * 1000 * 800] * 2 + [0] and decoding._BUDGET.used == 0


def test_a_jpeg_decodes_at_reduced_scale_and_holds_only_that(monkeypatch):
    import hybrid.core.decoding as decoding

    held = []
    real = decoding._BUDGET.hold
    monkeypatch.setattr(decoding._BUDGET, "hold", lambda size, **work: held.append(size) or real(size, **work))
    decode_image(noise_jpeg(4000, 3000))
    assert held == [decoding.HELD_PER_PIXEL * 500 * 375]  # 1/8 scale


def test_a_progressive_jpeg_holds_its_full_size_coefficients(monkeypatch):
    import hybrid.core.decoding as decoding

    held = []
    real = decoding._BUDGET.hold
    monkeypatch.setattr(decoding._BUDGET, "hold", lambda size, **work: held.append(size) or real(size, **work))
    data = encode(Image.new("RGB", (4000, 3000), MAGENTA), "JPEG", progressive=True)
    assert check_decodable(data) is None
    assert held == [decoding.COEFFICIENT_BYTES_PER_PIXEL * 4000 * 3000]


def test_a_sequential_jpeg_whose_first_scan_has_fewer_components_counts_as_several_scans():
    from hybrid.core.decoding import _several_scans

    data = bytearray(encode(Image.new("RGB", (64, 48), MAGENTA), "JPEG"))
    assert not _several_scans(Image.open(io.BytesIO(bytes(data))))
    start_of_scan = data.index(b"\xff\xda")
    assert data[start_of_scan + 4] == 3
    data[start_of_scan + 4] = 1  # only the header is read: the scan need not be decodable
    assert _several_scans(Image.open(io.BytesIO(bytes(data))))


@pytest.mark.parametrize("fmt, size, ok", [("PNG", (4096, 4096), True), ("PNG", (4097, 4096), False),
                                           ("GIF", (4200, 4100), False), ("JPEG", (6000, 6000), True)])
def test_formats_decoded_whole_have_the_lower_pixel_cap(fmt, size, ok):
    data = encode(Image.new("L", size), fmt)
    if ok:
        assert check_decodable(data) is None
    else:
        with pytest.raises(BadImageError, match=f"decompression bomb: .* over the 16,777,216-pixel limit for {fmt}"):
            check_decodable(data)


def test_the_worker_inflates_a_good_png_once_and_explains_a_bad_one_as_the_web_tier_does(monkeypatch):
    import hybrid.core.decoding as decoding

    checked = []
    real = decoding.check_png_data
    monkeypatch.setattr(decoding, "check_png_data", lambda data: checked.append(len(data)) or real(data))
    decode_image(encode(Image.new("RGB", (300, 200), MAGENTA), "PNG"))
    assert checked == []
    with pytest.raises(BadImageError, match="truncated image: the PNG ends inside"):
        decode_image(truncated(encode(Image.new("RGB", (300, 200), MAGENTA), "PNG"), 0.5))
    assert len(checked) == 1


@pytest.mark.parametrize("mode, fmt, per_pixel", [("RGB", "PNG", "HELD_PER_PIXEL"), ("P", "PNG", "HELD_PER_PIXEL"),
                                                  ("RGBA", "PNG", "HELD_PER_PIXEL_ALPHA_OR_16_BIT"),
                                                  ("I;16", "PNG", "HELD_PER_PIXEL_ALPHA_OR_16_BIT"),
                                                  ("RGB", "WEBP", "HELD_PER_PIXEL_WEBP")])
def test_a_decode_holds_what_its_format_and_mode_measured_at_peak(monkeypatch, mode, fmt, per_pixel):
    import hybrid.core.decoding as decoding

    held = []
    real = decoding._BUDGET.hold
    monkeypatch.setattr(decoding._BUDGET, "hold", lambda size, **work: held.append(size) or real(size, **work))
    source = Image.new("I;16", (600, 500)) if mode == "I;16" else Image.new("RGB", (600, 500), MAGENTA).convert(mode)
    decode_image(encode(source, fmt))
    assert held == [getattr(decoding, per_pixel) * 600 * 500]


def test_the_alpha_of_a_large_image_is_dropped_as_before_not_premultiplied():
    """Transparent red on the left: dropping the alpha keeps it red (a premultiplied reduce would make it black)."""
    image = Image.new("RGBA", (1200, 1100), (255, 0, 0, 0))
    image.paste((0, 0, 255, 255), (600, 0, 1200, 1100))
    pixels = decode_image(encode(image, "PNG"))
    assert pixels[0, 112, 5] == 1.0 and pixels[2, 112, 218] == 1.0
