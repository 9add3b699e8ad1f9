"""RFB pixel formats (RFC 6143 §7.4) and conversion from the framebuffer's own format.

Theory of operation
-------------------
The framebuffer kvmlite gives the guest is always 32 bits per pixel,
little-endian, red in bits 16..23, green 8..15, blue 0..7 (``SOURCE_FORMAT``,
what ``screen_info`` announces). A viewer may ask for any true-colour format
of 8, 16 or 32 bits per pixel in either byte order (SetPixelFormat), so every
rectangle is converted on its way out:

- the viewer's format is the source format: the bytes go as they are;
- 32 bpp with 8-bit channels on byte boundaries: a byte shuffle by slices;
- anything else: each distinct source pixel is converted once and kept in a
  small cache (screens have few distinct colours; the cache is cleared when
  it grows past ``CACHE_LIMIT``).

A channel of ``max`` is scaled as ``value * max // 255`` (for 2^n - 1 maxima
that is the top n bits of the 8-bit value).

ZRLE's CPIXEL (§7.7.6) is a 3-byte pixel when the format is 32 bpp, depth
<= 24 and all colour bits fit in the least or the most significant three
bytes; ``cpixel_drop`` says which byte of the four is left out.
"""

from __future__ import annotations

import struct
import sys
from array import array
from dataclasses import dataclass
from typing import Literal

#: Struct of the 16-byte PIXEL_FORMAT (§7.4), 3 bytes of padding at the end.
PIXEL_FORMAT = struct.Struct("!BBBBHHHBBBxxx")
CACHE_LIMIT = 1 << 16


class PixelFormatError(ValueError):
    """A SetPixelFormat this server cannot honour."""


@dataclass(frozen=True)
class PixelFormat:
    bits_per_pixel: int
    depth: int
    big_endian: bool
    true_colour: bool
    red_max: int
    green_max: int
    blue_max: int
    red_shift: int
    green_shift: int
    blue_shift: int

    @classmethod
    def unpack(cls, data: bytes) -> PixelFormat:
        bpp, depth, be, tc, rm, gm, bm, rs, gs, bs = PIXEL_FORMAT.unpack(data)
        return cls(bpp, depth, bool(be), bool(tc), rm, gm, bm, rs, gs, bs)

    def pack(self) -> bytes:
        return PIXEL_FORMAT.pack(
            self.bits_per_pixel,
            self.depth,
            int(self.big_endian),
            int(self.true_colour),
            self.red_max,
            self.green_max,
            self.blue_max,
            self.red_shift,
            self.green_shift,
            self.blue_shift,
        )

    @property
    def bytes_per_pixel(self) -> int:
        return self.bits_per_pixel // 8

    def validate(self) -> None:
        """Raise PixelFormatError unless this is a true-colour format we can produce."""
        if self.bits_per_pixel not in (8, 16, 32):
            raise PixelFormatError(f"{self.bits_per_pixel} bits per pixel (8, 16 or 32 only)")
        if not self.true_colour:
            raise PixelFormatError("colour-map formats are not supported (true colour only)")
        if not 0 < self.depth <= self.bits_per_pixel:
            raise PixelFormatError(f"depth {self.depth} for {self.bits_per_pixel} bpp")
        used = 0
        for name, mx, shift in self._channels():
            if mx <= 0 or mx.bit_length() + shift > self.bits_per_pixel:
                raise PixelFormatError(f"{name} max {mx} shift {shift} does not fit the pixel")
            mask = ((1 << mx.bit_length()) - 1) << shift
            if used & mask:
                raise PixelFormatError(f"{name} (max {mx}, shift {shift}) overlaps another channel")
            used |= mask

    def _channels(self) -> tuple[tuple[str, int, int], ...]:
        return (
            ("red", self.red_max, self.red_shift),
            ("green", self.green_max, self.green_shift),
            ("blue", self.blue_max, self.blue_shift),
        )

    def cpixel_drop(self) -> int | None:
        """Index (0..3) of the byte a ZRLE CPIXEL leaves out, or None for a full PIXEL."""
        if self.bits_per_pixel != 32 or self.depth > 24:
            return None
        used = 0
        for _name, mx, shift in self._channels():
            used |= mx << shift
        if used < 1 << 24:  # fits in the least significant three bytes
            return 0 if self.big_endian else 3
        if used & 0xFF == 0:  # fits in the most significant three bytes
            return 3 if self.big_endian else 0
        return None


