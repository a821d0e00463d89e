"""/favicon.ico: a small icon in the city's colour, made once per process (no file to ship).

Browsers ask for /favicon.ico on every site whether a page names an icon or not; a 404 there
fills logs and looks broken. The icon is a 32x32 ICO (one 32-bit BMP image, the format every
browser and bookmark tool reads): a rounded square in the branding colour with a white ring.
"""

from __future__ import annotations

import re
import struct

SIZE = 32
DEFAULT_COLOUR = "#004b87"


def _rgb(colour: str) -> tuple[int, int, int]:
    if not re.fullmatch(r"#[0-9a-fA-F]{3}([0-9a-fA-F]{3})?", colour):
        colour = DEFAULT_COLOUR
    digits = colour[1:]
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def _pixel(x: int, y: int, rgb: tuple[int, int, int]) -> bytes:
    """BGRA of one pixel: transparent outside the rounded square, white on the ring."""
    centre = (SIZE - 1) / 2
    radius = 6  # of the square's corners
    dx = max(0.0, abs(x - centre) - (centre - radius))
    dy = max(0.0, abs(y - centre) - (centre - radius))
    if dx * dx + dy * dy > radius * radius:
        return b"\x00\x00\x00\x00"
    ring = ((x - centre) ** 2 + (y - centre) ** 2) ** 0.5
    if 6.5 <= ring <= 10.5:
        return b"\xff\xff\xff\xff"
    r, g, b = rgb
    return bytes((b, g, r, 0xFF))


def ico(colour: str) -> bytes:
    """The icon's ICO file (ICONDIR, one ICONDIRENTRY, BITMAPINFOHEADER, pixels, AND mask)."""
    rgb = _rgb(colour)
    # rows bottom-up, as in every BMP
    pixels = b"".join(_pixel(x, y, rgb) for y in reversed(range(SIZE)) for x in range(SIZE))
    mask = b"\x00" * (SIZE * ((SIZE + 31) // 32 * 4))  # all shown: the alpha channel decides
    header = struct.pack("<IiiHHIIiiII", 40, SIZE, SIZE * 2, 1, 32, 0, len(pixels) + len(mask), 0, 0, 0, 0)
    image = header + pixels + mask
    directory = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", SIZE, SIZE, 0, 0, 1, 32, len(image), 6 + 16)
    return directory + entry + image
