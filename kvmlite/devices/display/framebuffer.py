"""A linear framebuffer: guest memory the guest draws in and the VMM reads.

There are no registers: the guest learns address, size, geometry and pixel
layout from the boot parameters (``screen_info`` as a VESA linear
framebuffer, see kvmlite/arch/x86/screen_info.py), as a PC BIOS leaves them
for Linux's vesafb/simplefb, and writes pixels straight into the memory.

Theory of operation
-------------------
The pixels live in their own memfd (not in guest RAM), which the VMM maps
into the guest as a separate KVM memory slot with dirty logging on. The
pixel format is fixed: 32 bits, little-endian XRGB8888 (red 16..23, green
8..15, blue 0..7), ``stride = 4 * width`` bytes per row, the region rounded
up to 64 KiB (screen_info counts a VESA framebuffer's size in 64 KiB units).

Change tracking: ``dirty_pages`` is a callable the VMM supplies that returns
the slot's dirty bitmap since the last call (KVM_GET_DIRTY_LOG: one bit per
4 KiB page, LSB first, reading clears it). ``changed_tiles()`` turns it into
one byte per ``tile`` x ``tile`` square of the screen, row-major, so a VNC
server sends only squares the guest wrote. A page within one pixel row
marks only the squares its bytes cover; a page across rows marks those rows
whole (a superset is always safe). This module never touches KVM (DESIGN.md
rule 1): without a dirty source everything counts as changed.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass

from kvmlite.errors import ConfigError, StateError

PAGE_SIZE = 4096
#: screen_info.lfb_size unit for a VESA framebuffer.
LFB_SIZE_UNIT = 64 * 1024
BYTES_PER_PIXEL = 4
MAX_WIDTH, MAX_HEIGHT = 4096, 4096
#: Where kvmlite puts the framebuffer: the top of the 32-bit PCI window,
#: below the virtio-mmio devices (0xFEB00000); room for 27 MiB.
FRAMEBUFFER_GPA = 0xFD000000
FRAMEBUFFER_MAX_SIZE = 0xFEB00000 - FRAMEBUFFER_GPA


@dataclass(frozen=True)
class FramebufferState:
    width: int
    height: int
    gpa: int
    pixels: bytes


class LinearFramebuffer:
    """XRGB8888 pixels at ``gpa``, ``width`` x ``height``."""

    State = FramebufferState
    name = "framebuffer"

    def __init__(
        self,
        width: int,
        height: int,
        *,
        gpa: int = FRAMEBUFFER_GPA,
        dirty_pages: Callable[[], bytes] | None = None,
    ) -> None:
        if not (0 < width <= MAX_WIDTH and 0 < height <= MAX_HEIGHT):
            raise ConfigError(f"display {width}x{height}: width and height must be 1..{MAX_WIDTH}")
        self.width, self.height, self.gpa = width, height, gpa
        self.stride = width * BYTES_PER_PIXEL
        self.size = -(-self.stride * height // LFB_SIZE_UNIT) * LFB_SIZE_UNIT
        if gpa % PAGE_SIZE or (gpa == FRAMEBUFFER_GPA and self.size > FRAMEBUFFER_MAX_SIZE):
            raise ConfigError(f"display {width}x{height} does not fit at {gpa:#x}")
        self.dirty_pages = dirty_pages
        self.fd = os.memfd_create("kvmlite-framebuffer", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, self.size)
            self._mmap = mmap.mmap(self.fd, self.size, mmap.MAP_SHARED)
        except OSError as e:
            os.close(self.fd)
            raise ConfigError(f"cannot allocate the framebuffer: {e.strerror}") from e
        self.buf = memoryview(self._mmap)

    def host_address(self) -> int:
        import ctypes

        return ctypes.addressof(ctypes.c_char.from_buffer(self._mmap))

    def tiles_shape(self, tile: int) -> tuple[int, int]:
        return -(-self.width // tile), -(-self.height // tile)

    def changed_tiles(self, tile: int = 64) -> bytearray:
        """One byte per tile, row-major: 1 where the guest wrote since the last call."""
        tw, th = self.tiles_shape(tile)
        if self.dirty_pages is None:
            return bytearray(b"\x01" * (tw * th))
        return self.tiles_from_pages(self.dirty_pages(), tile)

    def tiles_from_pages(self, bitmap: bytes, tile: int = 64) -> bytearray:
        tw, th = self.tiles_shape(tile)
        tiles = bytearray(tw * th)
        visible = self.stride * self.height
        for i, byte in enumerate(bitmap):
            if not byte:
                continue
            for bit in range(8):
                if not byte >> bit & 1:
                    continue
                start = (i * 8 + bit) * PAGE_SIZE
                if start >= visible:
                    return tiles
                end = min(start + PAGE_SIZE, visible) - 1
                r0, r1 = start // self.stride, end // self.stride
                if r0 == r1:
                    c0 = (start % self.stride) // BYTES_PER_PIXEL // tile
                    c1 = (end % self.stride) // BYTES_PER_PIXEL // tile
                else:
                    c0, c1 = 0, tw - 1
                for ty in range(r0 // tile, r1 // tile + 1):
                    tiles[ty * tw + c0 : ty * tw + c1 + 1] = b"\x01" * (c1 - c0 + 1)
        return tiles

    # -- snapshot --------------------------------------------------------------------

    def save(self) -> FramebufferState:
        return FramebufferState(
            self.width, self.height, self.gpa, bytes(self.buf[: self.stride * self.height])
        )

    @classmethod
    def restore(
        cls, args: Callable[[], bytes] | None, state: FramebufferState
    ) -> LinearFramebuffer:
        """``args``: the dirty-page source of the new machine (or None)."""
        fb = cls(state.width, state.height, gpa=state.gpa, dirty_pages=args)
        if len(state.pixels) != fb.stride * fb.height:
            fb.close()
            raise StateError(
                f"framebuffer state has {len(state.pixels)} bytes of pixels,"
                f" {state.width}x{state.height} needs {fb.stride * fb.height}"
            )
        fb.buf[: len(state.pixels)] = state.pixels
        return fb

    def close(self) -> None:
        try:
            self.buf.release()
            self._mmap.close()
        except BufferError:
            pass  # a view is still alive (a VNC update in flight); it goes with the last one
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
