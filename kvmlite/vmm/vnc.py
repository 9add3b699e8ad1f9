"""The VNC console's machine side: the framebuffer slot, the keyboard, the tablet, the server.

Built only when the config has a ``vnc`` (``--vnc``). The framebuffer's
memfd becomes KVM memory slot ``len(memory.regions)`` (the slots after RAM's)
with KVM_MEM_LOG_DIRTY_PAGES, at FRAMEBUFFER_GPA at the top of the 32-bit PCI
window (the builder keeps BARs below it, and ``boot`` describes it in
``screen_info``). The server runs on the machine's EventLoop; each 30 Hz tick
reads the slot's dirty log (which clears it). Keys go into the i8042 under
the lock its port devices share with the vCPU threads; the pointer goes to a
virtio-input tablet on the machine's virtio transport (its model takes the
virtio devices' lock itself), scaled from pixels to 0..ABS_MAX.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kvmlite.config.vnc import VncConfig
from kvmlite.vmm.devices import BusKind, Placement

if TYPE_CHECKING:
    from kvmlite.arch.x86.screen_info import ScreenInfo
    from kvmlite.vmm.machine import Machine
    from kvmlite.vmm.virtio import VirtioWiring

log = logging.getLogger(__name__)


def add_vnc(machine: Machine, config: VncConfig, wiring: VirtioWiring) -> None:
    """Framebuffer (device "framebuffer"), tablet ("tablet") and the VNC server."""
    from kvmlite.devices.display import LinearFramebuffer  # noqa: PLC0415
    from kvmlite.devices.legacy.i8042 import I8042  # noqa: PLC0415
    from kvmlite.devices.virtio.input import ABS_MAX, VirtioTablet  # noqa: PLC0415
    from kvmlite.kvm.structs import KVM_MEM_LOG_DIRTY_PAGES  # noqa: PLC0415
    from kvmlite.vnc.auth import read_password_file  # noqa: PLC0415
    from kvmlite.vnc.server import VncServer  # noqa: PLC0415

    password = read_password_file(config.password_file) if config.password_file else None
    vm = machine.vm
    slot = len(machine.memory.regions)
    fb = LinearFramebuffer(config.width, config.height)
    machine.closers.append(fb.close)
    fb.dirty_pages = lambda: vm.get_dirty_log(slot, fb.size)
    vm.set_user_memory_region(slot, fb.gpa, fb.size, fb.host_address(), KVM_MEM_LOG_DIRTY_PAGES)

    # Closers run last-first: the slot goes before its memory is unmapped.
    def delete_slot() -> None:
        if vm.fd >= 0:
            vm.set_user_memory_region(slot, fb.gpa, 0, 0)

    machine.closers.append(delete_slot)
    machine.devices.add("framebuffer", fb, placements=(Placement(BusKind.MMIO, fb.gpa, fb.size),))

    keyboard = machine.devices.entry("i8042")
    i8042 = machine.devices.get("i8042", I8042)

    def on_key(key: int, down: bool) -> None:
        with keyboard.locked():
            i8042.key(key, down)

    tablet = VirtioTablet()
    wiring.add("tablet", tablet)
    sx, sy = ABS_MAX / max(fb.width - 1, 1), ABS_MAX / max(fb.height - 1, 1)

    def on_pointer(x: int, y: int, buttons: int) -> None:
        tablet.pointer(round(x * sx), round(y * sy), buttons)

    server = VncServer(
        machine.loop, fb, config.address, password=password, on_key=on_key, on_pointer=on_pointer
    )
    machine.closers.append(server.close)
    log.info("VNC server on %s (%dx%d)", server.address, fb.width, fb.height)


def screen_info(machine: Machine) -> ScreenInfo | None:
    """The zero page's screen_info for the machine's framebuffer, if it has one."""
    from kvmlite.arch.x86.screen_info import vesa_lfb  # noqa: PLC0415
    from kvmlite.devices.display import LinearFramebuffer  # noqa: PLC0415

    for entry in machine.devices.of_type(LinearFramebuffer):
        fb = entry.model
        return vesa_lfb(fb.gpa, fb.size, fb.width, fb.height, fb.stride)
    return None
