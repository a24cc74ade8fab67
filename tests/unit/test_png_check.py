"""check_png_data: a PNG's data checked whole (chunk CRCs, the inflated rows and their filter bytes) without keeping
its pixels; cross-checked against PIL's own decoder on hand-built files of every colour type, depth and interlacing."""
from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import pytest
from PIL import Image

from hybrid.core.png_check import PIECE, PngDamaged, _row_lengths, check_png_data

CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(width: int, height: int, depth: int = 8, colour: int = 0, interlaced: bool = False, raw: bytes | None = None,
        idat: bytes | None = None, tail: bytes = chunk(b"IEND", b"")) -> bytes:
    """A PNG built by hand: its raw (filtered) data all zero rows with filter 0 unless given."""
    if raw is None:
        raw = bytes(sum(_row_lengths(width, height, depth * CHANNELS[colour], interlaced)))
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, int(interlaced))
    palette = chunk(b"PLTE", bytes(range(48))) if colour == 3 else b""
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + palette
            + chunk(b"IDAT", zlib.compress(raw) if idat is None else idat) + tail)


def pil_loads(data: bytes) -> bool:
    try:
        Image.open(io.BytesIO(data)).load()
    except (OSError, SyntaxError, ValueError):
        return False
    return True


CASES = [(colour, depth, interlaced, size) for colour, depths in DEPTHS.items() for depth in depths
         for interlaced in (False, True) for size in ((1, 1), (3, 5), (9, 17), (33, 7))]


@pytest.mark.parametrize("colour, depth, interlaced, size", CASES)
def test_the_row_layout_is_the_one_pil_decodes(colour, depth, interlaced, size):
    rows = list(_row_lengths(*size, depth * CHANNELS[colour], interlaced))
    whole = png(*size, depth, colour, interlaced)
    check_png_data(whole)
    assert pil_loads(whole)
    short = png(*size, depth, colour, interlaced, raw=bytes(sum(rows) - 1))
    with pytest.raises(PngDamaged, match="ends early") as error:
        check_png_data(short)
    assert error.value.truncated and not pil_loads(short), "PIL, too, wants every byte counted here"


def test_pil_written_pngs_pass():
    for mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"):
        buffer = io.BytesIO()
        Image.new(mode, (301, 203)).save(buffer, "PNG")
        check_png_data(buffer.getvalue())


def test_a_bad_crc_anywhere_up_to_iend_is_corrupt():
    text_after_the_pixels = chunk(b"tEXt", b"note\0hello")[:-1] + b"\0" + chunk(b"IEND", b"")
    with pytest.raises(PngDamaged, match="bad CRC in b'tEXt'") as error:
        check_png_data(png(8, 8, tail=text_after_the_pixels))
    assert not error.value.truncated


def test_an_unknown_row_filter_is_corrupt():
    raw = bytearray(9 * 8)
    raw[9 * 5] = 7
    with pytest.raises(PngDamaged, match="unknown row filter 7"):
        check_png_data(png(8, 8, raw=bytes(raw)))


def test_a_corrupt_zlib_stream_with_good_crcs_is_corrupt():
    stream = bytearray(zlib.compress(bytes(range(256)) * 40))
    stream[10:20] = b"\xff" * 10
    with pytest.raises(PngDamaged, match="corrupt PNG image data"):
        check_png_data(png(100, 100, idat=bytes(stream)))


@pytest.mark.parametrize("cut", ["in a chunk", "before IEND"])
def test_a_file_that_ends_early_is_truncated(cut):
    data = png(64, 64)
    data = data[:-20] if cut == "in a chunk" else data[:-12]
    with pytest.raises(PngDamaged) as error:
        check_png_data(data)
    assert error.value.truncated


def test_data_after_the_declared_rows_is_ignored_as_pil_ignores_it():
    data = png(8, 8, raw=bytes(9 * 8 + 500))
    check_png_data(data)
    assert pil_loads(data)


def test_the_pixel_data_spread_over_many_idat_chunks_is_read_in_order():
    stream = zlib.compress(bytes(sum(_row_lengths(50, 40, 24, False))))
    pieces = b"".join(chunk(b"IDAT", stream[i:i + 7]) for i in range(0, len(stream), 7))
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 50, 40, 8, 2, 0, 0, 0))
    data = b"\x89PNG\r\n\x1a\n" + header + pieces + chunk(b"IEND", b"")
    check_png_data(data)
    assert pil_loads(data)


def test_a_4096_square_rgba_png_is_checked_in_a_few_pieces_of_memory():
    data = png(4096, 4096, 8, 6)  # 64 MB of pixels
    tracemalloc.start()
    try:
        check_png_data(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * PIECE + 1_000_000, f"{peak:,} bytes: a few pieces, the row table and the file, not 64 MB"
