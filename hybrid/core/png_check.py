"""Checks that a PNG's pixel data is whole without keeping any pixels: every chunk's CRC up to IEND, and the
compressed image data inflated as a stream, in bounded pieces that are counted and dropped, to exactly the bytes its
header declares, each row starting with a valid filter type.

What PIL's ``Image.verify()`` checks (the chunk CRCs, the IEND chunk) plus what only a decode would find (a zlib
stream that is corrupt or ends early, a bad row filter), at the cost of one inflate and O(one piece) of memory
instead of the whole decoded image. What is left for a decode to find: nothing about the layout of the data; only
how the filtered bytes unfilter, which cannot fail. The frames after the first of an animated PNG (``fdAT``) are
CRC-checked only: the model sees the first frame.
"""
from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Iterator

PIECE = 256 * 1024  # bytes of inflated data taken at a time; the memory this check needs, beside the file
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_MAX_FILTER = 4  # None, Sub, Up, Average, Paeth


class PngDamaged(Exception):
    """The PNG's data is not whole; ``truncated`` tells an early end from corrupt bytes."""

    def __init__(self, message: str, truncated: bool = False) -> None:
        super().__init__(message)
        self.truncated = truncated


def check_png_data(data: bytes) -> None:
    """Raises PngDamaged unless every chunk of ``data`` (a PNG whose header PIL has read) is whole up to IEND and
    its image data inflates to the rows its header declares."""
    width, height, depth, colour, interlaced = _header(data)
    rows = _row_lengths(width, height, depth * _CHANNELS[colour], interlaced)
    inflater = _RowChecker(rows)
    for kind, body in _chunks(data):
        if kind == b"IDAT" and not inflater.done:
            inflater.feed(body)
    inflater.finish()


def _header(data: bytes) -> tuple[int, int, int, int, bool]:
    if data[:8] != _SIGNATURE or data[12:16] != b"IHDR" or len(data) < 33:
        raise PngDamaged("not a PNG header")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if colour not in _CHANNELS or depth not in (1, 2, 4, 8, 16):
        raise PngDamaged(f"unknown PNG colour type {colour} or bit depth {depth}")
    return width, height, depth, colour, interlace == 1


def _row_lengths(width: int, height: int, bits_per_pixel: int, interlaced: bool) -> Iterator[int]:
    """The length of each filtered row in the inflated stream, filter byte included, in stream order."""
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    for x0, y0, dx, dy in passes:
        pass_width, pass_height = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if pass_width > 0 and pass_height > 0:
            row = 1 + -(-pass_width * bits_per_pixel // 8)
            for _ in range(pass_height):
                yield row


def _chunks(data: bytes) -> Iterator[tuple[bytes, memoryview]]:
    """Each chunk after IHDR, CRC-checked, up to and including IEND."""
    view, offset = memoryview(data), 33
    while True:
        if offset + 8 > len(data):
            raise PngDamaged("the PNG ends before its IEND chunk", truncated=True)
        length, kind = struct.unpack(">I4s", view[offset:offset + 8])
        end = offset + 12 + length
        if end > len(data):
            raise PngDamaged(f"the PNG ends inside a {kind!r} chunk", truncated=True)
        body = view[offset + 8:end - 4]
        if zlib.crc32(body, zlib.crc32(kind)) != struct.unpack(">I", view[end - 4:end])[0]:
            raise PngDamaged(f"broken PNG file (bad CRC in {kind!r})")
        yield kind, body
        if kind == b"IEND":
            return
        offset = end


class _RowChecker:
    """Inflates the image data piece by piece, checking the filter byte at the start of every row, until the
    declared bytes have all arrived (PIL, too, stops there: data after them is ignored)."""

    def __init__(self, rows: Iterator[int]) -> None:
        lengths = list(rows)
        self._total = sum(lengths)
        self._starts = itertools.accumulate([0] + lengths[:-1])
        self._next_row: int | None = next(self._starts, None)
        self._inflater = zlib.decompressobj()
        self._position = 0  # bytes inflated so far

    @property
    def done(self) -> bool:
        return self._position >= self._total

    def feed(self, compressed: memoryview) -> None:
        pending: bytes | memoryview = compressed
        while pending and not self.done and not self._inflater.eof:
            try:
                piece = self._inflater.decompress(pending, PIECE)
            except zlib.error as error:
                raise PngDamaged(f"corrupt PNG image data ({error})") from None
            pending = self._inflater.unconsumed_tail
            self._check_rows(piece)

    def finish(self) -> None:
        if not self.done:
            raise PngDamaged(f"the PNG's image data ends early: {self._position:,} of {self._total:,} bytes",
                             truncated=True)

    def _check_rows(self, piece: bytes) -> None:
        start, end = self._position, self._position + len(piece)
        while self._next_row is not None and self._next_row < end:
            kind = piece[self._next_row - start]
            if kind > _MAX_FILTER:
                raise PngDamaged(f"corrupt PNG image data (unknown row filter {kind})")
            self._next_row = next(self._starts, None)
        self._position = end
