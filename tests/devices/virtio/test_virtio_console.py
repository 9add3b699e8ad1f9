"""virtio-console: console output/input, the multiport control protocol, back-pressure, state."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from virtio_fakes import FakeChar

from kvmlite.devices.virtio.console import (
    INPUT_BUFFER,
    VIRTIO_CONSOLE_CONSOLE_PORT,
    VIRTIO_CONSOLE_DEVICE_ADD,
    VIRTIO_CONSOLE_DEVICE_READY,
    VIRTIO_CONSOLE_F_MULTIPORT,
    VIRTIO_CONSOLE_PORT_NAME,
    VIRTIO_CONSOLE_PORT_OPEN,
    VIRTIO_CONSOLE_PORT_READY,
    VirtioConsole,
    VirtioConsoleState,
)
from kvmlite.devices.virtio.spec import VIRTIO_F_VERSION_1, bit
from kvmlite.errors import ConfigError, StateError
from kvmlite.state import dumps, loads
from kvmlite.testing import MockDriver, attach_drivers, bytearray_memory


def ctrl(port: int, event: int, value: int) -> bytes:
    return struct.pack("<IHH", port, event, value)


def read_ctrl(drv: MockDriver) -> list[tuple[int, int, int, bytes]]:
    out = []
    for u in drv.get_used():
        port, event, value = struct.unpack("<IHH", u.written[:8])
        out.append((port, event, value, u.written[8 : u.length]))
    return out


def setup(ports: int = 1) -> tuple[VirtioConsole, FakeChar, list[FakeChar], list[MockDriver]]:
    con = FakeChar()
    named = [FakeChar() for _ in range(ports)]
    dev = VirtioConsole(con, [(f"org.test.{i}", b) for i, b in enumerate(named)], queue_size=16)
    drivers, _, _ = attach_drivers(dev, bytearray_memory(4 << 20))
    return dev, con, named, drivers


def guest_opens(drv: list[MockDriver], port: int) -> None:
    """The guest's PORT_OPEN for ``port``, as Linux sends once it connected it."""
    for _ in range(4):
        drv[2].add_chain([], [256])
    drv[3].add_chain([ctrl(port, VIRTIO_CONSOLE_PORT_OPEN, 1)])
    drv[3].kick()


def test_input_waits_for_the_guest_to_open_the_port() -> None:
    # Linux discards data reaching a port it has not connected (in_intr ->
    # discard_port_data), so host input must wait for PORT_OPEN.
    dev, con, _, drv = setup(0)
    con.pending += b"early"
    drv[0].add_chain([], [16])
    assert dev.handle_input(0) is True
    drv[0].kick()
    assert drv[0].get_used() == []  # held back: the port is not open yet
    guest_opens(drv, 0)
    assert [u.written[: u.length] for u in drv[0].get_used()] == [b"early"]


def test_config_and_queue_count() -> None:
    dev, *_ = setup(2)
    assert dev.num_queues == 8
    assert struct.unpack("<HHII", dev.read_config(0, 12)) == (0, 0, 3, 0)
    with pytest.raises(ConfigError):
        VirtioConsole(None, [("a", FakeChar()), ("a", FakeChar())])


def test_console_output_input_and_emergency_write() -> None:
    dev, con, _, drv = setup(0)
    drv[1].add_chain([b"hello ", b"world\n"])
    drv[1].kick()
    assert con.out == b"hello world\n"
    assert [u.length for u in drv[1].get_used()] == [0]
    dev.write_config(8, struct.pack("<I", ord("!")))
    assert con.out.endswith(b"!")
    guest_opens(drv, 0)
    con.pending += b"typed"
    drv[0].add_chain([], [3])
    drv[0].add_chain([], [16])
    assert dev.handle_input(0) is True
    assert [u.written[: u.length] for u in drv[0].get_used()] == [b"typ", b"ed"]


