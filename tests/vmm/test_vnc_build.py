"""build_vm with a VNC config: what gets built, and nothing without it (needs /dev/kvm)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kvmlite.config import BootSource, CharConfig, CharKind, MachineConfig, VmConfig, VncConfig
from kvmlite.devices.display import LinearFramebuffer
from kvmlite.devices.display.framebuffer import FRAMEBUFFER_GPA
from kvmlite.devices.virtio.pci import VirtioPciDevice
from kvmlite.errors import ImageError
from kvmlite.vmm.builder import build_vm

pytestmark = pytest.mark.skipif(
    not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs a usable /dev/kvm"
)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory) -> Path:
    from kvmlite.testing.guests import GUEST_DIR, build_guest

    return build_guest(GUEST_DIR / "halt.c", tmp_path_factory.mktemp("k"), kind="pvh")


def _config(kernel: Path, vnc: VncConfig | None = None) -> VmConfig:
    return VmConfig(
        machine=MachineConfig(memory=32 << 20),
        boot=BootSource(kernel),
        console=CharConfig(CharKind.NULL),
        vnc=vnc,
    )


def test_vnc_builds_framebuffer_slot_tablet_and_server(kernel, tmp_path) -> None:
    sock = tmp_path / "v.sock"
    vnc = VncConfig(f"unix:{sock}", width=64, height=64)
    machine = build_vm(_config(kernel, vnc))
    try:
        fb = machine.devices.get("framebuffer", LinearFramebuffer)
        assert fb.gpa == FRAMEBUFFER_GPA and sock.exists()
        # the slot is dirty-logged: a host write is not in it, the log reads clean
        assert not any(fb.changed_tiles(64))
        tablet = machine.devices.transport("tablet", VirtioPciDevice)
        cfg = tablet.config  # the PCI function of the tablet
        assert (cfg.read(0, 2), cfg.read(2, 2)) == (0x1AF4, 0x1040 + 18)
        bars = tablet.bars()
        assert bars
        for bar in bars:
            address = cfg.bar_address(bar.index)
            assert address and address + bar.size <= FRAMEBUFFER_GPA
    finally:
        machine.close()
    assert not sock.exists()


def test_without_vnc_nothing_is_built(kernel) -> None:
    machine = build_vm(_config(kernel))
    try:
        assert not {"framebuffer", "tablet"} & set(machine.devices.ids())
        assert len(machine.vm._slot_sizes) == len(machine.memory.regions)
    finally:
        machine.close()


def test_failed_build_removes_the_socket(tmp_path) -> None:
    junk = tmp_path / "kernel"
    junk.write_bytes(b"\x7fELF" + b"\0" * 60)
    sock = tmp_path / "v.sock"
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(ImageError):
        build_vm(_config(junk, VncConfig(f"unix:{sock}")))
    assert not sock.exists() and set(os.listdir("/proc/self/fd")) == before
