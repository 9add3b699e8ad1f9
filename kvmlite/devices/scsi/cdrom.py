"""A CD/DVD-ROM logical unit with a removable medium (MMC-6, SPC-4), like QEMU's scsi-cd.

Theory of operation
-------------------
The drive has a tray and maybe a medium (a read-only block backend of
2048-byte blocks, an ISO 9660 image). Three host-side operations change it,
and each leaves the guest a trace it can see:

============================  =========================  ==================
host call                     unit attention (next cmd)  GESN media event
============================  =========================  ==================
``insert(medium)``            28/00 medium may have      NewMedia
                              changed
``eject()``, ``open_tray()``  3A/00 medium not present   MediaRemoval
``eject()`` on a locked tray  (refused: ``TrayLocked``)  EjectRequest
============================  =========================  ==================

The guest's own START STOP UNIT (LOEJ) opens or closes the tray; the medium
stays in the open tray and is back when it closes (``eject`` then
``eject -t`` in the guest), while the host's ``eject()`` takes it out.
PREVENT ALLOW MEDIUM REMOVAL locks the tray: the guest's eject then fails
with ILLEGAL REQUEST 53/02, the host's with ``TrayLocked`` unless
``force=True`` (QEMU's ``eject force``); either way the guest sees an
EjectRequest event, so an OS that watches it can unlock and eject.

Commands that need the medium answer NOT READY 3A/01 (tray closed) or
3A/02 (tray open) without one. The medium's owner is the caller: the model
never closes a backend; ``insert`` and ``eject`` hand back the one they took
out.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from kvmlite.devices.scsi import cdb as op
from kvmlite.devices.scsi import mmc
from kvmlite.devices.scsi.cdb import Cdb, CdbError
from kvmlite.devices.scsi.lun import TYPE_ROM, Overrun, ScsiLun, buffers_len, limit_views
from kvmlite.devices.scsi.modesense import ModePage, mode_sense
from kvmlite.devices.scsi.sense import (
    SENSE_LBA_OUT_OF_RANGE,
    SENSE_MEDIUM_MAY_HAVE_CHANGED,
    SENSE_MEDIUM_NOT_PRESENT_TRAY_CLOSED,
    SENSE_MEDIUM_NOT_PRESENT_TRAY_OPEN,
    SENSE_MEDIUM_REMOVAL_PREVENTED,
    SENSE_UA_MEDIUM_NOT_PRESENT,
    SENSE_UNRECOVERED_READ_ERROR,
    Sense,
)
from kvmlite.errors import KvmliteError, StateError


class MediumLike(Protocol):
    """What the CD-ROM needs of a block backend (kvmlite.backends.block)."""

    size: int

    def readv(self, offset: int, bufs: Sequence[memoryview]) -> int: ...


class TrayLocked(KvmliteError):
    """The guest locked the tray (PREVENT ALLOW MEDIUM REMOVAL); eject with force, or wait."""


@dataclass(frozen=True)
class CdromState:
    """The drive's state; the medium itself is a restore argument."""

    has_medium: bool
    tray_open: bool
    locked: bool
    media_event: int
    unit_attention: tuple[int, int, int] | None