#: The framebuffer's own format (and the one ServerInit announces).
SOURCE_FORMAT = PixelFormat(32, 24, False, True, 255, 255, 255, 16, 8, 0)


class _Cache(dict[int, bytes]):
    def __init__(self, fmt: PixelFormat) -> None:
        super().__init__()
        self._fmt = fmt
        self._order: Literal["big", "little"] = "big" if fmt.big_endian else "little"
        self._size = fmt.bytes_per_pixel

    def __missing__(self, pixel: int) -> bytes:
        f = self._fmt
        r, g, b = (pixel >> 16) & 0xFF, (pixel >> 8) & 0xFF, pixel & 0xFF
        value = (
            (r * f.red_max // 255) << f.red_shift
            | (g * f.green_max // 255) << f.green_shift
            | (b * f.blue_max // 255) << f.blue_shift
        )
        out = value.to_bytes(self._size, self._order)
        self[pixel] = out
        return out


class PixelConverter:
    """Turns source pixels (XRGB8888 little-endian bytes) into a client's format."""

    def __init__(self, fmt: PixelFormat) -> None:
        fmt.validate()
        self.format = fmt
        self.bytes_per_pixel = fmt.bytes_per_pixel
        self._identity = _same_colours(fmt, SOURCE_FORMAT)
        self._shuffle = self._byte_shuffle(fmt)
        self._cache = _Cache(fmt)
        self._drop = fmt.cpixel_drop()
        self.cpixel_size = 3 if self._drop is not None else fmt.bytes_per_pixel

    @staticmethod
    def _byte_shuffle(fmt: PixelFormat) -> list[tuple[int, int]] | None:
        """(destination byte, source byte) pairs when a byte shuffle converts."""
        if fmt.bits_per_pixel != 32:
            return None
        pairs = []
        for (_n, mx, shift), src in zip(fmt._channels(), (2, 1, 0), strict=True):
            if mx != 255 or shift % 8:
                return None
            dst = 3 - shift // 8 if fmt.big_endian else shift // 8
            pairs.append((dst, src))
        return pairs

    def convert(self, src: bytes | memoryview) -> bytes:
        """Convert a run of source pixels (4 bytes each)."""
        if self._identity:
            return bytes(src)
        if self._shuffle is not None:
            out = bytearray(len(src))
            for dst, s in self._shuffle:
                out[dst::4] = src[s::4]
            return bytes(out)
        return self.convert_values(_words(src))

    def convert_values(self, pixels: array | list[int]) -> bytes:
        if len(self._cache) > CACHE_LIMIT:
            self._cache.clear()
        return b"".join(map(self._cache.__getitem__, pixels))

    def pixel(self, value: int) -> bytes:
        """One source pixel value in the client's format."""
        return self._cache[value]

    def cpixels(self, src: bytes | memoryview) -> bytes:
        """Source pixels as ZRLE CPIXELs."""
        return self.to_cpixels(self.convert(src))

    def to_cpixels(self, pixels: bytes) -> bytes:
        if self._drop is None:
            return pixels
        keep = [i for i in range(4) if i != self._drop]
        out = bytearray(len(pixels) // 4 * 3)
        for j, i in enumerate(keep):
            out[j::3] = pixels[i::4]
        return bytes(out)


def _same_colours(a: PixelFormat, b: PixelFormat) -> bool:
    return (a.bits_per_pixel, a.big_endian, a._channels()) == (
        b.bits_per_pixel,
        b.big_endian,
        b._channels(),
    )


def _words(src: bytes | memoryview) -> array:
    """Source bytes as 32-bit little-endian integers."""
    words = array("I", bytes(src))
    if sys.byteorder != "little":
        words.byteswap()
    return words
