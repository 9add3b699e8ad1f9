"""virtio-scsi (virtio 1.2 §5.6, "SCSI Host Device") over a kvmlite SCSI target.

Theory of operation
-------------------
Queues: 0 control, 1 event, 2.. request (§5.6.2). The device is one SCSI
target (``target_id``, channel 0) holding the LUNs of a
``kvmlite.devices.scsi.ScsiTarget``; a request for another target is
answered VIRTIO_SCSI_S_BAD_TARGET, one for an absent LUN goes to the target
model, which answers it as SPC-4 asks (INQUIRY peripheral qualifier 3,
LOGICAL UNIT NOT SUPPORTED).

A request chain is two byte streams (§2.6.4: no framing assumed): readable
``virtio_scsi_req_cmd`` header + CDB (``cdb_size`` bytes) + data-out, then
writable ``virtio_scsi_resp_cmd`` header + sense (``sense_size`` bytes) +
data-in. The data parts are handed to the LUN as memoryviews of guest RAM,
so reads land in place. The command runs on the ``IoExecutor`` (backend
reads and writes block); its completion writes the response under
``self.lock`` on the device's owner thread, as virtio-blk's do. A header
too short to hold the response cannot be answered and is a device error
(NEEDS_RESET); everything else the guest gets wrong is answered (a short
request header: VIRTIO_SCSI_S_FAILURE; a transfer longer than the buffers:
VIRTIO_SCSI_S_OVERRUN; bad CDBs: CHECK CONDITION with sense).

Events (§5.6.6.3): the driver keeps writable 16-byte buffers in the event
queue. The device pops one only when it has something to say, so no buffer
is ever held; with none available the event waits in a bounded list and,
past that, the next delivered event carries VIRTIO_SCSI_T_EVENTS_MISSED.
A host-side change of a LUN (``ScsiLun.unit_attention_handler``: a new
medium, an ejected one) is sent as VIRTIO_SCSI_T_PARAM_CHANGE with the unit
attention's ASC/ASCQ when VIRTIO_SCSI_F_CHANGE was negotiated, and as
VIRTIO_SCSI_T_ASYNC_NOTIFY (media change class) to a driver that subscribed
with VIRTIO_SCSI_T_AN_SUBSCRIBE. ``add_lun``/``remove_lun`` send transport
reset events (RESCAN / REMOVED) with VIRTIO_SCSI_F_HOTPLUG. The control
queue lives in scsi_ctrl.py.

State: the target's state (CD-ROM trays, unit attentions), the driver's
``sense_size``/``cdb_size``, AN subscriptions, undelivered events, and the
in-flight requests as (queue, head) pairs re-submitted on activation
(like virtio-blk).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kvmlite.devices.persist import Persist
from kvmlite.devices.scsi import ScsiLun, ScsiResult, ScsiTarget, ScsiTargetState, Sense
from kvmlite.devices.scsi.cdrom import ScsiCdrom
from kvmlite.devices.scsi.sense import CHECK_CONDITION
from kvmlite.devices.scsi.target import decode_lun
from kvmlite.devices.virtio import scsi_ctrl
from kvmlite.devices.virtio.blk import slice_views
from kvmlite.devices.virtio.device import VirtioDevice, VirtioDeviceState
from kvmlite.devices.virtio.executor import IoExecutor, SyncExecutor
from kvmlite.devices.virtio.queue import ChainError, DescriptorChain, QueueError
from kvmlite.devices.virtio.scsi_spec import (
    CMD_REQ_HEAD,
    CMD_RESP_HEAD,
    CONTROL_QUEUE,
    EVENT,
    EVENT_QUEUE,
    FIRST_REQUEST_QUEUE,
    VIRTIO_ID_SCSI,
    VIRTIO_SCSI_CDB_SIZE,
    VIRTIO_SCSI_EVT_ASYNC_MEDIA_CHANGE,
    VIRTIO_SCSI_EVT_RESET_REMOVED,
    VIRTIO_SCSI_EVT_RESET_RESCAN,
    VIRTIO_SCSI_F_CHANGE,
    VIRTIO_SCSI_F_HOTPLUG,
    VIRTIO_SCSI_S_BAD_TARGET,
    VIRTIO_SCSI_S_FAILURE,
    VIRTIO_SCSI_S_OK,
    VIRTIO_SCSI_S_OVERRUN,
    VIRTIO_SCSI_SENSE_SIZE,
    VIRTIO_SCSI_T_ASYNC_NOTIFY,
    VIRTIO_SCSI_T_EVENTS_MISSED,
    VIRTIO_SCSI_T_PARAM_CHANGE,
    VIRTIO_SCSI_T_TRANSPORT_RESET,
    VirtioScsiConfig,
    virtio_lun,
)
from kvmlite.devices.virtio.spec import bit
from kvmlite.errors import ConfigError, GuestMemoryError, StateError

log = logging.getLogger("kvmlite.devices.virtio")

#: Events kept while the driver has no event buffers; more are "missed".
MAX_PENDING_EVENTS = 64
MAX_SENSE_SIZE = 4096
MAX_LUN = 16383
#: Media changes are unit attentions with these ASCs (MMC-6 §4.1.6.1).
_MEDIA_ASCS = frozenset({0x28, 0x3A})


@dataclass(frozen=True)
class VirtioScsiState:
    device: VirtioDeviceState
    target: ScsiTargetState
    sense_size: int
    cdb_size: int
    #: LUN -> subscribed asynchronous notification classes
    subscriptions: dict[int, int]
    #: undelivered events: (event, lun field, reason)
    pending_events: tuple[tuple[int, bytes, int], ...]
    events_missed: bool
    inflight: tuple[tuple[int, int], ...]


class VirtioScsi(VirtioDevice, Persist[VirtioScsiState]):
    """A virtio-scsi host adapter with one target."""

    device_type = VIRTIO_ID_SCSI

    def __init__(
        self,
        target: ScsiTarget,
        *,
        num_queues: int = 1,
        queue_size: int = 128,
        executor: IoExecutor | None = None,
        target_id: int = 0,
        name: str = "virtio-scsi",
    ) -> None:
        if not 1 <= num_queues <= 64:
            raise ConfigError(f"{name}: num_queues {num_queues} must be 1..64")
        if not 0 <= target_id <= 255:
            raise ConfigError(f"{name}: target id {target_id} must be 0..255")
        features = bit(VIRTIO_SCSI_F_HOTPLUG) | bit(VIRTIO_SCSI_F_CHANGE)
        super().__init__(
            name=name, queue_sizes=[queue_size] * (FIRST_REQUEST_QUEUE + num_queues),
            features=features,
        )  # fmt: skip
        self.target = target
        self.target_id = target_id
        self.executor: IoExecutor = executor if executor is not None else SyncExecutor()
        self.sense_size = VIRTIO_SCSI_SENSE_SIZE
        self.cdb_size = VIRTIO_SCSI_CDB_SIZE
        self.subscriptions: dict[int, int] = {}
        self.pending_events: collections.deque[tuple[int, bytes, int]] = collections.deque()
        self.events_missed = False
        self.inflight: set[tuple[int, int]] = set()
        self._restored_inflight: tuple[tuple[int, int], ...] = ()
        self._generation = 0
        for n, unit in target.luns.items():
            self._watch(n, unit)

    # -- config space (§5.6.4) ------------------------------------------------------

    def config_bytes(self) -> bytes:
        c = VirtioScsiConfig()
        c.num_queues = self.num_queues - FIRST_REQUEST_QUEUE
        c.seg_max = max(1, min(self.queue_max_sizes) - 2)
        c.max_sectors = 0xFFFF
        c.cmd_per_lun = min(self.queue_max_sizes)
        c.event_info_size = EVENT.size
        c.sense_size = self.sense_size
        c.cdb_size = self.cdb_size
        c.max_channel = 0
        c.max_target = self.target_id
        c.max_lun = MAX_LUN
        return bytes(c)

    def write_config(self, offset: int, data: bytes) -> None:
        """The driver may set sense_size (offset 20) and cdb_size (offset 24)."""
        if len(data) != 4 or offset not in (20, 24):
            return
        value = int.from_bytes(data, "little")
        with self.lock:
            if offset == 20:
                self.sense_size = min(value, MAX_SENSE_SIZE)
            else:
                self.cdb_size = min(max(value, 6), 256)

    # -- queues -------------------------------------------------------------------------

    def handle_queue(self, index: int) -> None:
        if index == EVENT_QUEUE:
            self._deliver_events()
            return
        q = self.queues[index]
        mem = self.memory
        assert mem is not None
        while True:
            q.disable_notification(mem)
            while (chain := q.pop(mem)) is not None:
                if index == CONTROL_QUEUE:
                    scsi_ctrl.handle_control(self, chain)
                else:
                    self._start(index, chain)
            if not q.enable_notification(mem):
                break

    def complete(self, qi: int, head: int, used: int) -> None:
        """Put ``head`` on queue ``qi``'s used ring and interrupt the driver if it wants."""
        mem = self.memory
        assert mem is not None
        self.queues[qi].add_used(mem, head, used)
        self.signal_queue(qi)

    def resolve_lun(self, lun: bytes) -> tuple[bool, int | None]:
        """(addressed to this target, LUN number or None) of a request's lun field."""
        if lun[0] != 1 or lun[1] != self.target_id or any(lun[4:8]):
            return False, None
        return True, decode_lun(lun[2:4])

    def _start(self, qi: int, chain: DescriptorChain) -> None:
        mem = self.memory
        assert mem is not None
        readable = [d for d in chain.descriptors if not d.writable]
        writable = [d for d in chain.descriptors if d.writable and d.length]
        readable_len = sum(d.length for d in readable)
        writable_len = sum(d.length for d in writable)
        if writable_len < CMD_RESP_HEAD.size:
            raise ChainError(chain.head, "request has no room for a response")
        head_len = CMD_REQ_HEAD.size + self.cdb_size
        resp_len = CMD_RESP_HEAD.size + self.sense_size
        gen = self._generation
        key = (qi, chain.head)
        self.inflight.add(key)
        if readable_len < head_len:
            self._respond(qi, chain, writable, VIRTIO_SCSI_S_FAILURE, None, 0, gen)
            return
        raw = b"".join(bytes(v) for v in slice_views(mem, readable, 0, head_len))
        lun, _tag, _attr, _prio, _crn = CMD_REQ_HEAD.unpack_from(raw)
        cdb = raw[CMD_REQ_HEAD.size :]
        ours, lun_no = self.resolve_lun(lun)
        if not ours:
            self._respond(qi, chain, writable, VIRTIO_SCSI_S_BAD_TARGET, None, 0, gen)
            return
        out_len = readable_len - head_len
        in_len = max(writable_len - resp_len, 0)
        if out_len and in_len:  # bidirectional needs VIRTIO_SCSI_F_INOUT, not offered
            self._respond(qi, chain, writable, VIRTIO_SCSI_S_FAILURE, None, 0, gen)
            return
        data_out = slice_views(mem, readable, head_len, out_len)
        data_in = slice_views(mem, writable, resp_len, in_len)
        target = self.target

        def job() -> ScsiResult | None:
            return target.execute(lun_no, cdb, data_in, data_out)

        def completion(result: Any) -> None:
            if not isinstance(result, ScsiResult):  # the target never raises; a bug of ours
                log.error("%s: command failed: %r", self.name, result)
                self._finish(qi, chain, writable, VIRTIO_SCSI_S_FAILURE, None, in_len, gen)
                return
            response = VIRTIO_SCSI_S_OVERRUN if result.overrun else VIRTIO_SCSI_S_OK
            self._finish(qi, chain, writable, response, result, in_len, gen)

        # Data in the host's page cache (and every command without I/O) completes
        # here and now, without the round trip through an I/O thread (virtio-blk's
        # readv_nowait); the rest runs on the executor.
        done = target.execute(lun_no, cdb, data_in, data_out, nowait=True)
        if done is not None:
            completion(done)
            return
        self.executor.submit(job, completion)

    def _respond(
        self,
        qi: int,
        chain: DescriptorChain,
        writable: list,
        response: int,
        result: ScsiResult | None,
        in_len: int,
        gen: int,
    ) -> None:
        mem = self.memory
        assert mem is not None
        sense = b""
        status = 0
        data_len = 0
        if result is not None:
            status = result.status
            sense = result.sense[: self.sense_size] if status == CHECK_CONDITION else b""
            data_len = result.data_len
        resid = in_len - data_len if response == VIRTIO_SCSI_S_OK else in_len
        head = CMD_RESP_HEAD.pack(len(sense), resid, 0, status, response)
        stream = head + sense
        pos = 0
        for v in slice_views(mem, writable, 0, len(stream)):
            v[:] = stream[pos : pos + len(v)]
            pos += len(v)
        used = CMD_RESP_HEAD.size + self.sense_size + data_len
        self.inflight.discard((qi, chain.head))
        self.complete(qi, chain.head, min(used, sum(d.length for d in writable)))

    def _finish(
        self,
        qi: int,
        chain: DescriptorChain,
        writable: list,
        response: int,
        result: ScsiResult | None,
        in_len: int,
        gen: int,
    ) -> None:
        with self.lock:
            if gen != self._generation or not self.activated:
                return  # the device was reset while the command ran
            try:
                self._respond(qi, chain, writable, response, result, in_len, gen)
            except (QueueError, GuestMemoryError) as e:
                self.device_error(f"queue {qi}: {e}")

    # -- events (§5.6.6.3) -------------------------------------------------------------

    def post_event(self, event: int, lun: int, reason: int) -> None:
        """Queue an event for LUN ``lun`` and deliver what the driver has buffers for."""
        with self.lock:
            if len(self.pending_events) >= MAX_PENDING_EVENTS:
                self.events_missed = True
            else:
                self.pending_events.append((event, virtio_lun(self.target_id, lun), reason))
            if self.activated and not self.broken:
                try:
                    self._deliver_events()
                except (QueueError, GuestMemoryError) as e:
                    self.device_error(f"event queue: {e}")

    def _deliver_events(self) -> None:
        if not self.activated or len(self.queues) <= EVENT_QUEUE:
            return
        q = self.queues[EVENT_QUEUE]
        mem = self.memory
        assert mem is not None
        if not q.ready or not q.is_valid(mem):
            return
        sent = False
        while self.pending_events or self.events_missed:
            chain = q.pop(mem)
            if chain is None:
                break
            if chain.writable_len < EVENT.size:
                raise ChainError(chain.head, f"event buffer shorter than {EVENT.size} bytes")
            if self.pending_events:
                event, lun, reason = self.pending_events.popleft()
            else:
                event, lun, reason = 0, bytes(8), 0  # VIRTIO_SCSI_T_NO_EVENT + missed
            if self.events_missed:
                event |= VIRTIO_SCSI_T_EVENTS_MISSED
                self.events_missed = False
            chain.write_all(mem, EVENT.pack(event, lun, reason))
            q.add_used(mem, chain.head, EVENT.size)
            sent = True
        if sent:
            self.signal_queue(EVENT_QUEUE)

    def _watch(self, n: int, unit: ScsiLun) -> None:
        unit.unit_attention_handler = lambda sense: self._unit_attention(n, sense)

    def _unit_attention(self, n: int, sense: Sense) -> None:
        if self.has_feature(VIRTIO_SCSI_F_CHANGE):
            self.post_event(VIRTIO_SCSI_T_PARAM_CHANGE, n, sense.asc | sense.ascq << 8)
        if sense.asc in _MEDIA_ASCS and self.subscriptions.get(n, 0) & (
            VIRTIO_SCSI_EVT_ASYNC_MEDIA_CHANGE
        ):
            self.post_event(VIRTIO_SCSI_T_ASYNC_NOTIFY, n, VIRTIO_SCSI_EVT_ASYNC_MEDIA_CHANGE)

    def supported_notifications(self, n: int | None) -> int:
        """Asynchronous notification classes LUN ``n`` can report (§5.6.6.2.2)."""
        unit = self.target.luns.get(n) if n is not None else None
        return VIRTIO_SCSI_EVT_ASYNC_MEDIA_CHANGE if isinstance(unit, ScsiCdrom) else 0

    # -- hotplug ------------------------------------------------------------------------

    def add_lun(self, n: int, unit: ScsiLun) -> None:
        """Plug ``unit`` in as LUN ``n`` and tell the driver to rescan it."""
        with self.lock:
            if n in self.target.luns or not 0 <= n <= MAX_LUN:
                raise ConfigError(f"{self.name}: LUN {n} is in use or out of range")
            self.target.luns = dict(sorted({**self.target.luns, n: unit}.items()))
            self._watch(n, unit)
            if self.has_feature(VIRTIO_SCSI_F_HOTPLUG):
                self.post_event(VIRTIO_SCSI_T_TRANSPORT_RESET, n, VIRTIO_SCSI_EVT_RESET_RESCAN)

    def remove_lun(self, n: int) -> ScsiLun:
        """Unplug LUN ``n``; returns it (its backend stays the caller's to close)."""
        with self.lock:
            unit = self.target.luns.pop(n, None)
            if unit is None:
                raise ConfigError(f"{self.name}: there is no LUN {n}")
            unit.unit_attention_handler = None
            self.subscriptions.pop(n, None)
            if self.has_feature(VIRTIO_SCSI_F_HOTPLUG):
                self.post_event(VIRTIO_SCSI_T_TRANSPORT_RESET, n, VIRTIO_SCSI_EVT_RESET_REMOVED)
            return unit

    # -- lifecycle and state ---------------------------------------------------------

    def on_activate(self) -> None:
        restored, self._restored_inflight = self._restored_inflight, ()
        mem = self.memory
        assert mem is not None
        for qi, head in restored:
            try:
                self._start(qi, self.queues[qi].chain_at(mem, head))
            except (QueueError, GuestMemoryError, IndexError) as e:
                self.device_error(f"restoring request {head} of queue {qi}: {e}")

    def on_reset(self) -> None:
        self._generation += 1
        self.inflight.clear()
        self.subscriptions.clear()
        self.pending_events.clear()
        self.events_missed = False
        self.sense_size = VIRTIO_SCSI_SENSE_SIZE
        self.cdb_size = VIRTIO_SCSI_CDB_SIZE

    def drain(self, timeout: float | None = None) -> bool:
        """Complete every in-flight command (run the executor's completions)."""
        return self.executor.wait_idle(timeout)

    def save(self) -> VirtioScsiState:
        with self.lock:
            return VirtioScsiState(
                device=self.save_base(),
                target=self.target.save(),
                sense_size=self.sense_size,
                cdb_size=self.cdb_size,
                subscriptions=dict(self.subscriptions),
                pending_events=tuple(self.pending_events),
                events_missed=self.events_missed,
                inflight=tuple(sorted(self.inflight)),
            )

    def load_state(self, state: VirtioScsiState) -> None:
        with self.lock:
            for qi, _ in state.inflight:
                if not FIRST_REQUEST_QUEUE <= qi < self.num_queues:
                    raise StateError(f"{self.name}: snapshot has a request on queue {qi}")
            if len(state.pending_events) > MAX_PENDING_EVENTS:
                raise StateError(f"{self.name}: snapshot has too many pending events")
            self.target.restore(state.target)
            self.restore_base(state.device)
            self.sense_size = min(state.sense_size, MAX_SENSE_SIZE)
            self.cdb_size = min(max(state.cdb_size, 6), 256)
            self.subscriptions = dict(state.subscriptions)
            self.pending_events = collections.deque(state.pending_events)
            self.events_missed = state.events_missed
            self.inflight.clear()
            self._restored_inflight = state.inflight


def luns_of(units: Sequence[ScsiLun]) -> dict[int, ScsiLun]:
    """LUN numbers 0, 1, ... for ``units`` in order (the CLI's and serve's numbering)."""
    return dict(enumerate(units))
