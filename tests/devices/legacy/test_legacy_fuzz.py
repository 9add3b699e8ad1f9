"""Every legacy device against hostile guest accesses: any offset, any size.

Rule 6: guest input never makes a device raise, and a read always returns
exactly the bytes asked for.
"""

from hypothesis import given, settings
from hypothesis import strategies as st

from kvmlite.devices.legacy.acpi_pm import AcpiPm
from kvmlite.devices.legacy.debug_exit import DebugExit
from kvmlite.devices.legacy.i8042 import I8042
from kvmlite.devices.legacy.rtc import CmosRtc
from kvmlite.devices.legacy.serial import Serial16550
from kvmlite.testing.interrupts import RecordingInterrupt


def make_devices():
    irq = RecordingInterrupt()
    return [
        (Serial16550(irq, lambda b: None), 8),
        (I8042(lambda: None, irq, irq), 5),
        (CmosRtc(), 2),
        (AcpiPm(irq, lambda: None, lambda t: None), 12),
        (DebugExit(lambda v: None), 4),
    ]


access = st.tuples(
    st.booleans(),
    st.integers(0, 15),
    st.sampled_from([1, 2, 4, 8]),
    st.binary(min_size=8, max_size=8),
)


@settings(max_examples=120)
@given(st.lists(access, max_size=120))
def test_hostile_accesses(ops):
    for dev, _size in make_devices():
        for is_write, offset, size, payload in ops:
            if is_write:
                dev.write(offset, payload[:size])
            else:
                assert len(dev.read(offset, size)) == size
