"""virtio-console with multiport (virtio 1.2 §5.3, "Console Device").

Theory of operation
-------------------
Port 0 is the console (hvc0 in the guest); ports 1..N are named ports that
appear as /dev/vportXpN (and /dev/virtio-ports/<name> through udev). Each
port has a char backend (``write``, ``read_available``; the same backends as
the serial console). Queues, with VIRTIO_CONSOLE_F_MULTIPORT::

    0 receiveq(port 0)   1 transmitq(port 0)
    2 control receiveq   3 control transmitq
    2+2N receiveq(port N)   3+2N transmitq(port N)    for N >= 1

Control protocol (§5.3.6.2): the driver sends DEVICE_READY; the device
announces every port with DEVICE_ADD; the driver answers PORT_READY for
each; the device then sends CONSOLE_PORT for port 0 or PORT_NAME for a
named port, and PORT_OPEN (the host side is connected). The driver reports
its own opens and closes with PORT_OPEN. Device-to-driver control messages
wait in ``ctrl_pending`` while the driver has no control receive buffers.

Input and back-pressure: the VMM calls ``handle_input(port)`` when the
backend's fd is readable. Bytes are buffered per port (up to
``INPUT_BUFFER`` bytes) and copied into the guest's receive buffers as they
arrive. When the buffer is full ``handle_input`` returns False and does not
read: the VMM should stop watching that fd until the device calls
``input_ready_handler(port)``, which happens once the guest has supplied
receive buffers and the backlog drained.

Output is bounded too: a transmit chain goes to the backend in pieces of
``TX_CHUNK`` bytes and a control message is read as its first 8 bytes, so
however long a chain the guest builds, kvmlite holds at most ``TX_CHUNK``
bytes of it (tests/devices/virtio/test_virtio_budget.py).
"""

from __future__ import annotations

import collections
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from kvmlite.devices.persist import Persist
from kvmlite.devices.virtio.device import VirtioDevice, VirtioDeviceState
from kvmlite.devices.virtio.spec import VIRTIO_ID_CONSOLE, bit
from kvmlite.errors import ConfigError, StateError

VIRTIO_CONSOLE_F_SIZE = 0
VIRTIO_CONSOLE_F_MULTIPORT = 1
VIRTIO_CONSOLE_F_EMERG_WRITE = 2

VIRTIO_CONSOLE_DEVICE_READY = 0
VIRTIO_CONSOLE_DEVICE_ADD = 1
VIRTIO_CONSOLE_DEVICE_REMOVE = 2
VIRTIO_CONSOLE_PORT_READY = 3
VIRTIO_CONSOLE_CONSOLE_PORT = 4
VIRTIO_CONSOLE_RESIZE = 5
VIRTIO_CONSOLE_PORT_OPEN = 6
VIRTIO_CONSOLE_PORT_NAME = 7

CONTROL = struct.Struct("<IHH")  # struct virtio_console_control
CONFIG = struct.Struct("<HHII")  # cols, rows, max_nr_ports, emerg_wr
CTRL_RX, CTRL_TX = 2, 3
INPUT_BUFFER = 64 * 1024
#: The most guest output held at once: a transmit chain is copied out in pieces of this size.
TX_CHUNK = 64 * 1024
MAX_CTRL_PENDING = 256


class CharBackendLike(Protocol):
    """What virtio-console needs of ``kvmlite.backends.char`` backends."""

    def write(self, data: bytes) -> None: ...
    def read_available(self) -> bytes: ...


@dataclass(frozen=True)
class ConsolePortState:
    guest_ready: bool
    guest_open: bool
    pending_input: bytes


@dataclass(frozen=True)
class VirtioConsoleState:
    device: VirtioDeviceState
    ports: tuple[ConsolePortState, ...]
    ctrl_pending: tuple[bytes, ...]


class ConsolePort:
    def __init__(self, port_id: int, name: str | None, backend: CharBackendLike | None) -> None:
        self.id = port_id
        self.name = name
        self.backend = backend
        self.guest_ready = False
        self.guest_open = False
        self.pending = bytearray()
        self.throttled = False


def rx_queue(port: int) -> int:
    return 0 if port == 0 else 2 + 2 * port


