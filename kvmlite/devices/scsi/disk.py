"""A SCSI direct-access disk over a kvmlite block backend (SBC-3), like QEMU's scsi-hd.

READ/WRITE(6/10/12/16) with FUA, SYNCHRONIZE CACHE(10/16), UNMAP, WRITE
SAME(10/16) (zeros, with UNMAP, or a repeated block), READ CAPACITY(10/16)
with LBPME, VERIFY (no BYTCHK), MODE SENSE pages 0x01/0x08/0x0A and the
VPD pages Linux's sd driver reads to choose its discard method: 0xB0
block limits, 0xB1 block device characteristics, 0xB2 logical block
provisioning (SBC-3 §6.5). 512-byte logical blocks.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from kvmlite.devices.scsi import cdb as op
from kvmlite.devices.scsi.cdb import Cdb, CdbError
from kvmlite.devices.scsi.lun import (
    TYPE_DISK,
    LunState,
    Overrun,
    ScsiLun,
    buffers_len,
    gather,
    limit_views,
)
from kvmlite.devices.scsi.modesense import ModePage, mode_sense
from kvmlite.devices.scsi.sense import (
    SENSE_INVALID_FIELD_IN_CDB,
    SENSE_INVALID_FIELD_IN_PARAMETER_LIST,
    SENSE_LBA_OUT_OF_RANGE,
    SENSE_PARAMETER_LIST_LENGTH_ERROR,
    SENSE_UNRECOVERED_READ_ERROR,
    SENSE_WRITE_ERROR,
    SENSE_WRITE_PROTECTED,
)

BLOCK = 512
MAX_UNMAP_BLOCKS = 1 << 22  # per descriptor and per WRITE SAME: 2 GiB
MAX_UNMAP_DESCRIPTORS = 64
MAX_TRANSFER_BLOCKS = 1 << 16  # 32 MiB per READ/WRITE
_FUA = 0x08
_RW_FUA = frozenset({op.WRITE_10, op.WRITE_12, op.WRITE_16})


class DiskBackendLike(Protocol):
    """What the disk needs of ``kvmlite.backends.block.BlockBackend``."""

    size: int
    read_only: bool

    def readv(self, offset: int, bufs: Sequence[memoryview]) -> int: ...
    def writev(self, offset: int, bufs: Sequence[memoryview]) -> int: ...
    def flush(self) -> None: ...
    def discard(self, offset: int, length: int) -> None: ...
    def write_zeroes(self, offset: int, length: int, unmap: bool = False) -> None: ...


class ScsiDisk(ScsiLun):
    """An SBC-3 disk; the backend stays the caller's (the model never closes it)."""

    peripheral_type = TYPE_DISK
    product = "KVMLITE HARDDISK"

    def __init__(self, backend: DiskBackendLike, *, serial: str = "", name: str = "sd0") -> None:
        super().__init__(serial=serial, name=name)
        self.backend = backend
        self.read_only = bool(backend.read_only)
        rw: Callable[..., int] = self.cmd_read_write
        self.handlers.update(
            {
                op.READ_6: rw,
                op.READ_10: rw,
                op.READ_12: rw,
                op.READ_16: rw,
                op.WRITE_6: rw,
                op.WRITE_10: rw,
                op.WRITE_12: rw,
                op.WRITE_16: rw,
                op.VERIFY_10: self.cmd_verify,
                op.VERIFY_16: self.cmd_verify,
                op.SYNCHRONIZE_CACHE_10: self.cmd_sync,
                op.SYNCHRONIZE_CACHE_16: self.cmd_sync,
                op.UNMAP: self.cmd_unmap,
                op.WRITE_SAME_10: self.cmd_write_same,
                op.WRITE_SAME_16: self.cmd_write_same,
                op.READ_CAPACITY_10: self.cmd_read_capacity_10,
                op.SERVICE_ACTION_IN_16: self.cmd_service_action_in,
                op.MODE_SENSE_6: self.cmd_mode_sense,
                op.MODE_SENSE_10: self.cmd_mode_sense,
                op.START_STOP_UNIT: lambda cdb, din, dout: b"",
                op.PREVENT_ALLOW_MEDIUM_REMOVAL: lambda cdb, din, dout: b"",
            }
        )

    @property
    def blocks(self) -> int:
        return self.backend.size // BLOCK

    def _range(self, lba: int, count: int) -> None:
        if lba + count > self.blocks:
            raise CdbError(SENSE_LBA_OUT_OF_RANGE, f"{count} blocks at {lba}")

    def _writable(self) -> None:
        if self.read_only:
            raise CdbError(SENSE_WRITE_PROTECTED)

    # -- data ------------------------------------------------------------------------

    def cmd_read_write(
        self, cdb: Cdb, din: Sequence[memoryview], dout: Sequence[memoryview | bytes]
    ) -> int:
        write = cdb.opcode in (op.WRITE_6, op.WRITE_10, op.WRITE_12, op.WRITE_16)
        if write:
            self._writable()
        self._range(cdb.lba, cdb.blocks)
        if cdb.blocks > MAX_TRANSFER_BLOCKS:
            raise CdbError(SENSE_INVALID_FIELD_IN_CDB, f"transfer of {cdb.blocks} blocks")
        want = cdb.blocks * BLOCK
        bufs = dout if write else din
        have = buffers_len(bufs)
        if want > have:
            raise Overrun(want, have)
        if not want:
            return 0
        views = limit_views([memoryview(b) for b in bufs], want)
        try:
            if write:
                fua = cdb.opcode in _RW_FUA and bool(cdb.u8(1) & _FUA)
                if fua:
                    self.blocking()
                n = self.writev(self.backend, cdb.lba * BLOCK, views)
                if fua:
                    self.backend.flush()
            else:
                n = self.readv(self.backend, cdb.lba * BLOCK, views)
        except OSError as e:
            raise CdbError(SENSE_WRITE_ERROR if write else SENSE_UNRECOVERED_READ_ERROR) from e
        if n != want:
            raise CdbError(SENSE_WRITE_ERROR if write else SENSE_UNRECOVERED_READ_ERROR)
        return 0 if write else want

    def cmd_verify(self, cdb: Cdb, din: object, dout: object) -> bytes:
        if cdb.u8(1) & 0x06:  # BYTCHK: compare with data-out, not implemented
            raise CdbError(SENSE_INVALID_FIELD_IN_CDB, "VERIFY with BYTCHK")
        self._range(cdb.lba, cdb.blocks)
        return b""

    def cmd_sync(self, cdb: Cdb, din: object, dout: object) -> bytes:
        self._range(cdb.lba, cdb.blocks)
        if not self.read_only:
            self.blocking()
            with self._write_errors():
                self.backend.flush()
        return b""

    @contextlib.contextmanager
    def _write_errors(self) -> Iterator[None]:
        try:
            yield
        except OSError as e:
            raise CdbError(SENSE_WRITE_ERROR) from e

    def cmd_unmap(self, cdb: Cdb, din: object, dout: Sequence[memoryview | bytes]) -> bytes:
        self._writable()
        length = cdb.u16(7)
        if length == 0:
            return b""
        if length < 8:
            raise CdbError(SENSE_PARAMETER_LIST_LENGTH_ERROR)
        if buffers_len(dout) < length:
            raise Overrun(length, buffers_len(dout))
        params = gather(dout, length)
        desc_len = int.from_bytes(params[2:4], "big")
        if desc_len % 16 or 8 + desc_len > length:
            raise CdbError(SENSE_PARAMETER_LIST_LENGTH_ERROR)
        if desc_len // 16 > MAX_UNMAP_DESCRIPTORS:
            raise CdbError(SENSE_INVALID_FIELD_IN_PARAMETER_LIST)
        ranges = []
        for lba, count, _ in struct.iter_unpack(">QI4s", params[8 : 8 + desc_len]):
            if count > MAX_UNMAP_BLOCKS:
                raise CdbError(SENSE_INVALID_FIELD_IN_PARAMETER_LIST)
            self._range(lba, count)
            ranges.append((lba, count))
        self.blocking()
        for lba, count in ranges:
            if count:
                with self._write_errors():
                    self.backend.discard(lba * BLOCK, count * BLOCK)
        return b""

    def cmd_write_same(self, cdb: Cdb, din: object, dout: Sequence[memoryview | bytes]) -> bytes:
        self._writable()
        flags = cdb.u8(1)
        unmap = bool(flags & 0x08)
        ndob = cdb.opcode == op.WRITE_SAME_16 and bool(flags & 0x01)
        if cdb.blocks == 0 or cdb.blocks > MAX_UNMAP_BLOCKS:  # WSNZ is set in VPD 0xB0
            raise CdbError(SENSE_INVALID_FIELD_IN_CDB, f"WRITE SAME of {cdb.blocks} blocks")
        self._range(cdb.lba, cdb.blocks)
        if ndob:
            pattern = bytes(BLOCK)
        else:
            if buffers_len(dout) < BLOCK:
                raise Overrun(BLOCK, buffers_len(dout))
            pattern = gather(dout, BLOCK)
        offset, length = cdb.lba * BLOCK, cdb.blocks * BLOCK
        self.blocking()
        if not any(pattern):
            with self._write_errors():
                self.backend.write_zeroes(offset, length, unmap=unmap)
            return b""
        chunk = pattern * min(cdb.blocks, 2048)
        pos = 0
        while pos < length:
            n = min(len(chunk), length - pos)
            with self._write_errors():
                self.backend.writev(offset + pos, [memoryview(chunk)[:n]])
            pos += n
        return b""

    # -- capacity and parameters -------------------------------------------------------

    def cmd_read_capacity_10(self, cdb: Cdb, din: object, dout: object) -> bytes:
        return struct.pack(">II", min(self.blocks - 1, 0xFFFFFFFF) & 0xFFFFFFFF, BLOCK)

    def cmd_service_action_in(self, cdb: Cdb, din: object, dout: object) -> bytes:
        if cdb.u8(1) & 0x1F != op.SAI_READ_CAPACITY_16:
            raise CdbError(SENSE_INVALID_FIELD_IN_CDB, "SERVICE ACTION IN(16) action")
        lbpme = 0 if self.read_only else 0x8000
        data = struct.pack(">QIBBH16s", max(self.blocks - 1, 0), BLOCK, 0, 0, lbpme, b"")
        return data[: cdb.u32(10)]

    def cmd_mode_sense(self, cdb: Cdb, din: object, dout: object) -> bytes:
        pages = {
            0x01: ModePage(0x01, lambda: bytes([0x01, 10]) + bytes(10)),
            0x08: ModePage(0x08, lambda: bytes([0x08, 18, 0x04]) + bytes(17)),  # WCE
            0x0A: ModePage(0x0A, lambda: bytes([0x0A, 10]) + bytes(10)),
        }
        wp = 0x80 if self.read_only else 0
        return mode_sense(
            cdb, pages, device_specific=wp | 0x10, block_descriptor=(self.blocks, BLOCK)
        )

    def vpd_pages(self) -> dict[int, Callable[[], bytes]]:
        pages = super().vpd_pages()
        pages[0xB0] = self._vpd_block_limits
        pages[0xB1] = lambda: struct.pack(">HBB", 1, 0, 0) + bytes(56)  # non-rotating
        pages[0xB2] = self._vpd_provisioning
        return pages

    def _vpd_block_limits(self) -> bytes:
        unmap = 0 if self.read_only else MAX_UNMAP_BLOCKS
        descs = 0 if self.read_only else MAX_UNMAP_DESCRIPTORS
        return struct.pack(
            ">BBHIIIIIIIQ20s",
            0x01,  # WSNZ
            0,
            1,
            MAX_TRANSFER_BLOCKS,
            0,
            0,
            unmap,
            descs,
            1,
            0,
            MAX_UNMAP_BLOCKS,
            b"",
        )

    def _vpd_provisioning(self) -> bytes:
        # LBPU, LBPWS, LBPWS10; provisioning type 2 (thin) when writable
        if self.read_only:
            return bytes(4)
        return bytes([0, 0xE0, 0x02, 0])

    # -- state (DESIGN.md rule 4) ---------------------------------------------------------

    def save(self) -> LunState:
        with self.lock:
            return LunState.of(self.unit_attention)

    def restore(self, state: LunState) -> None:
        with self.lock:
            self.unit_attention = state.sense()
