"""A SCSI logical unit: what every device type shares (SPC-4 §6, SAM-5 §5).

Theory of operation
-------------------
``ScsiLun.execute(cdb, data_in, data_out)`` runs one command to completion
and returns a ``ScsiResult``: the status, fixed-format sense data when the
status is CHECK CONDITION, and how many bytes went to the data-in buffer.
The buffers are the initiator's (memoryviews of guest RAM under virtio-scsi),
so reads land in place. There is no I/O of the model's own: the backend
calls are the transport's thread's (DESIGN.md rule 1).

Nothing a CDB holds makes ``execute`` raise: a bad CDB, an LBA beyond the
medium, a transfer longer than the buffers, or a failing backend is a CHECK
CONDITION with the sense SPC-4 names for it. A transfer longer than the
buffer also sets ``overrun`` so that a transport with its own way to say so
(virtio-scsi's VIRTIO_SCSI_S_OVERRUN) can.

Unit attention (SAM-5 §5.14): a condition (medium changed, capacity changed)
is reported once, as the CHECK CONDITION of the next command other than
INQUIRY, REPORT LUNS, REQUEST SENSE, GET CONFIGURATION and GET EVENT STATUS
NOTIFICATION (MMC-6 §4.1.6.1 exempts the last two); REQUEST SENSE returns
and clears it.

Commands run under ``self.lock``, so a host-side change (a new medium)
never interleaves with a command.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kvmlite.devices.scsi import cdb as op
from kvmlite.devices.scsi.cdb import Cdb, CdbError, parse_cdb
from kvmlite.devices.scsi.sense import (
    CHECK_CONDITION,
    GOOD,
    SENSE_INTERNAL_TARGET_FAILURE,
    SENSE_INVALID_FIELD_IN_CDB,
    SENSE_INVALID_OPCODE,
    SENSE_NO_SENSE,
    Sense,
)

log = logging.getLogger("kvmlite.devices.scsi")

# SPC-4 §6.4.2 peripheral device types
TYPE_DISK = 0x00
TYPE_ROM = 0x05
#: Peripheral qualifier 3, type 0x1f: "no logical unit here" (SPC-4 §6.4.2).
TYPE_NO_LUN = 0x7F

VENDOR = "KVMLITE"
REVISION = "1.0"
#: SPC-4 §6.4.2 VERSION: 0x05 claims SPC-3, as QEMU's scsi-hd/scsi-cd do (the
#: answers are compared field by field with theirs).
SPC_VERSION = 0x05
_UA_EXEMPT = frozenset(
    {
        op.INQUIRY,
        op.REPORT_LUNS,
        op.REQUEST_SENSE,
        op.GET_CONFIGURATION,
        op.GET_EVENT_STATUS_NOTIFICATION,
    }
)


@dataclass(frozen=True)
class LunState:
    """What a LUN without a medium keeps: a pending unit attention (key, ASC, ASCQ)."""

    unit_attention: tuple[int, int, int] | None

    @classmethod
    def of(cls, sense: Sense | None) -> LunState:
        return cls(None if sense is None else (sense.key, sense.asc, sense.ascq))

    def sense(self) -> Sense | None:
        ua = self.unit_attention
        return None if ua is None else Sense(*ua)


@dataclass(frozen=True)
class ScsiResult:
    """The outcome of one command."""

    status: int
    sense: bytes = b""
    #: bytes placed in the data-in buffer
    data_len: int = 0
    #: the command wanted more data-in or data-out than the buffers hold
    overrun: bool = False


class WouldBlock(Exception):
    """A non-blocking attempt (``execute(nowait=True)``) needs blocking I/O."""


class Overrun(CdbError):
    """The transfer the CDB asks for does not fit the initiator's buffers."""

    def __init__(self, wanted: int, have: int) -> None:
        super().__init__(SENSE_INVALID_FIELD_IN_CDB, f"transfer of {wanted} bytes, buffer {have}")


def buffers_len(bufs: Sequence[memoryview | bytes]) -> int:
    return sum(memoryview(b).nbytes for b in bufs)


def scatter(bufs: Sequence[memoryview], data: bytes) -> int:
    """Copy ``data`` into ``bufs`` in order; returns the bytes copied."""
    done = 0
    for b in bufs:
        if done >= len(data):
            break
        n = min(len(b), len(data) - done)
        b[:n] = data[done : done + n]
        done += n
    return done


