"""virtio-input as an absolute pointer, a tablet (virtio 1.2 §5.8).

Two queues: eventq (0), where the driver posts writable buffers and the
device returns one ``virtio_input_event`` (le16 type, le16 code, le32 value;
the evdev event without a timestamp) in each, and statusq (1), where the
driver sends LED/feedback events, which a tablet consumes and ignores.

The config space (§5.8.4) is a window the driver selects with ``select``
and ``subsel`` (bytes 0 and 1); ``size`` (byte 2) says how many bytes of the
128-byte union at offset 8 are valid for that selection: the name, serial,
device ids, property bits, the supported codes of each event type (EV_BITS,
subsel = type) and each absolute axis' range (ABS_INFO, subsel = axis).

Theory of operation: ``pointer(x, y, buttons)`` turns a position in axis
units (0..``ABS_MAX``) and a button mask (bit 0 left, 1 middle, 2 right, as
RFB's) into ABS_X, ABS_Y, BTN_* changes and a SYN_REPORT. Events wait in a
bounded queue (oldest dropped past ``PENDING_LIMIT``) until the driver has
buffers; a SYN_REPORT-terminated group is never split by the limit's drop
because whole groups are dropped.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

from kvmlite.devices.virtio.device import VirtioDevice, VirtioDeviceState

VIRTIO_ID_INPUT = 18
VIRTIO_INPUT_CFG_UNSET = 0x00
VIRTIO_INPUT_CFG_ID_NAME = 0x01
VIRTIO_INPUT_CFG_ID_SERIAL = 0x02
VIRTIO_INPUT_CFG_ID_DEVIDS = 0x03
VIRTIO_INPUT_CFG_PROP_BITS = 0x10
VIRTIO_INPUT_CFG_EV_BITS = 0x11
VIRTIO_INPUT_CFG_ABS_INFO = 0x12
CONFIG_UNION_OFFSET = 8
CONFIG_UNION_SIZE = 128

# Linux input-event-codes.h
EV_SYN, EV_KEY, EV_ABS = 0x00, 0x01, 0x03
SYN_REPORT = 0
ABS_X, ABS_Y = 0x00, 0x01
BTN_LEFT, BTN_RIGHT, BTN_MIDDLE = 0x110, 0x111, 0x112
BUS_VIRTUAL = 0x06
#: Axis range of the tablet: 0..ABS_MAX on both axes, scaled by the VMM.
ABS_MAX = 0x7FFF
#: RFB button mask bit -> evdev button.
BUTTONS = ((0, BTN_LEFT), (1, BTN_MIDDLE), (2, BTN_RIGHT))
PENDING_LIMIT = 1024
EVENT = struct.Struct("<HHI")


def _bitmap(codes: list[int]) -> bytes:
    out = bytearray(max(codes) // 8 + 1)
    for c in codes:
        out[c // 8] |= 1 << (c % 8)
    return bytes(out)


@dataclass(frozen=True)
class VirtioInputState:
    device: VirtioDeviceState
    select: int
    subsel: int
    buttons: int
    pending: tuple[tuple[int, int, int], ...]


class VirtioTablet(VirtioDevice):
    """An absolute pointing device with three buttons."""

    device_type = VIRTIO_ID_INPUT
    State = VirtioInputState

    def __init__(self, *, name: str = "virtio-tablet", queue_size: int = 64) -> None:
        super().__init__(name=name, queue_sizes=[queue_size, queue_size])
        self.select = self.subsel = 0
        self.buttons = 0
        self.pending: deque[tuple[int, int, int]] = deque()

    # -- config space ---------------------------------------------------------------

    def _selected(self) -> bytes:
        s, sub = self.select, self.subsel
        if s == VIRTIO_INPUT_CFG_ID_NAME and sub == 0:
            return b"kvmlite tablet"
        if s == VIRTIO_INPUT_CFG_ID_SERIAL and sub == 0:
            return b"kvmlite-0"
        if s == VIRTIO_INPUT_CFG_ID_DEVIDS and sub == 0:
            return struct.pack("<HHHH", BUS_VIRTUAL, 0x0627, 0x0003, 1)
        if s == VIRTIO_INPUT_CFG_EV_BITS and sub == EV_KEY:
            return _bitmap([BTN_LEFT, BTN_RIGHT, BTN_MIDDLE])
        if s == VIRTIO_INPUT_CFG_EV_BITS and sub == EV_ABS:
            return _bitmap([ABS_X, ABS_Y])
        if s == VIRTIO_INPUT_CFG_ABS_INFO and sub in (ABS_X, ABS_Y):
            return struct.pack("<IIIII", 0, ABS_MAX, 0, 0, 0)  # min max fuzz flat res
        return b""

    def config_bytes(self) -> bytes:
        data = self._selected()
        head = bytes((self.select, self.subsel, len(data))) + bytes(5)
        return head + data.ljust(CONFIG_UNION_SIZE, b"\0")

    def write_config(self, offset: int, data: bytes) -> None:
        with self.lock:
            for i, b in enumerate(data):
                if offset + i == 0:
                    self.select = b
                elif offset + i == 1:
                    self.subsel = b

    # -- events ---------------------------------------------------------------------

    def pointer(self, x: int, y: int, buttons: int) -> None:
        """The pointer is at (x, y) in 0..ABS_MAX with RFB ``buttons`` held."""
        x, y = min(max(x, 0), ABS_MAX), min(max(y, 0), ABS_MAX)
        events = [(EV_ABS, ABS_X, x), (EV_ABS, ABS_Y, y)]
        for bit, code in BUTTONS:
            if (buttons ^ self.buttons) >> bit & 1:
                events.append((EV_KEY, code, buttons >> bit & 1))
        events.append((EV_SYN, SYN_REPORT, 0))
        with self.lock:
            self.buttons = buttons & 0x7
            while self.pending and len(self.pending) + len(events) > PENDING_LIMIT:
                self._drop_group()
            self.pending.extend(events)
            self.process_queue(0)  # guest errors there mark the device broken, never raise

    def _drop_group(self) -> None:
        while self.pending:
            if self.pending.popleft()[:2] == (EV_SYN, SYN_REPORT):
                return

    def handle_queue(self, index: int) -> None:
        mem = self.memory
        assert mem is not None
        if index == 0:
            self._flush()
            return
        q = self.queues[1]  # statusq: LEDs and the like; a tablet has none
        while (chain := q.pop(mem)) is not None:
            q.add_used(mem, chain.head, 0)
            self.signal_queue(1)

    def _flush(self) -> None:
        mem = self.memory
        if mem is None or self.broken or not self.queues:
            return
        q = self.queues[0]
        sent = False
        while self.pending:
            chain = q.pop(mem)
            if chain is None:
                break
            written = chain.write_all(mem, EVENT.pack(*self.pending[0]))
            if written < EVENT.size:
                q.add_used(mem, chain.head, 0)
                self.device_error(f"event buffer of {chain.writable_len} bytes (needs 8)")
                return
            self.pending.popleft()
            q.add_used(mem, chain.head, written)
            sent = True
        if sent:
            self.signal_queue(0)

    def on_reset(self) -> None:
        self.pending.clear()
        self.select = self.subsel = 0

    # -- snapshot -----------------------------------------------------------------------

    def save(self) -> VirtioInputState:
        with self.lock:
            return VirtioInputState(
                self.save_base(), self.select, self.subsel, self.buttons, tuple(self.pending)
            )

    def restore(self, state: VirtioInputState) -> None:
        with self.lock:
            self.restore_base(state.device)
            self.select, self.subsel = state.select & 0xFF, state.subsel & 0xFF
            self.buttons = state.buttons & 0x7
            self.pending = deque(state.pending[-PENDING_LIMIT:])
