"""virtio-blk (virtio 1.2 §5.2, "Block Device").

Theory of operation
-------------------
Each request is one descriptor chain: a 16-byte header (type, reserved,
sector) in the readable part, then data (readable for OUT, writable for IN),
then one writable status byte at the very end. The spec forbids assuming any
particular framing (§2.6.4), so the chain is treated as two byte streams and
sliced into memoryviews of guest RAM wherever the descriptors fall.

Requests run through an ``IoExecutor``: the job (``backend.readv``/``writev``
straight into those memoryviews, ``flush``, ``discard``, ``write_zeroes``)
runs on an I/O thread; the completion (status byte, used ring, interrupt)
runs on the device's owner thread under ``self.lock``. When the executor is
an I/O engine (kvmlite.backends.block.engines: ``readv``/``writev``/
``fdatasync`` on a host fd) and the backend says where a request lies in a
host file (``io_target``, ``flush_target``), the engine does the read or
write itself (Linux AIO, io_uring: no thread); the requests popped in one
pass over the ring go to the kernel together (``commit``).

A request the guest got wrong (bad type, out-of-range sector, write to a
read-only disk, short buffers, bad discard segments) completes with
VIRTIO_BLK_S_IOERR or VIRTIO_BLK_S_UNSUPP. Only a chain with no status byte
at all, which cannot be answered, is a device error (NEEDS_RESET).

In-flight requests are part of the saved state as (queue, head) pairs: their
chains are still in guest memory, untouched by the driver, so restore walks
them again and re-submits them (like QEMU). Re-running a read or write is
harmless. ``drain()`` finishes them instead when a caller prefers that.
A reset drops completions of requests started before it (``_generation``).
"""

from __future__ import annotations

import ctypes
import logging
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kvmlite.devices.persist import Persist
from kvmlite.devices.virtio.device import VirtioDevice, VirtioDeviceState
from kvmlite.devices.virtio.executor import IoExecutor, SyncExecutor
from kvmlite.devices.virtio.queue import ChainError, Descriptor, DescriptorChain, QueueError
from kvmlite.devices.virtio.spec import VIRTIO_ID_BLOCK, bit
from kvmlite.errors import ConfigError, GuestMemoryError, StateError
from kvmlite.memory import GuestMemory

# §5.2.3 feature bits
VIRTIO_BLK_F_SIZE_MAX = 1
VIRTIO_BLK_F_SEG_MAX = 2
VIRTIO_BLK_F_RO = 5
VIRTIO_BLK_F_BLK_SIZE = 6
VIRTIO_BLK_F_FLUSH = 9
VIRTIO_BLK_F_MQ = 12
VIRTIO_BLK_F_DISCARD = 13
VIRTIO_BLK_F_WRITE_ZEROES = 14

# §5.2.6 request types and status
VIRTIO_BLK_T_IN = 0
VIRTIO_BLK_T_OUT = 1
VIRTIO_BLK_T_FLUSH = 4
VIRTIO_BLK_T_GET_ID = 8
VIRTIO_BLK_T_DISCARD = 11
VIRTIO_BLK_T_WRITE_ZEROES = 13
VIRTIO_BLK_S_OK = 0
VIRTIO_BLK_S_IOERR = 1
VIRTIO_BLK_S_UNSUPP = 2
VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1
VIRTIO_BLK_ID_BYTES = 20

log = logging.getLogger(__name__)

SECTOR_SIZE = 512
#: Host I/O errors logged per device (the guest sees each one as VIRTIO_BLK_S_IOERR).
MAX_LOGGED_ERRORS = 10
HEADER = struct.Struct("<IIQ")
SEGMENT = struct.Struct("<QII")  # struct virtio_blk_discard_write_zeroes
MAX_DISCARD_SECTORS = 1 << 22  # 2 GiB per segment
MAX_SEGMENTS = 32