def tx_queue(port: int) -> int:
    return 1 if port == 0 else 3 + 2 * port


class VirtioConsole(VirtioDevice, Persist[VirtioConsoleState]):
    """A console port plus named ports, each over a char backend."""

    device_type = VIRTIO_ID_CONSOLE

    def __init__(
        self,
        console: CharBackendLike | None,
        ports: Sequence[tuple[str, CharBackendLike]] = (),
        *,
        queue_size: int = 64,
        name: str = "virtio-console",
    ) -> None:
        names = [n for n, _ in ports]
        if len(set(names)) != len(names) or any(not n or "\0" in n for n in names):
            raise ConfigError(f"{name}: port names must be unique and non-empty: {names}")
        nports = 1 + len(ports)
        if nports > 31:
            raise ConfigError(f"{name}: at most 30 named ports")
        features = bit(VIRTIO_CONSOLE_F_MULTIPORT) | bit(VIRTIO_CONSOLE_F_EMERG_WRITE)
        super().__init__(name=name, queue_sizes=[queue_size] * (2 * nports + 2), features=features)
        self.ports = [ConsolePort(0, None, console)] + [
            ConsolePort(i + 1, n, b) for i, (n, b) in enumerate(ports)
        ]
        self.ctrl_pending: collections.deque[bytes] = collections.deque()
        self.input_ready_handler: Callable[[int], None] | None = None

    @property
    def multiport(self) -> bool:
        return self.has_feature(VIRTIO_CONSOLE_F_MULTIPORT)

    # -- config --------------------------------------------------------------------------

    def config_bytes(self) -> bytes:
        return CONFIG.pack(0, 0, len(self.ports), 0)

    def write_config(self, offset: int, data: bytes) -> None:
        # emerg_wr (§5.3.4): one character for port 0, usable before the queues.
        if offset == 8 and len(data) == 4 and self.ports[0].backend is not None:
            self.ports[0].backend.write(bytes([data[0]]))

    # -- queues ----------------------------------------------------------------------------

    def _port_of_queue(self, index: int) -> tuple[ConsolePort | None, bool]:
        """(port, is_transmit) for data queue ``index``."""
        if index in (0, 1):
            return self.ports[0], index == 1
        if index < 4 or not self.multiport:
            return None, False
        pid = (index - 2) // 2
        return (self.ports[pid] if pid < len(self.ports) else None), index % 2 == 1

    def handle_queue(self, index: int) -> None:
        if self.multiport and index == CTRL_TX:
            self._handle_control_tx()
        elif self.multiport and index == CTRL_RX:
            self._flush_control()
        else:
            port, transmit = self._port_of_queue(index)
            if port is None:
                return
            if transmit:
                self._handle_output(port, index)
            else:
                self._flush_input(port)

    def _handle_output(self, port: ConsolePort, index: int) -> None:
        q, mem = self.queues[index], self.memory
        assert mem is not None
        while (chain := q.pop(mem)) is not None:
            if port.backend is not None:
                # In pieces: one chain may be 64 descriptors that each cover all of RAM.
                for piece in chain.iter_readable(mem, TX_CHUNK):
                    port.backend.write(piece)
            q.add_used(mem, chain.head, 0)
        self.signal_queue(index)

    # -- host input ---------------------------------------------------------------------------

    def handle_input(self, port_id: int) -> bool:
        """The port's backend fd is readable. False: stop watching it until input_ready."""
        with self.lock:
            port = self.ports[port_id]
            if len(port.pending) >= INPUT_BUFFER:
                port.throttled = True
                return False
            if port.backend is not None:
                port.pending += port.backend.read_available()
            self.process_queue(rx_queue(port_id))
            if len(port.pending) >= INPUT_BUFFER:
                port.throttled = True
                return False
            return True

    def _flush_input(self, port: ConsolePort) -> None:
        index = rx_queue(port.id)
        if port.id and not self.multiport:
            return
        if self.multiport and not port.guest_open:
            # Linux drops data that reaches a port it has not connected yet
            # (virtio_console.c in_intr -> discard_port_data); it sends
            # PORT_OPEN once it is connected (console ports included, from
            # init_port_console), and that flushes what waited here.
            return
        q, mem = self.queues[index], self.memory
        assert mem is not None
        moved = False
        while port.pending:
            chain = q.pop(mem)
            if chain is None:
                break
            n = chain.write_all(mem, bytes(port.pending[: max(chain.writable_len, 0)]))
            del port.pending[:n]
            q.add_used(mem, chain.head, n)
            moved = True
        if moved:
            self.signal_queue(index)
        if port.throttled and len(port.pending) < INPUT_BUFFER:
            port.throttled = False
            if self.input_ready_handler is not None:
                self.input_ready_handler(port.id)

    # -- control queue ---------------------------------------------------------------------------

    def _send_control(self, port_id: int, event: int, value: int, extra: bytes = b"") -> None:
        if len(self.ctrl_pending) >= MAX_CTRL_PENDING:
            return  # a driver that never reads control messages cannot make us grow
        self.ctrl_pending.append(CONTROL.pack(port_id, event, value) + extra)
        self._flush_control()

    def _flush_control(self) -> None:
        q, mem = self.queues[CTRL_RX], self.memory
        assert mem is not None
        sent = False
        while self.ctrl_pending:
            chain = q.pop(mem)
            if chain is None:
                break
            msg = self.ctrl_pending.popleft()
            n = chain.write_all(mem, msg)
            q.add_used(mem, chain.head, n)
            sent = True
        if sent:
            self.signal_queue(CTRL_RX)

    def _handle_control_tx(self) -> None:
        q, mem = self.queues[CTRL_TX], self.memory
        assert mem is not None
        msgs = []
        while (chain := q.pop(mem)) is not None:
            msgs.append(chain.read_prefix(mem, CONTROL.size))
            q.add_used(mem, chain.head, 0)
        self.signal_queue(CTRL_TX)
        for raw in msgs:
            if len(raw) == CONTROL.size:
                self._control_message(*CONTROL.unpack(raw))

    def _control_message(self, port_id: int, event: int, value: int) -> None:
        if event == VIRTIO_CONSOLE_DEVICE_READY:
            if value == 1:
                for p in self.ports:
                    self._send_control(p.id, VIRTIO_CONSOLE_DEVICE_ADD, 1)
            return
        if port_id >= len(self.ports):
            return  # a port we never announced
        port = self.ports[port_id]
        if event == VIRTIO_CONSOLE_PORT_READY:
            port.guest_ready = value == 1
            if not port.guest_ready:
                return
            if port.id == 0:
                self._send_control(0, VIRTIO_CONSOLE_CONSOLE_PORT, 1)
            elif port.name is not None:
                self._send_control(port.id, VIRTIO_CONSOLE_PORT_NAME, 1, port.name.encode())
            self._send_control(port.id, VIRTIO_CONSOLE_PORT_OPEN, 1)
        elif event == VIRTIO_CONSOLE_PORT_OPEN:
            port.guest_open = value == 1
            if port.guest_open:
                self._flush_input(port)

    # -- lifecycle and state -----------------------------------------------------------------------

    def on_activate(self) -> None:
        for p in self.ports:
            if p.pending:
                self.process_queue(rx_queue(p.id))

    def on_reset(self) -> None:
        self.ctrl_pending.clear()
        for p in self.ports:
            p.guest_ready = p.guest_open = False

    def save(self) -> VirtioConsoleState:
        with self.lock:
            return VirtioConsoleState(
                self.save_base(),
                tuple(
                    ConsolePortState(p.guest_ready, p.guest_open, bytes(p.pending))
                    for p in self.ports
                ),
                tuple(self.ctrl_pending),
            )

    def load_state(self, state: VirtioConsoleState) -> None:
        with self.lock:
            if len(state.ports) != len(self.ports):
                raise StateError(
                    f"{self.name}: {len(state.ports)} ports in the snapshot, this device has"
                    f" {len(self.ports)}: restore with the same console ports"
                )
            self.restore_base(state.device)
            for p, ps in zip(self.ports, state.ports, strict=True):
                p.guest_ready, p.guest_open = ps.guest_ready, ps.guest_open
                p.pending = bytearray(ps.pending_input)
            self.ctrl_pending = collections.deque(state.ctrl_pending)