class ScsiCdrom(ScsiLun):
    """An MMC CD/DVD-ROM drive; see the module docstring for the media API."""

    peripheral_type = TYPE_ROM
    removable = True
    product = "KVMLITE CD-ROM"

    def __init__(self, medium: MediumLike | None = None, *, serial: str = "", name: str = "cd0"):
        super().__init__(serial=serial, name=name)
        self.medium = medium
        self.tray_open = False
        self.locked = False
        self.media_event = mmc.MEDIA_EVENT_NO_CHANGE
        self.handlers.update(
            {
                op.READ_CAPACITY_10: self.cmd_read_capacity,
                op.READ_10: self.cmd_read,
                op.READ_12: self.cmd_read,
                op.READ_TOC_PMA_ATIP: self.cmd_read_toc,
                op.GET_CONFIGURATION: self.cmd_get_configuration,
                op.GET_EVENT_STATUS_NOTIFICATION: self.cmd_event_status,
                op.MODE_SENSE_6: self.cmd_mode_sense,
                op.MODE_SENSE_10: self.cmd_mode_sense,
                op.START_STOP_UNIT: self.cmd_start_stop,
                op.PREVENT_ALLOW_MEDIUM_REMOVAL: self.cmd_prevent_allow,
                op.READ_DISC_INFORMATION: self.cmd_disc_information,
                op.SET_CD_SPEED: lambda cdb, din, dout: b"",
            }
        )

    # -- the host's media API -------------------------------------------------------

    @property
    def blocks(self) -> int | None:
        """Medium size in 2048-byte blocks, None when the drive holds none (or is open)."""
        if self.medium is None or self.tray_open:
            return None
        return self.medium.size // mmc.CD_BLOCK

    def insert(self, medium: MediumLike, *, force: bool = False) -> MediumLike | None:
        """Put ``medium`` in and close the tray; returns the medium it replaced.

        Replacing a medium on a locked tray raises ``TrayLocked`` (and asks
        the guest to eject) unless ``force``; an empty or open drive always
        takes it.
        """
        with self.lock:
            old = None
            if self.medium is not None:
                old = self._take_out(force)
            self.medium = medium
            self.tray_open = False
            self._loaded()
        self.notify_unit_attention(SENSE_MEDIUM_MAY_HAVE_CHANGED)
        return old

    def eject(self, *, force: bool = False) -> MediumLike | None:
        """Open the tray and take the medium out; returns it (None if there was none).

        ``TrayLocked`` when the guest locked the tray and ``force`` is not
        set; the guest then sees an EjectRequest media event.
        """
        with self.lock:
            was_open = self.tray_open
            old = self._take_out(force)
        if not was_open:
            self.notify_unit_attention(SENSE_UA_MEDIUM_NOT_PRESENT)
        return old

    def open_tray(self, *, force: bool = False) -> None:
        """Open the tray, leaving the medium in it (QMP blockdev-open-tray)."""
        with self.lock:
            if self.tray_open:
                return
            self._check_unlocked(force)
            self._opened()
        self.notify_unit_attention(SENSE_UA_MEDIUM_NOT_PRESENT)

    def close_tray(self) -> None:
        """Close the tray; a medium in it is loaded (QMP blockdev-close-tray)."""
        with self.lock:
            if not self.tray_open:
                return
            self.tray_open = False
            if self.medium is None:
                return
            self._loaded()
        self.notify_unit_attention(SENSE_MEDIUM_MAY_HAVE_CHANGED)

    def _loaded(self) -> None:
        self.media_event = mmc.MEDIA_EVENT_NEW_MEDIA
        self.unit_attention = SENSE_MEDIUM_MAY_HAVE_CHANGED

    def _check_unlocked(self, force: bool) -> None:
        if self.locked and not force:
            self.media_event = mmc.MEDIA_EVENT_EJECT_REQUEST
            raise TrayLocked(
                f"{self.name}: the guest has locked the tray; unmount the medium in the"
                " guest, or eject with force"
            )
        self.locked = False if force else self.locked

    def _opened(self) -> None:
        self.tray_open = True
        self.media_event = mmc.MEDIA_EVENT_MEDIA_REMOVAL
        self.unit_attention = SENSE_UA_MEDIUM_NOT_PRESENT

    def _take_out(self, force: bool) -> MediumLike | None:
        if not self.tray_open:
            self._check_unlocked(force)
            self._opened()
        old, self.medium = self.medium, None
        return old

    # -- commands ---------------------------------------------------------------------

    def ready_sense(self) -> Sense | None:
        if self.tray_open:
            return SENSE_MEDIUM_NOT_PRESENT_TRAY_OPEN
        if self.medium is None:
            return SENSE_MEDIUM_NOT_PRESENT_TRAY_CLOSED
        return None

    def _blocks(self) -> int:
        self.check_ready()
        blocks = self.blocks
        assert blocks is not None
        return blocks

    def cmd_read_capacity(self, cdb: Cdb, din: object, dout: object) -> bytes:
        blocks = self._blocks()
        return struct.pack(">II", min(max(blocks - 1, 0), 0xFFFFFFFF), mmc.CD_BLOCK)

    def cmd_read(self, cdb: Cdb, din: Sequence[memoryview], dout: object) -> int:
        blocks = self._blocks()
        if cdb.lba + cdb.blocks > blocks:
            raise CdbError(SENSE_LBA_OUT_OF_RANGE, f"read of {cdb.blocks} at {cdb.lba}")
        want = cdb.blocks * mmc.CD_BLOCK
        have = buffers_len(din)
        if want > have:
            raise Overrun(want, have)
        if not want:
            return 0
        assert self.medium is not None
        try:
            views = list(din) if want == have else limit_views(din, want)
            n = self.readv(self.medium, cdb.lba * mmc.CD_BLOCK, views)
        except OSError as e:
            raise CdbError(SENSE_UNRECOVERED_READ_ERROR, f"read failed: {e}") from e
        if n != want:
            raise CdbError(SENSE_UNRECOVERED_READ_ERROR, f"short read: {n} of {want}")
        return want

    def cmd_read_toc(self, cdb: Cdb, din: object, dout: object) -> bytes:
        return mmc.read_toc(cdb, self._blocks())[: cdb.u16(7)]

    def cmd_get_configuration(self, cdb: Cdb, din: object, dout: object) -> bytes:
        return mmc.get_configuration(cdb, self.blocks, self.locked)[: cdb.u16(7)]

    def cmd_event_status(self, cdb: Cdb, din: object, dout: object) -> bytes:
        data = mmc.event_status(cdb, self.media_event, self.tray_open, self.blocks is not None)
        if cdb.u8(4) & mmc.MEDIA_CLASS_BIT:
            self.media_event = mmc.MEDIA_EVENT_NO_CHANGE  # reported: cleared (MMC-6 §6.7.1)
        return data[: cdb.u16(7)]

    def cmd_mode_sense(self, cdb: Cdb, din: object, dout: object) -> bytes:
        pages = {
            mmc.MODE_PAGE_ERROR_RECOVERY: ModePage(0x01, mmc.error_recovery_page),
            mmc.MODE_PAGE_CAPABILITIES: ModePage(0x2A, lambda: mmc.capabilities_page(self.locked)),
        }
        return mode_sense(cdb, pages)

    def cmd_start_stop(self, cdb: Cdb, din: object, dout: object) -> bytes:
        byte4 = cdb.u8(4)
        if byte4 >> 4 or not byte4 & 0x02:  # a power condition, or no LOEJ: nothing to do
            return b""
        if byte4 & 0x01:  # load: close the tray (the guest asked: no unit attention)
            if self.tray_open:
                self.tray_open = False
                if self.medium is not None:
                    self.media_event = mmc.MEDIA_EVENT_NEW_MEDIA
            return b""
        if self.locked:
            self.media_event = mmc.MEDIA_EVENT_EJECT_REQUEST
            raise CdbError(SENSE_MEDIUM_REMOVAL_PREVENTED)
        if not self.tray_open:
            self._opened()
            self.unit_attention = None  # the guest asked for it; no surprise to report
        return b""

    def cmd_prevent_allow(self, cdb: Cdb, din: object, dout: object) -> bytes:
        self.locked = bool(cdb.u8(4) & 0x01)
        return b""

    def cmd_disc_information(self, cdb: Cdb, din: object, dout: object) -> bytes:
        self._blocks()
        return mmc.disc_information(cdb)[: cdb.u16(7)]

    # -- state (DESIGN.md rule 4) ---------------------------------------------------------

    def save(self) -> CdromState:
        with self.lock:
            ua = self.unit_attention
            return CdromState(
                has_medium=self.medium is not None,
                tray_open=self.tray_open,
                locked=self.locked,
                media_event=self.media_event,
                unit_attention=None if ua is None else (ua.key, ua.asc, ua.ascq),
            )

    def restore(self, state: CdromState) -> None:
        """Apply ``state`` to a drive built with the same medium (or none)."""
        with self.lock:
            if state.has_medium != (self.medium is not None):
                want = "a medium" if state.has_medium else "no medium"
                raise StateError(f"{self.name}: the snapshot's drive holds {want}; restore with it")
            self.tray_open = state.tray_open
            self.locked = state.locked
            self.media_event = state.media_event
            ua = state.unit_attention
            self.unit_attention = None if ua is None else Sense(*ua)