def gather(bufs: Sequence[memoryview | bytes], length: int) -> bytes:
    """The first ``length`` bytes of ``bufs`` (fewer if they are shorter)."""
    out = bytearray()
    for b in bufs:
        if len(out) >= length:
            break
        out += bytes(b[: length - len(out)])
    return bytes(out)


def limit_views(bufs: Sequence[memoryview], length: int) -> list[memoryview]:
    """Views of the first ``length`` bytes of ``bufs``."""
    out = []
    for b in bufs:
        if length <= 0:
            break
        v = b[:length]
        out.append(v)
        length -= len(v)
    return out


def ascii_field(text: str, width: int) -> bytes:
    """An SPC-4 left-aligned, space-padded ASCII field."""
    return text.encode("ascii", "replace")[:width].ljust(width, b" ")


Handler = Callable[[Cdb, Sequence[memoryview], Sequence[memoryview | bytes]], "bytes | int"]


class ScsiLun:
    """Base of the logical-unit models; subclasses fill ``handlers``.

    A handler gets (cdb, data_in, data_out) and returns either the data-in
    bytes (truncated here to the buffers) or the count of bytes it placed
    in data_in itself (the read path). It raises ``CdbError`` to fail.
    """

    peripheral_type = TYPE_DISK
    removable = False
    product = "KVMLITE HARDDISK"

    def __init__(self, *, serial: str = "", name: str = "scsi-lun") -> None:
        self.name = name
        self.serial = serial
        self.lock = threading.RLock()
        self.unit_attention: Sense | None = None
        #: Called (outside ``lock``) with the sense of each unit attention the host
        #: side raises, so a transport can also announce it (virtio-scsi events).
        self.unit_attention_handler: Callable[[Sense], None] | None = None
        self._nowait = False
        self.handlers: dict[int, Handler] = {
            op.TEST_UNIT_READY: self.cmd_test_unit_ready,
            op.REQUEST_SENSE: self.cmd_request_sense,
            op.INQUIRY: self.cmd_inquiry,
        }

    # -- the command entry point ----------------------------------------------------

    def execute(
        self,
        cdb: bytes,
        data_in: Sequence[memoryview] = (),
        data_out: Sequence[memoryview | bytes] = (),
        *,
        nowait: bool = False,
    ) -> ScsiResult | None:
        """Run one command; never raises for anything the initiator sent.

        ``nowait``: only if no backend call would block (the data is in the
        host's page cache); None when it would, and then nothing has changed,
        so the caller runs the command again, blocking, on an I/O thread
        (as virtio-blk does with ``readv_nowait``).
        """
        with self.lock:
            self._nowait = nowait
            try:
                parsed = parse_cdb(cdb)
                if self.unit_attention is not None and parsed.opcode not in _UA_EXEMPT:
                    ua, self.unit_attention = self.unit_attention, None
                    return check_condition(ua)
                handler = self.handlers.get(parsed.opcode)
                if handler is None:
                    raise CdbError(SENSE_INVALID_OPCODE, f"opcode {parsed.opcode:#04x}")
                out = handler(parsed, data_in, data_out)
            except WouldBlock:
                return None
            except Overrun as e:
                return ScsiResult(CHECK_CONDITION, e.sense.fixed(), overrun=True)
            except CdbError as e:
                return check_condition(e.sense)
            except Exception:  # a backend failure or a bug of ours: the initiator sees an error
                log.exception("%s: command %s failed", self.name, bytes(cdb[:16]).hex())
                return check_condition(SENSE_INTERNAL_TARGET_FAILURE)
            finally:
                self._nowait = False
        if isinstance(out, int):
            return ScsiResult(GOOD, data_len=out)
        return ScsiResult(GOOD, data_len=scatter(data_in, out))

    # -- backend I/O, blocking or not -----------------------------------------------

    def blocking(self) -> None:
        """Call before backend work that has no non-blocking form (flush, discard)."""
        if self._nowait:
            raise WouldBlock

    def readv(self, backend: object, offset: int, views: list[memoryview]) -> int:
        if self._nowait:
            attempt = getattr(backend, "readv_nowait", None)
            n = attempt(offset, views) if attempt is not None else None
            if n is None:
                raise WouldBlock
            return int(n)
        return int(backend.readv(offset, views))  # type: ignore[attr-defined]

    def writev(self, backend: object, offset: int, views: list[memoryview]) -> int:
        if self._nowait:
            attempt = getattr(backend, "writev_nowait", None)
            n = attempt(offset, views) if attempt is not None else None
            if n is None:
                raise WouldBlock
            return int(n)
        return int(backend.writev(offset, views))  # type: ignore[attr-defined]

    def set_unit_attention(self, sense: Sense) -> None:
        """Raise a unit attention from the host side (capacity changed, new medium...)."""
        with self.lock:
            self.unit_attention = sense
        self.notify_unit_attention(sense)

    def notify_unit_attention(self, sense: Sense) -> None:
        # Never under self.lock: the transport's handler takes the device's lock,
        # and a command runs with the device's lock held before ours.
        handler = self.unit_attention_handler
        if handler is not None:
            handler(sense)

    # -- SPC-4 commands every LUN has ------------------------------------------------

    def ready_sense(self) -> Sense | None:
        """Why the unit is not ready (NOT READY sense), or None when it is."""
        return None

    def check_ready(self) -> None:
        sense = self.ready_sense()
        if sense is not None:
            raise CdbError(sense)

    def cmd_test_unit_ready(self, cdb: Cdb, din: object, dout: object) -> bytes:
        self.check_ready()
        return b""

    def cmd_request_sense(self, cdb: Cdb, din: object, dout: object) -> bytes:
        # Sense of failed commands went out with them (autosense); what is
        # left to report is a unit attention or the unit's readiness.
        sense = self.unit_attention or self.ready_sense() or SENSE_NO_SENSE
        self.unit_attention = None
        return sense.fixed()[: cdb.u8(4)]

    def cmd_inquiry(self, cdb: Cdb, din: object, dout: object) -> bytes:
        evpd = cdb.u8(1) & 1
        page = cdb.u8(2)
        alloc = cdb.u16(3)
        if cdb.u8(1) & 0xFE:  # CMDDT (obsolete) and reserved bits
            raise CdbError(SENSE_INVALID_FIELD_IN_CDB, "INQUIRY with CMDDT")
        if not evpd:
            if page:
                raise CdbError(SENSE_INVALID_FIELD_IN_CDB, "INQUIRY page code without EVPD")
            return self.standard_inquiry()[:alloc]
        pages = self.vpd_pages()
        if page == 0x00:
            body = bytes(sorted(pages))
        elif page in pages:
            body = pages[page]()
        else:
            raise CdbError(SENSE_INVALID_FIELD_IN_CDB, f"VPD page {page:#04x}")
        return (struct.pack(">BBH", self.peripheral_type, page, len(body)) + body)[:alloc]

    def standard_inquiry(self) -> bytes:
        """SPC-4 §6.4.2 standard INQUIRY data, 36 bytes."""
        return (
            bytes(
                [
                    self.peripheral_type,
                    0x80 if self.removable else 0,
                    SPC_VERSION,
                    0x12,  # HISUP, response data format 2
                    36 - 5,
                    0,
                    0,
                    0x12,  # SYNC (set by QEMU too), CMDQUE
                ]
            )
            + ascii_field(VENDOR, 8)
            + ascii_field(self.product, 16)
            + ascii_field(REVISION, 4)
        )

    def vpd_pages(self) -> dict[int, Callable[[], bytes]]:
        """VPD page code -> body builder (page 0x00 is built from the keys)."""
        pages: dict[int, Callable[[], bytes]] = {0x00: lambda: b"", 0x83: self.vpd_device_id}
        if self.serial:
            pages[0x80] = lambda: self.serial.encode("ascii", "replace")
        return pages

    def vpd_device_id(self) -> bytes:
        """SPC-4 §7.8.6 page 0x83: one T10 vendor ID designator for the LUN."""
        ident = ascii_field(VENDOR, 8) + (self.serial or self.name).encode("ascii", "replace")
        ident = ident[:252]
        return struct.pack(">BBBB", 0x02, 0x01, 0, len(ident)) + ident


def check_condition(sense: Sense) -> ScsiResult:
    return ScsiResult(CHECK_CONDITION, sense.fixed())
