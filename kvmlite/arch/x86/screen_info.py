"""``struct screen_info``, the first 0x40 bytes of the zero page.

Layout from include/uapi/linux/screen_info.h (Linux 6.1). A PC BIOS (or a
boot loader after a VESA mode set) fills it in; Linux's sysfb then registers
a simple-framebuffer (SYSFB_SIMPLEFB) or vesafb takes it (FB_VESA), and
fbcon draws the console there. For ``VIDEO_TYPE_VLFB`` ``lfb_size`` counts
64 KiB units and ``lfb_depth`` is bits per pixel (sysfb_simplefb.c).

The PVH boot protocol has no place for it (struct hvm_start_info carries no
video information), so only bzImage boots announce a framebuffer this way.
"""

from __future__ import annotations

import ctypes

u8, u16, u32 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32

VIDEO_TYPE_VLFB = 0x23  # VESA VGA in graphic mode
VIDEO_CAPABILITY_SKIP_QUIRKS = 1 << 0
VIDEO_CAPABILITY_64BIT_BASE = 1 << 1


class ScreenInfo(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [
        ("orig_x", u8),
        ("orig_y", u8),
        ("ext_mem_k", u16),
        ("orig_video_page", u16),
        ("orig_video_mode", u8),
        ("orig_video_cols", u8),
        ("flags", u8),
        ("unused2", u8),
        ("orig_video_ega_bx", u16),
        ("unused3", u16),
        ("orig_video_lines", u8),
        ("orig_video_isVGA", u8),
        ("orig_video_points", u16),
        ("lfb_width", u16),
        ("lfb_height", u16),
        ("lfb_depth", u16),
        ("lfb_base", u32),
        ("lfb_size", u32),
        ("cl_magic", u16),
        ("cl_offset", u16),
        ("lfb_linelength", u16),
        ("red_size", u8),
        ("red_pos", u8),
        ("green_size", u8),
        ("green_pos", u8),
        ("blue_size", u8),
        ("blue_pos", u8),
        ("rsvd_size", u8),
        ("rsvd_pos", u8),
        ("vesapm_seg", u16),
        ("vesapm_off", u16),
        ("pages", u16),
        ("vesa_attributes", u16),
        ("capabilities", u32),
        ("ext_lfb_base", u32),
        ("_reserved", u8 * 2),
    ]


def vesa_lfb(base: int, size: int, width: int, height: int, stride: int) -> ScreenInfo:
    """screen_info for an XRGB8888 framebuffer (simplefb's "x8r8g8b8")."""
    si = ScreenInfo()
    si.orig_video_isVGA = VIDEO_TYPE_VLFB
    si.lfb_width, si.lfb_height, si.lfb_depth = width, height, 32
    si.lfb_base = base & 0xFFFFFFFF
    if base >> 32:
        si.ext_lfb_base = base >> 32
        si.capabilities |= VIDEO_CAPABILITY_64BIT_BASE
    si.lfb_size = -(-size // 0x10000)
    si.lfb_linelength = stride
    si.red_size, si.red_pos = 8, 16
    si.green_size, si.green_pos = 8, 8
    si.blue_size, si.blue_pos = 8, 0
    si.pages = 1
    # A text console's geometry for code that reads it before fbcon starts.
    si.orig_video_cols, si.orig_video_lines = width // 8, height // 16
    si.orig_video_points = 16
    return si