class VirtioBlkConfig(ctypes.LittleEndianStructure):
    """struct virtio_blk_config (§5.2.4) up to write_zeroes_may_unmap."""

    _pack_ = 1
    _fields_ = [
        ("capacity", ctypes.c_uint64),
        ("size_max", ctypes.c_uint32),
        ("seg_max", ctypes.c_uint32),
        ("cylinders", ctypes.c_uint16),
        ("heads", ctypes.c_uint8),
        ("sectors", ctypes.c_uint8),
        ("blk_size", ctypes.c_uint32),
        ("physical_block_exp", ctypes.c_uint8),
        ("alignment_offset", ctypes.c_uint8),
        ("min_io_size", ctypes.c_uint16),
        ("opt_io_size", ctypes.c_uint32),
        ("writeback", ctypes.c_uint8),
        ("unused0", ctypes.c_uint8),
        ("num_queues", ctypes.c_uint16),
        ("max_discard_sectors", ctypes.c_uint32),
        ("max_discard_seg", ctypes.c_uint32),
        ("discard_sector_alignment", ctypes.c_uint32),
        ("max_write_zeroes_sectors", ctypes.c_uint32),
        ("max_write_zeroes_seg", ctypes.c_uint32),
        ("write_zeroes_may_unmap", ctypes.c_uint8),
        ("unused1", ctypes.c_uint8 * 3),
    ]


class BlockBackendLike(Protocol):
    """What virtio-blk needs of ``kvmlite.backends.block.BlockBackend``."""

    size: int
    read_only: bool

    def readv(self, offset: int, bufs: Sequence[memoryview]) -> int: ...
    def writev(self, offset: int, bufs: Sequence[memoryview]) -> int: ...
    def flush(self) -> None: ...
    def discard(self, offset: int, length: int) -> None: ...
    def write_zeroes(self, offset: int, length: int, unmap: bool = False) -> None: ...


@dataclass(frozen=True)
class VirtioBlockState:
    device: VirtioDeviceState
    #: (queue index, head descriptor) of requests not yet completed.
    inflight: tuple[tuple[int, int], ...]


#: What an executor needs to be used as an I/O engine (kvmlite.backends.block.engines).
_ENGINE_OPS = ("readv", "writev", "fdatasync", "commit")
_EngineOp = Callable[[Callable[[Any], None]], None]


