"""A test-side RFB client for the sans-IO core: builds client messages, decodes updates.

It decodes Raw, CopyRect and ZRLE (every subencoding) in any true-colour format
into an RGB picture, so the tests can check 8/16 bpp and big-endian ZRLE,
which vncdotool's decoder does not handle (it reads 3-byte CPIXELs only).
"""

from __future__ import annotations

import struct
import zlib

from kvmlite.vnc.pixels import PixelFormat

FMT32 = PixelFormat(32, 24, False, True, 255, 255, 255, 16, 8, 0)
FMT32_BE = PixelFormat(32, 24, True, True, 255, 255, 255, 16, 8, 0)
FMT32_RGBX = PixelFormat(32, 24, False, True, 255, 255, 255, 0, 8, 16)
FMT16 = PixelFormat(16, 16, False, True, 31, 63, 31, 11, 5, 0)
FMT16_BE = PixelFormat(16, 16, True, True, 31, 63, 31, 11, 5, 0)
FMT15 = PixelFormat(16, 15, False, True, 31, 31, 31, 10, 5, 0)
FMT8 = PixelFormat(8, 8, False, True, 7, 7, 3, 0, 3, 6)
FMT8_BE = PixelFormat(8, 8, True, True, 7, 7, 3, 5, 2, 0)
ALL_FORMATS = [FMT32, FMT32_BE, FMT32_RGBX, FMT16, FMT16_BE, FMT15, FMT8, FMT8_BE]


def set_pixel_format(fmt: PixelFormat) -> bytes:
    return b"\x00\x00\x00\x00" + fmt.pack()


def set_encodings(*encodings: int) -> bytes:
    return struct.pack(f"!BxH{len(encodings)}i", 2, len(encodings), *encodings)


def update_request(incremental: bool, x: int, y: int, w: int, h: int) -> bytes:
    return struct.pack("!BBHHHH", 3, incremental, x, y, w, h)


def key_event(down: bool, keysym: int) -> bytes:
    return struct.pack("!BBxxI", 4, down, keysym)


def qemu_key_event(down: bool, keysym: int, keycode: int) -> bytes:
    return struct.pack("!BBHII", 255, 0, down, keysym, keycode)


def pointer_event(buttons: int, x: int, y: int) -> bytes:
    return struct.pack("!BBHH", 5, buttons, x, y)


def cut_text(text: bytes) -> bytes:
    return struct.pack("!BxxxI", 6, len(text)) + text


def expected_rgb(fmt: PixelFormat, r: int, g: int, b: int) -> tuple[int, int, int]:
    """What a viewer in ``fmt`` holds for a source colour: each channel scaled to max."""
    return r * fmt.red_max // 255, g * fmt.green_max // 255, b * fmt.blue_max // 255


class Screen:
    """Decodes FramebufferUpdates into a dict of (x, y) -> (r, g, b) in channel units."""

    def __init__(self, width: int, height: int, fmt: PixelFormat) -> None:
        self.width, self.height, self.fmt = width, height, fmt
        self.pixels: dict[tuple[int, int], tuple[int, int, int]] = {}
        self.pseudo: list[tuple[int, int, int, int, int]] = []
        self._z = zlib.decompressobj()

    def _value(self, data: bytes) -> tuple[int, int, int]:
        f = self.fmt
        v = int.from_bytes(data, "big" if f.big_endian else "little")
        return (
            (v >> f.red_shift) & f.red_max,
            (v >> f.green_shift) & f.green_max,
            (v >> f.blue_shift) & f.blue_max,
        )

    def _cpixel_size(self) -> int:
        return 3 if self.fmt.cpixel_drop() is not None else self.fmt.bytes_per_pixel

    def _cpixel(self, data: bytes) -> tuple[int, int, int]:
        drop = self.fmt.cpixel_drop()
        if drop is not None:
            data = data[:drop] + b"\x00" + data[drop:]
        return self._value(data)

    def feed_update(self, data: bytes) -> int:
        """Decode one FramebufferUpdate at the start of ``data``; returns bytes used."""
        assert data[0] == 0, data[:16]
        (count,) = struct.unpack("!H", data[2:4])
        pos = 4
        for _ in range(count):
            x, y, w, h, e = struct.unpack("!HHHHi", data[pos : pos + 12])
            pos += 12
            bpp = self.fmt.bytes_per_pixel
            if e == 0:
                for i in range(w * h):
                    px = data[pos + i * bpp : pos + (i + 1) * bpp]
                    self.pixels[(x + i % w, y + i // w)] = self._value(px)
                pos += w * h * bpp
            elif e == 1:
                sx, sy = struct.unpack("!HH", data[pos : pos + 4])
                pos += 4
                copy = {(i, j): self.pixels[(sx + i, sy + j)] for i in range(w) for j in range(h)}
                for (i, j), v in copy.items():
                    self.pixels[(x + i, y + j)] = v
            elif e == 16:
                (length,) = struct.unpack("!I", data[pos : pos + 4])
                pos += 4
                self._zrle(self._z.decompress(data[pos : pos + length]), x, y, w, h)
                pos += length
            else:
                self.pseudo.append((x, y, w, h, e))
                if e == -223:
                    self.width, self.height = w, h
        return pos

    def _zrle(self, raw: bytes, x: int, y: int, w: int, h: int) -> None:
        pos, cs = 0, self._cpixel_size()
        for ty in range(y, y + h, 64):
            for tx in range(x, x + w, 64):
                tw, th = min(64, x + w - tx), min(64, y + h - ty)
                sub = raw[pos]
                pos += 1
                n = tw * th
                out: list[tuple[int, int, int]] = []
                if sub == 0:
                    out = [self._cpixel(raw[pos + i * cs : pos + (i + 1) * cs]) for i in range(n)]
                    pos += n * cs
                elif sub == 1:
                    out = [self._cpixel(raw[pos : pos + cs])] * n
                    pos += cs
                elif 2 <= sub <= 16:
                    pal = [self._cpixel(raw[pos + i * cs : pos + (i + 1) * cs]) for i in range(sub)]
                    pos += sub * cs
                    bits = 1 if sub == 2 else 2 if sub <= 4 else 4
                    row_bytes = -(-tw * bits // 8)
                    for _r in range(th):
                        rb = raw[pos : pos + row_bytes]
                        pos += row_bytes
                        for c in range(tw):
                            bit = c * bits
                            idx = (rb[bit // 8] >> (8 - bits - bit % 8)) & ((1 << bits) - 1)
                            out.append(pal[idx])
                elif sub == 128:
                    while len(out) < n:
                        px = self._cpixel(raw[pos : pos + cs])
                        pos += cs
                        run = 1
                        while raw[pos] == 255:
                            run += 255
                            pos += 1
                        run += raw[pos]
                        pos += 1
                        out += [px] * run
                    assert len(out) == n
                else:
                    raise AssertionError(f"subencoding {sub} not expected from kvmlite")
                for i, v in enumerate(out):
                    self.pixels[(tx + i % tw, ty + i // tw)] = v
        assert pos == len(raw), (pos, len(raw))
