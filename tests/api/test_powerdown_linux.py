"""Slow: QMP ``system_powerdown`` makes the default Linux guest power itself off.

The path: the SCI (ACPI fixed-feature power button, PM1 PWRBTN_STS/PWRBTN_EN)
-> Linux's ACPI button driver (CONFIG_ACPI_BUTTON) -> KEY_POWER on
/dev/input/event0 (CONFIG_INPUT_EVDEV) -> busybox acpid -> /etc/acpi/PWRF/00000080
-> ``poweroff -f`` -> ACPI S5 -> ``kvmlite run`` exits 0. Judged by qemu.qmp.
The initramfs is built into the test's directory (the shared cache is left alone).
"""

from __future__ import annotations

import asyncio
import os

import pytest
from qemu.qmp import EventListener, QMPClient

from .vmrig import KvmliteVm, hang_up, poll

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs /dev/kvm"),
]

BOOT_TIMEOUT = 600  # seconds: 80 s to the shell on an idle host here, 14 min seen at load 10


def test_system_powerdown_powers_the_default_guest_off(short_tmp):
    from kvmlite.guestimage import READY_BANNER, build_kernel, guest_cmdline
    from kvmlite.guestimage.initramfs import build_busybox_initramfs

    kernel = build_kernel(progress=False)
    initrd = build_busybox_initramfs(short_tmp / "initramfs.cpio")
    qmp_path = short_tmp / "q.sock"
    vm = KvmliteVm(
        kernel.vmlinux,  # PVH: no emulated decompressor
        short_tmp,
        "-i",
        str(initrd),
        "-a",
        guest_cmdline(),
        "--qmp",
        f"unix:{qmp_path}",
        vm_id="linux",
        memory="128M",
    )
    try:

        def booted() -> bool:
            if vm.proc.poll() is not None:
                return True
            return vm.console.exists() and READY_BANNER in vm.console.read_text(errors="replace")

        poll("the guest's shell", booted, BOOT_TIMEOUT, 0.5)
        assert vm.proc.poll() is None, vm.proc.stderr.read()

        async def go():
            qmp = QMPClient("judge")
            events = EventListener()
            qmp.register_listener(events)
            await qmp.connect(str(qmp_path))
            await qmp.execute("system_powerdown")
            got = [await events.get(), await events.get()]
            await hang_up(qmp)
            return got

        powerdown, shutdown = asyncio.run(asyncio.wait_for(go(), BOOT_TIMEOUT))
        assert powerdown["event"] == "POWERDOWN"
        assert shutdown["event"] == "SHUTDOWN"
        assert shutdown["data"] == {"guest": True, "reason": "guest-shutdown"}
        assert vm.end(120) == 0
        assert "power button pressed" in vm.console.read_text(errors="replace")
        assert not vm.rundir.exists()
    finally:
        vm.close()
