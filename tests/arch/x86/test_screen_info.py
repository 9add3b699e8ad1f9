"""screen_info: offsets from include/uapi/linux/screen_info.h, and the bzImage zero page."""

from __future__ import annotations

import ctypes

from kvmlite.arch.x86 import layout
from kvmlite.arch.x86.bzimage import load_bzimage
from kvmlite.arch.x86.screen_info import VIDEO_TYPE_VLFB, ScreenInfo, vesa_lfb
from kvmlite.memory import GuestMemory

from .images import make_bzimage


def test_layout_matches_linux() -> None:
    assert ctypes.sizeof(ScreenInfo) == 0x40
    expected = {
        "orig_video_isVGA": 0x0F,
        "lfb_width": 0x12,
        "lfb_height": 0x14,
        "lfb_depth": 0x16,
        "lfb_base": 0x18,
        "lfb_size": 0x1C,
        "lfb_linelength": 0x24,
        "red_size": 0x26,
        "blue_pos": 0x2B,
        "rsvd_pos": 0x2D,
        "pages": 0x32,
        "capabilities": 0x36,
        "ext_lfb_base": 0x3A,
    }
    for name, offset in expected.items():
        assert getattr(ScreenInfo, name).offset == offset, name


def test_vesa_lfb_values() -> None:
    si = vesa_lfb(0xFD000000, 1966080, 800, 600, 3200)
    assert si.orig_video_isVGA == VIDEO_TYPE_VLFB == 0x23
    assert (si.lfb_width, si.lfb_height, si.lfb_depth, si.lfb_linelength) == (800, 600, 32, 3200)
    assert si.lfb_base == 0xFD000000 and si.lfb_size == 30 and si.capabilities == 0
    assert (si.red_pos, si.green_pos, si.blue_pos, si.rsvd_size) == (16, 8, 0, 0)
    high = vesa_lfb(0x1_2000_0000, 65536, 8, 8, 32)
    assert high.capabilities == 2 and high.ext_lfb_base == 1 and high.lfb_base == 0x2000_0000


def test_bzimage_zero_page_carries_screen_info() -> None:
    mem = GuestMemory.from_buffer(bytearray(64 << 20))
    si = bytes(vesa_lfb(0xFD000000, 1966080, 800, 600, 3200))
    load_bzimage(mem, make_bzimage(kernel=b"\x90" * 4096, relocatable=0), "", screen_info=si)
    assert mem.read(layout.ZERO_PAGE_ADDR, 0x40) == si
    load_bzimage(mem, make_bzimage(kernel=b"\x90" * 4096, relocatable=0), "")
    assert mem.read(layout.ZERO_PAGE_ADDR, 0x40) == bytes(0x40)