def test_multiport_control_handshake() -> None:
    dev, con, named, drv = setup(1)
    assert dev.multiport
    for _ in range(8):
        drv[2].add_chain([], [256])
    drv[3].add_chain([ctrl(0, VIRTIO_CONSOLE_DEVICE_READY, 1)])
    drv[3].kick()
    assert [m[:3] for m in read_ctrl(drv[2])] == [
        (0, VIRTIO_CONSOLE_DEVICE_ADD, 1),
        (1, VIRTIO_CONSOLE_DEVICE_ADD, 1),
    ]
    drv[3].add_chain([ctrl(0, VIRTIO_CONSOLE_PORT_READY, 1)])
    drv[3].add_chain([ctrl(1, VIRTIO_CONSOLE_PORT_READY, 1)])
    drv[3].kick()
    assert read_ctrl(drv[2]) == [
        (0, VIRTIO_CONSOLE_CONSOLE_PORT, 1, b""),
        (0, VIRTIO_CONSOLE_PORT_OPEN, 1, b""),
        (1, VIRTIO_CONSOLE_PORT_NAME, 1, b"org.test.0"),
        (1, VIRTIO_CONSOLE_PORT_OPEN, 1, b""),
    ]
    drv[3].add_chain([ctrl(1, VIRTIO_CONSOLE_PORT_OPEN, 1)])
    drv[3].add_chain([ctrl(77, VIRTIO_CONSOLE_PORT_OPEN, 1)])  # unknown port: ignored
    drv[3].add_chain([b"\x01\x02"])  # short message: ignored
    drv[3].kick()
    assert dev.ports[1].guest_open and not dev.broken
    # Named port data uses queues 4 (rx) and 5 (tx).
    drv[5].add_chain([b"to host"])
    drv[5].kick()
    assert named[0].out == b"to host" and con.out == b""
    named[0].pending += b"to guest"
    drv[4].add_chain([], [64])
    dev.handle_input(1)
    [u] = drv[4].get_used()
    assert u.written[: u.length] == b"to guest"


def test_control_messages_wait_for_buffers() -> None:
    dev, _, _, drv = setup(1)
    drv[3].add_chain([ctrl(0, VIRTIO_CONSOLE_DEVICE_READY, 1)])
    drv[3].kick()
    assert len(dev.ctrl_pending) == 2 and read_ctrl(drv[2]) == []
    drv[2].add_chain([], [64])
    drv[2].kick()
    assert [m[0] for m in read_ctrl(drv[2])] == [0] and len(dev.ctrl_pending) == 1


def test_input_back_pressure() -> None:
    dev, con, _, drv = setup(0)
    guest_opens(drv, 0)
    ready: list[int] = []
    dev.input_ready_handler = ready.append
    con.pending += b"x" * INPUT_BUFFER
    assert dev.handle_input(0) is False  # no guest buffers, backlog full
    con.pending += b"more"
    assert dev.handle_input(0) is False and con.pending == b"more"  # did not read
    drv[0].add_chain([], [4096])
    drv[0].kick()
    assert ready == [0]
    assert dev.handle_input(0) is True


def test_without_multiport_only_port_zero() -> None:
    con = FakeChar()
    other = FakeChar()
    dev = VirtioConsole(con, [("x", other)], queue_size=16)
    drivers, _, _ = attach_drivers(dev, bytearray_memory(4 << 20), features=bit(VIRTIO_F_VERSION_1))
    assert not dev.has_feature(VIRTIO_CONSOLE_F_MULTIPORT)
    drivers[5].add_chain([b"ignored"])
    drivers[5].kick()
    drivers[3].add_chain([ctrl(0, VIRTIO_CONSOLE_DEVICE_READY, 1)])
    drivers[3].kick()
    assert other.out == b"" and not dev.ctrl_pending


def test_state_round_trip() -> None:
    dev, con, _, drv = setup(1)
    drv[3].add_chain([ctrl(0, VIRTIO_CONSOLE_DEVICE_READY, 1)])
    drv[3].kick()
    con.pending += b"buffered"
    dev.handle_input(0)
    state = loads(VirtioConsoleState, dumps(dev.save()))
    assert state.ports[0].pending_input == b"buffered" and len(state.ctrl_pending) == 2
    dev2 = VirtioConsole.restore(
        {"console": FakeChar(), "ports": [("org.test.0", FakeChar())]}, state
    )
    # Activation comes back when the transport re-activates the device.
    expected = VirtioConsoleState(
        dataclasses.replace(state.device, activated=False), state.ports, state.ctrl_pending
    )
    assert dev2.save() == expected
    with pytest.raises(StateError, match="ports"):
        VirtioConsole.restore({"console": FakeChar()}, state)