class _BadRequest(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


def slice_views(
    memory: GuestMemory, descs: Sequence[Descriptor], skip: int, length: int
) -> list[memoryview]:
    """Memoryviews of ``length`` bytes of the descriptors' byte stream after ``skip``."""
    out = []
    for d in descs:
        if length <= 0:
            break
        if skip >= d.length:
            skip -= d.length
            continue
        n = min(d.length - skip, length)
        out.append(memory.view(d.addr + skip, n))
        length -= n
        skip = 0
    return out


class VirtioBlock(VirtioDevice, Persist[VirtioBlockState]):
    """A virtio-blk disk over a block backend."""

    device_type = VIRTIO_ID_BLOCK

    def __init__(
        self,
        backend: BlockBackendLike,
        *,
        serial: str = "",
        num_queues: int = 1,
        queue_size: int = 256,
        executor: IoExecutor | None = None,
        block_size: int = SECTOR_SIZE,
        discard: bool = True,
        write_zeroes: bool = True,
        name: str = "virtio-blk",
    ) -> None:
        sid = serial.encode("ascii", "replace")
        if len(sid) > VIRTIO_BLK_ID_BYTES:
            raise ConfigError(f"{name}: serial {serial!r} is longer than 20 characters")
        if block_size < SECTOR_SIZE or block_size & (block_size - 1):
            raise ConfigError(f"{name}: block size {block_size} must be a power of two >= 512")
        if not 1 <= num_queues <= 64:
            raise ConfigError(f"{name}: num_queues {num_queues} must be 1..64")
        read_only = bool(backend.read_only)
        features = bit(VIRTIO_BLK_F_SEG_MAX) | bit(VIRTIO_BLK_F_BLK_SIZE) | bit(VIRTIO_BLK_F_FLUSH)
        if read_only:
            features |= bit(VIRTIO_BLK_F_RO)
        else:
            features |= bit(VIRTIO_BLK_F_DISCARD) if discard else 0
            features |= bit(VIRTIO_BLK_F_WRITE_ZEROES) if write_zeroes else 0
        if num_queues > 1:
            features |= bit(VIRTIO_BLK_F_MQ)
        super().__init__(name=name, queue_sizes=[queue_size] * num_queues, features=features)
        self.backend = backend
        self.serial = sid
        self.read_only = read_only
        self.block_size = block_size
        self.executor: IoExecutor = executor if executor is not None else SyncExecutor()
        self.inflight: dict[tuple[int, int], int] = {}
        self._restored_inflight: tuple[tuple[int, int], ...] = ()
        self._generation = 0
        self._errors_logged = 0
        ex = self.executor
        #: An I/O engine's vectored ops (None: every request is a job).
        self._engine: Any = ex if all(hasattr(ex, a) for a in _ENGINE_OPS) else None
        self._io_target = getattr(backend, "io_target", None) if self._engine else None
        self._flush_target = getattr(backend, "flush_target", None) if self._engine else None

    # -- config -------------------------------------------------------------------------

    def config_bytes(self) -> bytes:
        c = VirtioBlkConfig()
        c.capacity = self.backend.size // SECTOR_SIZE
        c.seg_max = max(1, min(self.queue_max_sizes) - 2)
        c.blk_size = self.block_size
        c.num_queues = self.num_queues
        align = self.block_size // SECTOR_SIZE
        c.max_discard_sectors = MAX_DISCARD_SECTORS
        c.max_discard_seg = MAX_SEGMENTS
        c.discard_sector_alignment = align
        c.max_write_zeroes_sectors = MAX_DISCARD_SECTORS
        c.max_write_zeroes_seg = MAX_SEGMENTS
        c.write_zeroes_may_unmap = 1
        return bytes(c)

    # -- requests -----------------------------------------------------------------------

    def handle_queue(self, index: int) -> None:
        q = self.queues[index]
        mem = self.memory
        assert mem is not None
        while True:
            q.disable_notification(mem)
            while (chain := q.pop(mem)) is not None:
                self._start(index, chain)
            if self._engine is not None:
                self._engine.commit()  # the whole batch in one system call
            if not q.enable_notification(mem):
                break

    def _start(self, qi: int, chain: DescriptorChain) -> None:
        mem = self.memory
        assert mem is not None
        writable = [d for d in chain.writable if d.length]
        if not writable:
            raise ChainError(chain.head, "request has no writable status byte")
        last = writable[-1]
        status_addr = last.addr + last.length - 1
        key = (qi, chain.head)
        gen = self._generation
        self.inflight[key] = status_addr
        try:
            job, used_len, nowait, engine_op = self._parse(mem, chain)
        except _BadRequest as e:
            self._finish(qi, chain.head, status_addr, 1, e.status, gen)
            return

        def completion(result: Any) -> None:
            if isinstance(result, BaseException):
                self._log_error(qi, chain.head, result)
            ok = not isinstance(result, BaseException) and result is not False
            status = VIRTIO_BLK_S_OK if ok else VIRTIO_BLK_S_IOERR
            self._finish(qi, chain.head, status_addr, used_len if ok else 1, status, gen)

        if nowait is not None:
            # Data already in the host's page cache: complete here and now,
            # without the round trip through an I/O thread.
            try:
                done = nowait()
            except Exception as e:  # mapped to an I/O error status
                done = e
            if done is not None:
                completion(done)
                return
        if engine_op is not None:
            engine_op(completion)
        else:
            self.executor.submit(job, completion)

    def _log_error(self, qi: int, head: int, e: BaseException) -> None:
        self._errors_logged += 1
        if self._errors_logged <= MAX_LOGGED_ERRORS:
            more = " (no more are logged)" if self._errors_logged == MAX_LOGGED_ERRORS else ""
            log.warning(
                "%s: request %d of queue %d: host I/O error: %s%s", self.name, head, qi, e, more
            )

    def _parse(
        self, mem: GuestMemory, chain: DescriptorChain
    ) -> tuple[Callable[[], Any], int, Callable[[], Any] | None, _EngineOp | None]:
        """Turn a chain into (job, used length on success, non-blocking attempt or
        None, engine submission or None).

        The attempt returns None when it would block (the job then runs on
        the executor), else the job's result. The engine submission, where
        there is one, replaces the job. _BadRequest on guest errors.
        """
        readable = chain.readable
        writable = chain.writable
        if chain.readable_len < HEADER.size:
            raise _BadRequest(VIRTIO_BLK_S_IOERR)
        rtype, _, sector = HEADER.unpack(
            b"".join(bytes(v) for v in slice_views(mem, readable, 0, HEADER.size))
        )
        out_len = chain.readable_len - HEADER.size
        in_len = chain.writable_len - 1
        backend = self.backend
        if rtype == VIRTIO_BLK_T_IN:
            offset = self._check_range(sector, in_len)
            views = slice_views(mem, writable, 0, in_len)

            readv_nowait = getattr(backend, "readv_nowait", None)  # page-cache hits inline

            def read_nowait() -> bool | None:
                assert readv_nowait is not None
                n = readv_nowait(offset, views)
                return None if n is None else bool(n == in_len)

            nowait = read_nowait if readv_nowait is not None else None
            op = self._engine_rw("readv", offset, views, in_len, False)
            return (lambda: backend.readv(offset, views) == in_len), in_len + 1, nowait, op
        if rtype == VIRTIO_BLK_T_OUT:
            if self.read_only:
                raise _BadRequest(VIRTIO_BLK_S_IOERR)
            offset = self._check_range(sector, out_len)
            views = slice_views(mem, readable, HEADER.size, out_len)

            writev_nowait = getattr(backend, "writev_nowait", None)

            def write_nowait() -> bool | None:
                assert writev_nowait is not None
                n = writev_nowait(offset, views)
                return None if n is None else bool(n == out_len)

            nowait = write_nowait if writev_nowait is not None else None
            op = self._engine_rw("writev", offset, views, out_len, True)
            return (lambda: backend.writev(offset, views) == out_len), 1, nowait, op
        if rtype == VIRTIO_BLK_T_FLUSH:
            if self.read_only:
                return (lambda: True), 1, None, None
            return backend.flush, 1, None, self._engine_flush()
        if rtype == VIRTIO_BLK_T_GET_ID:
            n = min(in_len, VIRTIO_BLK_ID_BYTES)
            ident = self.serial.ljust(VIRTIO_BLK_ID_BYTES, b"\0")[:n]
            views = slice_views(mem, writable, 0, n)

            def get_id() -> bool:
                pos = 0
                for v in views:
                    v[:] = ident[pos : pos + len(v)]
                    pos += len(v)
                return True

            return get_id, n + 1, None, None
        if rtype in (VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES):
            return self._parse_segments(mem, rtype, readable, out_len), 1, None, None
        raise _BadRequest(VIRTIO_BLK_S_UNSUPP)

    def _engine_rw(
        self, op: str, offset: int, views: list[memoryview], length: int, write: bool
    ) -> _EngineOp | None:
        """The engine's readv/writev of the request, if the backend maps it to one fd."""
        if self._io_target is None:
            return None
        target = self._io_target(offset, length, write)
        if target is None:
            return None
        fd, host_offset = target
        submit = getattr(self._engine, op)

        def run(completion: Callable[[Any], None]) -> None:
            def done(r: Any) -> None:
                completion(r if isinstance(r, BaseException) else r == length)

            submit(fd, host_offset, views, done)

        return run

    def _engine_flush(self) -> _EngineOp | None:
        fd = self._flush_target() if self._flush_target is not None else None
        if fd is None:
            return None
        engine = self._engine
        return lambda completion: engine.fdatasync(fd, completion)

    def _check_range(self, sector: int, length: int) -> int:
        if length % SECTOR_SIZE:
            raise _BadRequest(VIRTIO_BLK_S_IOERR)
        offset = sector * SECTOR_SIZE
        if offset + length > self.backend.size:
            raise _BadRequest(VIRTIO_BLK_S_IOERR)
        return offset

    def _parse_segments(
        self, mem: GuestMemory, rtype: int, readable: list[Descriptor], out_len: int
    ) -> Callable[[], Any]:
        discard = rtype == VIRTIO_BLK_T_DISCARD
        feature = VIRTIO_BLK_F_DISCARD if discard else VIRTIO_BLK_F_WRITE_ZEROES
        if not self.avail_features & bit(feature):
            raise _BadRequest(VIRTIO_BLK_S_UNSUPP)
        if out_len == 0 or out_len % SEGMENT.size or out_len // SEGMENT.size > MAX_SEGMENTS:
            raise _BadRequest(VIRTIO_BLK_S_IOERR)
        raw = b"".join(bytes(v) for v in slice_views(mem, readable, HEADER.size, out_len))
        segs = []
        for sector, count, flags in SEGMENT.iter_unpack(raw):
            # §5.2.6.2: unmap is only for write zeroes; unknown flags are unsupported.
            if flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP or (discard and flags):
                raise _BadRequest(VIRTIO_BLK_S_UNSUPP)
            if count > MAX_DISCARD_SECTORS:
                raise _BadRequest(VIRTIO_BLK_S_IOERR)
            offset = self._check_range(sector, count * SECTOR_SIZE)
            segs.append((offset, count * SECTOR_SIZE, bool(flags)))
        backend = self.backend

        def run() -> bool:
            for offset, length, unmap in segs:
                if discard:
                    backend.discard(offset, length)
                else:
                    backend.write_zeroes(offset, length, unmap=unmap)
            return True

        return run

    def _finish(
        self, qi: int, head: int, status_addr: int, used: int, status: int, gen: int
    ) -> None:
        with self.lock:
            if gen != self._generation or not self.activated:
                return  # the device was reset while the request ran
            if self.inflight.pop((qi, head), None) is None:
                # Completed already: a second used entry for this head would
                # answer the driver's next request in that slot too early.
                log.warning("%s: dropped a second completion of request %d", self.name, head)
                return
            mem = self.memory
            assert mem is not None
            try:
                mem.write_int(status_addr, 1, status)
                self.queues[qi].add_used(mem, head, used)
                self.signal_queue(qi)
            except (QueueError, GuestMemoryError) as e:
                self.device_error(f"queue {qi}: {e}")

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
        if restored and self._engine is not None:
            self._engine.commit()

    def on_reset(self) -> None:
        self._generation += 1
        self.inflight.clear()

    def drain(self, timeout: float | None = None) -> bool:
        """Complete every in-flight request (run the executor's completions)."""
        return self.executor.wait_idle(timeout)

    def save(self) -> VirtioBlockState:
        with self.lock:
            return VirtioBlockState(self.save_base(), tuple(sorted(self.inflight)))

    def load_state(self, state: VirtioBlockState) -> None:
        with self.lock:
            for qi, _ in state.inflight:
                if not 0 <= qi < self.num_queues:
                    raise StateError(f"{self.name}: snapshot has a request on queue {qi}")
            self.restore_base(state.device)
            self.inflight.clear()
            self._restored_inflight = state.inflight
