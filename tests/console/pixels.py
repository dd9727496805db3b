"""Reading Playwright's PNG screenshots (8-bit RGB/RGBA, not interlaced) without Pillow,
so tests can check what was actually drawn: colours present, bar lengths."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Image:
    width: int
    height: int
    rows: list[bytes]  # RGB triplets per row

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        row = self.rows[y]
        return row[3 * x], row[3 * x + 1], row[3 * x + 2]


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def decode(png: bytes) -> Image:
    assert png.startswith(PNG_SIGNATURE), "not a PNG"
    offset = len(PNG_SIGNATURE)
    header = None
    data = bytearray()
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        body = png[offset + 8 : offset + 8 + length]
        offset += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            data += body
        elif kind == b"IEND":
            break
    assert header is not None
    width, height, depth, colour_type, _, _, interlace = header
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, f"unsupported PNG {header}"
    channels = 3 if colour_type == 2 else 4
    stride = width * channels
    raw = zlib.decompress(bytes(data))
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            upper_left = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + ((left + up) >> 1)) & 0xFF
            elif kind == 4:
                line[i] = (line[i] + _paeth(left, up, upper_left)) & 0xFF
        previous = line
        rows.append(bytes(line) if channels == 3 else bytes(b for j, b in enumerate(line) if j % 4 != 3))
    return Image(width, height, rows)


def hex_colour(value: str) -> tuple[int, int, int]:
    value = value.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def close(a: tuple[int, int, int], b: tuple[int, int, int], tolerance: int = 24) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


def count_colour(image: Image, colour: str, tolerance: int = 24) -> int:
    want = hex_colour(colour)
    return sum(
        1 for y in range(image.height) for x in range(image.width) if close(image.pixel(x, y), want, tolerance)
    )


def widest_run(image: Image, colour: str, y: int, tolerance: int = 24) -> int:
    """The longest horizontal run of that colour on row y, in pixels."""
    want = hex_colour(colour)
    best = run = 0
    for x in range(image.width):
        run = run + 1 if close(image.pixel(x, y), want, tolerance) else 0
        best = max(best, run)
    return best


def rightmost(image: Image, colour: str, y: int, tolerance: int = 24) -> int:
    """One past the last x on row y that has that colour (0 when none): how far a fill reaches."""
    want = hex_colour(colour)
    return max((x + 1 for x in range(image.width) if close(image.pixel(x, y), want, tolerance)), default=0)
