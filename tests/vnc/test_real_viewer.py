"""A real viewer as the second judge: TigerVNC's vncviewer under Xvfb.

The server serves a known picture; vncviewer draws it in its window; ``xwd``
dumps the X screen and the picture must be in it pixel for pixel, found by
its top-left corner (the window's place on the screen is up to the viewer).
Skipped where vncviewer, Xvfb or xwd are missing (Makefile's APT_PACKAGES
installs them).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time

import pytest

from kvmlite.config.vnc import VncAddress
from kvmlite.eventloop import EventLoop
from kvmlite.vnc.server import VncServer

from .test_rfb import source_rgb
from .test_server import FakeDisplay

W, H = 96, 72
pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("vncviewer", "Xvfb", "xwd")),
    reason="needs vncviewer (tigervnc-viewer), Xvfb and xwd (x11-apps)",
)


def read_xwd(data: bytes) -> tuple[int, int, dict[tuple[int, int], tuple[int, int, int]] | None]:
    """A TrueColor XWD dump (X11/XWDFile.h) -> width, height, pixel getter table."""
    fields = struct.unpack(">25I", data[:100])
    header_size, _, _, depth, width, height = fields[:6]
    byte_order, bpp, bytes_per_line = fields[7], fields[11], fields[12]
    masks, ncolors = fields[14:17], fields[19]
    assert bpp == 32 and depth == 24, fields
    pixels = data[header_size + 12 * ncolors :]
    order = "little" if byte_order == 0 else "big"
    shifts = [(m & -m).bit_length() - 1 for m in masks]
    out = {}
    for y in range(height):
        row = pixels[y * bytes_per_line : y * bytes_per_line + 4 * width]
        for x in range(width):
            v = int.from_bytes(row[4 * x : 4 * x + 4], order)
            out[(x, y)] = tuple((v & m) >> s for m, s in zip(masks, shifts, strict=True))
    return width, height, out


def _wait_for_x(env: dict[str, str]) -> None:
    """Bounded poll until the X server answers (-displayfd can be early here)."""
    end = time.monotonic() + 30
    while subprocess.run(["xwd", "-root", "-silent"], env=env, capture_output=True).returncode:
        assert time.monotonic() < end, "Xvfb does not answer"
        time.sleep(0.1)


def test_vncviewer_shows_the_framebuffer(tmp_path) -> None:
    loop = EventLoop()
    loop.start()
    display = FakeDisplay()
    server = VncServer(loop, display, VncAddress("127.0.0.1", 0))
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", "1", "-screen", "0", "320x240x24", "-nolisten", "tcp", "-noreset"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    viewer = None
    try:
        assert xvfb.stdout is not None
        dpy = ":" + xvfb.stdout.readline().decode().strip()
        env = dict(os.environ, DISPLAY=dpy)
        _wait_for_x(env)
        viewer = subprocess.Popen(
            ["vncviewer", "-SecurityTypes", "None", "-PreferredEncoding", "ZRLE",
             "-AutoSelect=0", "-FullColor=1", "-geometry", "+0+0", f"127.0.0.1::{server.port}"],
            env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "viewer.log", "wb"),
        )  # fmt: skip
        want = [[source_rgb(display.pix, W, x, y) for x in range(W)] for y in range(H)]
        end = time.monotonic() + 60
        last = None
        while True:
            assert time.monotonic() < end, "the picture never appeared in the viewer's window"
            assert viewer.poll() is None, (tmp_path / "viewer.log").read_text()
            dump = subprocess.run(["xwd", "-root", "-silent"], env=env, capture_output=True,
                                  check=True).stdout  # fmt: skip
            sw, sh, screen = read_xwd(dump)
            origin = next(
                (
                    (ox, oy)
                    for oy in range(sh - H + 1)
                    for ox in range(sw - W + 1)
                    if screen[(ox, oy)] == want[0][0]
                    and all(screen[(ox + i, oy)] == want[0][i] for i in range(W))
                ),
                None,
            )
            if origin is not None:
                ox, oy = origin
                bad = [
                    (x, y, screen[(ox + x, oy + y)], want[y][x])
                    for y in range(H)
                    for x in range(W)
                    if screen[(ox + x, oy + y)] != want[y][x]
                ]
                if not bad:
                    break
                last = (origin, len(bad), bad[:5])
            assert time.monotonic() < end - 1 or origin is None, last
            time.sleep(0.2)
        assert server.viewers == 1
    finally:
        if viewer is not None:
            viewer.kill()
            viewer.wait()
        xvfb.terminate()  # not kill: Xvfb removes its socket and lock file on SIGTERM
        xvfb.wait()
        loop.call_soon(server.close)
        loop.close()
