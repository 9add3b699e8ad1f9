"""Rectangle encodings: Raw (RFC 6143 §7.7.1), CopyRect (§7.7.2), ZRLE (§7.7.6).

ZRLE cuts a rectangle into 64x64 tiles, left to right, top to bottom; each
tile is one of (subencodings used here):

- 1, solid: one CPIXEL;
- 2..16, packed palette: the palette, then 1, 2 or 4 bits per pixel
  index, each row padded to a whole byte;
- 0, raw: every pixel as a CPIXEL;
- 128, plain RLE, when its runs make it smaller than raw.

The tiles of one rectangle go through the connection's single zlib stream
(one ``compressobj`` per connection, flushed with Z_SYNC_FLUSH per rectangle,
as the viewer keeps one inflate stream for the whole connection).
"""

from __future__ import annotations

import struct
import zlib
from array import array
from dataclasses import dataclass
from itertools import groupby
from operator import ne

from kvmlite.vnc.pixels import PixelConverter, _words

ENCODING_RAW = 0
ENCODING_COPYRECT = 1
ENCODING_ZRLE = 16
ENCODING_DESKTOP_SIZE = -223
ENCODING_QEMU_EXTENDED_KEY = -258
TILE = 64
RECT_HEADER = struct.Struct("!HHHHi")


@dataclass
class Surface:
    """A framebuffer in the source format: ``stride`` bytes per row."""

    buf: memoryview | bytes | bytearray
    width: int
    height: int
    stride: int

    def rect(self, x: int, y: int, w: int, h: int) -> bytes:
        """The source pixels of a rectangle, rows packed."""
        start, row = x * 4, w * 4
        if w == self.width and self.stride == row:
            return bytes(self.buf[y * self.stride : (y + h) * self.stride])
        parts = []
        for r in range(y, y + h):
            off = r * self.stride + start
            parts.append(self.buf[off : off + row])
        return b"".join(parts)


def raw_rect(surface: Surface, conv: PixelConverter, x: int, y: int, w: int, h: int) -> bytes:
    return RECT_HEADER.pack(x, y, w, h, ENCODING_RAW) + conv.convert(surface.rect(x, y, w, h))


def copy_rect(src_x: int, src_y: int, x: int, y: int, w: int, h: int) -> bytes:
    return RECT_HEADER.pack(x, y, w, h, ENCODING_COPYRECT) + struct.pack("!HH", src_x, src_y)


class ZrleEncoder:
    """One connection's ZRLE state: its zlib stream."""

    def __init__(self, level: int = 6) -> None:
        self._z = zlib.compressobj(level)

    def rect(self, surface: Surface, conv: PixelConverter, x: int, y: int, w: int, h: int) -> bytes:
        tiles = []
        for ty in range(y, y + h, TILE):
            th = min(TILE, y + h - ty)
            for tx in range(x, x + w, TILE):
                tw = min(TILE, x + w - tx)
                tiles.append(encode_tile(surface.rect(tx, ty, tw, th), tw, conv))
        data = self._z.compress(b"".join(tiles)) + self._z.flush(zlib.Z_SYNC_FLUSH)
        return RECT_HEADER.pack(x, y, w, h, ENCODING_ZRLE) + struct.pack("!I", len(data)) + data


def encode_tile(src: bytes, width: int, conv: PixelConverter) -> bytes:
    """One ZRLE tile (uncompressed) from its source pixels."""
    pixels = _words(src)
    colours = set(pixels)
    if len(colours) == 1:
        return b"\x01" + conv.to_cpixels(conv.pixel(pixels[0]))
    raw_size = len(pixels) * conv.cpixel_size
    if len(colours) <= 16:
        return _packed_palette(pixels, width, sorted(colours), conv)
    rle = _plain_rle(pixels, conv, raw_size)
    if rle is not None:
        return rle
    return b"\x00" + conv.cpixels(src)


def _packed_palette(pixels: array, width: int, palette: list[int], conv: PixelConverter) -> bytes:
    n = len(palette)
    bits = 1 if n == 2 else 2 if n <= 4 else 4
    per_byte = 8 // bits
    index = {p: i for i, p in enumerate(palette)}
    out = bytearray((n,))
    out += conv.to_cpixels(b"".join(conv.pixel(p) for p in palette))
    for start in range(0, len(pixels), width):
        row = [index[p] for p in pixels[start : start + width]]
        row += [0] * (-len(row) % per_byte)
        for i in range(0, len(row), per_byte):
            byte = 0
            for v in row[i : i + per_byte]:
                byte = (byte << bits) | v
            out.append(byte)
    return bytes(out)


def _plain_rle(pixels: array, conv: PixelConverter, limit: int) -> bytes | None:
    """Subencoding 128 if it comes out smaller than ``limit`` bytes, else None.

    The runs are counted first at C speed (map/ne, groupby), so a tile of many
    colours costs no per-pixel Python loop before it goes raw.
    """
    runs = 1 + sum(map(ne, pixels[1:], pixels[:-1]))
    if runs * (conv.cpixel_size + 1) >= limit:
        return None
    out = bytearray(b"\x80")
    for p, group in groupby(pixels):
        run = len(list(group)) - 1
        out += conv.to_cpixels(conv.pixel(p))
        out += b"\xff" * (run // 255) + bytes((run % 255,))
    return bytes(out) if len(out) < limit else None
