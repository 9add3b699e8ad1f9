"""Hostile guests on the PCI side: random config and BAR accesses never raise or leak."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kvmlite.devices.pci import PciRoot
from kvmlite.devices.virtio.pci import BAR_SIZE, VirtioPciDevice
from kvmlite.devices.virtio.rng import VirtioRng
from kvmlite.memory import GuestMemory

GUARD = 4096

access = st.tuples(
    st.sampled_from(["cfg", "bar", "io", "ecam"]),
    st.integers(0, 0x1FFFF),
    st.sampled_from([1, 2, 4, 8]),
    st.binary(min_size=8, max_size=8),
    st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(accesses=st.lists(access, max_size=60))
def test_random_register_traffic(accesses: list) -> None:
    buf = bytearray(b"\x5a") * ((1 << 20) + 2 * GUARD)
    mem = GuestMemory.from_buffer(memoryview(buf)[GUARD:-GUARD], 0)
    mem.fill(0, 1 << 20)
    dev = VirtioPciDevice(VirtioRng(), mem, signal_msi=lambda a, d: None)
    root = PciRoot()
    root.add_device(dev)
    root.allocate_bars((0xC000_0000, 0x100000))
    root.connect_intx(lambda gsi: _Line())
    for kind, offset, size, data, is_write in accesses:
        data = data[:size]
        if kind == "cfg":
            if is_write:
                dev.write_config(offset & 0xFFF, data)
            else:
                dev.read_config(offset & 0xFFF, size)
        elif kind == "bar":
            if is_write:
                dev.write_bar(0, offset % BAR_SIZE, data)
            else:
                assert len(dev.read_bar(0, offset % BAR_SIZE, size)) == size
        elif kind == "io":
            if is_write:
                root.config_io.write(offset % 8, data[: min(size, 4)])
            else:
                root.config_io.read(offset % 8, min(size, 4))
        else:
            if is_write:
                root.ecam.write(offset, data)
            else:
                assert len(root.ecam.read(offset, size)) == size
        dev.notify(offset % 3)
    assert dev.read_config(0, 4) == 0x1044_1AF4
    assert buf[:GUARD] == b"\x5a" * GUARD and buf[-GUARD:] == b"\x5a" * GUARD


class _Line:
    def set_level(self, level: bool) -> None:
        pass
