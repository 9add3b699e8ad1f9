"""A tiny guest draws into the VNC framebuffer; vncdotool checks it pixel for pixel.

``kvmlite run --vnc unix:PATH`` boots tests/vmm/guests/vncfb.c (a bzImage, so it
finds the framebuffer in the zero page's screen_info), which draws a known pattern
and then echoes i8042 scan codes on COM1; vncdotool (the independent client)
captures the screen in several pixel formats and encodings and types keys.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time

import pytest
from vnc import fakeclient as fc  # tests/vnc
from vnc import judge

from .tinyguests import bzimage_guest

pytestmark = pytest.mark.skipif(
    not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs a usable /dev/kvm"
)
W, H = 160, 120


def expected(x: int, y: int) -> tuple[int, int, int]:
    """The guest's pattern (vncfb.c)."""
    if x < 8 and y < 8:
        return -1, -1, -1  # painted over by key presses: not compared
    if x < W // 2:
        return (x * 7) & 0xFF, (y * 13) & 0xFF, 0xFF if (x // 16 + y // 16) & 1 else 0
    return 0x20, 0xC0, 0x80


class Guest:
    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, prefix: str, timeout: float = 60) -> str:
        end = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(end - time.monotonic(), 0.01))
            except queue.Empty:
                err = self.proc.stderr.read() if self.proc.poll() is not None else ""
                raise AssertionError(f"no {prefix!r} line; kvmlite stderr: {err}") from None
            if line.startswith(prefix):
                return line


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    out = tmp_path_factory.mktemp("vncfb")
    image = bzimage_guest(out, "vncfb")
    sock = str(out / "vnc.sock")
    argv = [sys.executable, "-m", "kvmlite.cli", "run", "--console", "stdio", "-k", str(image),
            "-m", "32", "--vnc", f"unix:{sock}", "--vnc-size", f"{W}x{H}"]  # fmt: skip
    g = Guest(argv)
    g.sock = sock
    try:
        fb = g.expect("fb ")
        assert fb.split() == ["fb", "00000000fd000000", str(W), str(H)]
        g.expect("drawn")
        yield g
    finally:
        if g.proc.poll() is None:
            g.proc.kill()
        g.proc.wait(30)


CASES = [(f, 0) for f in fc.ALL_FORMATS] + [(fc.FMT32, 16)]


@pytest.mark.parametrize("fmt,encoding", CASES, ids=lambda c: str(c))
def test_screenshot_equals_the_pattern(guest, fmt, encoding) -> None:
    client = judge.connect(guest.sock, fmt, encoding)
    try:
        client.refreshScreen()
        pic = judge.picture(fmt, client.factory.rects)
    finally:
        client.disconnect()
    assert len(pic) == W * H
    for y in range(H):
        for x in range(W):
            if expected(x, y)[0] >= 0:
                assert pic[(x, y)] == fc.expected_rgb(fmt, *expected(x, y)), (x, y)


def test_incremental_update_brings_only_the_tile_the_guest_wrote(guest) -> None:
    client = judge.connect(guest.sock, fc.FMT32, 16)
    try:
        client.refreshScreen()
        rects = client.factory.rects
        del rects[:]
        client.keyPress("b")  # the guest paints (0, 0)..(7, 7) with each code it reads
        assert guest.expect("key ").endswith("30")
        assert guest.expect("key ").endswith("b0")
        client.refreshScreen(incremental=True)  # KVM's dirty log on the framebuffer slot
        pic = judge.picture(fc.FMT32, rects)
    finally:
        client.disconnect()
    # One 4 KiB page holds 6.4 rows of 160 pixels here, so the page the guest wrote
    # marks the whole first row of 64x64 tiles, and nothing of the second.
    assert pic and all(y < 64 for _, y in pic) and len(pic) < W * H
    assert pic[(3, 3)] == (0xB0, 0xB0, 0xB0) and pic[(8, 8)] == expected(8, 8)


def test_pil_screenshot_and_keys_reach_the_guest(guest, tmp_path) -> None:
    from PIL import Image
    from vncdotool import api

    client = api.connect(guest.sock, timeout=60)
    try:
        png = tmp_path / "screen.png"
        client.captureScreen(str(png))
        img = Image.open(png).convert("RGB")
        assert img.size == (W, H)
        assert all(
            img.getpixel((x, y)) == expected(x, y)
            for x in range(W)
            for y in range(H)
            if expected(x, y)[0] >= 0
        )
        client.keyPress("a")
        assert guest.expect("key ").endswith("1e")  # set 2 0x1c, translated to set 1
        assert guest.expect("key ").endswith("9e")
        client.keyPress("esc")
        assert guest.expect("key ").endswith("01")
    finally:
        client.disconnect()
    assert guest.proc.wait(30) == 0
