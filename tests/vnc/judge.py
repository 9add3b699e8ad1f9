"""vncdotool as the independent judge: its own RFB client (handshake, DES, Raw and ZRLE
decoding), with the pixel format and encoding a test asks for.

vncdotool turns pixels into a PIL image only for a few formats, so this client keeps
the decoded rectangles' pixel bytes instead; ``picture()`` reads the channels out of
them. Its ZRLE decoder takes every CPIXEL as 3 bytes, so it judges ZRLE in 32 bpp
little-endian only.
"""

from __future__ import annotations

import warnings

from vncdotool import api
from vncdotool import rfb as vrfb
from vncdotool.client import VNCDoToolClient, VNCDoToolFactory

from kvmlite.vnc.pixels import PixelFormat

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)

    class RecordingClient(VNCDoToolClient):
        def setImageMode(self) -> None:  # noqa: N802 (vncdotool's name)
            f = self.factory.pixel_format
            self.setPixelFormat(
                vrfb.PixelFormat(
                    f.bits_per_pixel, f.depth, f.big_endian, f.true_colour, f.red_max,
                    f.green_max, f.blue_max, f.red_shift, f.green_shift, f.blue_shift,
                )
            )  # fmt: skip
            self.encoding = self.factory.encoding

        def updateRectangle(self, x: int, y: int, width: int, height: int, data: bytes) -> None:  # noqa: N802
            self.factory.rects.append((x, y, width, height, bytes(data)))


def factory_for(fmt: PixelFormat, encoding: int) -> type[VNCDoToolFactory]:
    class Factory(VNCDoToolFactory):
        protocol = RecordingClient
        pixel_format = fmt

        def __init__(self) -> None:
            super().__init__()
            self.encoding = vrfb.Encoding(encoding)
            self.rects: list[tuple[int, int, int, int, bytes]] = []

    return Factory


def connect(server: str, fmt: PixelFormat, encoding: int, password: str | None = None):
    return api.connect(server, password=password, factory_class=factory_for(fmt, encoding),
                       timeout=60)  # fmt: skip


def picture(fmt: PixelFormat, rects) -> dict[tuple[int, int], tuple[int, int, int]]:
    """(x, y) -> (r, g, b) in the format's channel units, later rectangles on top."""
    step = fmt.bytes_per_pixel
    order = "big" if fmt.big_endian else "little"
    out = {}
    for x, y, w, h, data in rects:
        for i in range(w * h):
            v = int.from_bytes(data[i * step : (i + 1) * step], order)
            out[(x + i % w, y + i // w)] = (
                (v >> fmt.red_shift) & fmt.red_max,
                (v >> fmt.green_shift) & fmt.green_max,
                (v >> fmt.blue_shift) & fmt.blue_max,
            )
    return out
