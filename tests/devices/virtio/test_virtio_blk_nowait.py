"""virtio-blk's inline path: requests the backend can serve without blocking
complete on the calling thread; the rest go to the executor."""

from __future__ import annotations

import struct
from pathlib import Path

from kvmlite.backends.block.raw import RawBackend
from kvmlite.devices.virtio.blk import (
    VIRTIO_BLK_S_OK,
    VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT,
    VirtioBlock,
)
from kvmlite.testing import attach_drivers, bytearray_memory


class RecordingExecutor:
    """Runs jobs inline like SyncExecutor, but counts them."""

    completion_fd = None

    def __init__(self) -> None:
        self.jobs = 0

    def submit(self, job, completion) -> None:
        self.jobs += 1
        completion(job())

    def run_completions(self) -> int:
        return 0

    def wait_idle(self, timeout=None) -> bool:
        return True


def hdr(rtype: int, sector: int = 0) -> bytes:
    return struct.pack("<IIQ", rtype, 0, sector)


def test_cached_reads_and_writes_complete_inline(tmp_path: Path) -> None:
    img = tmp_path / "disk.raw"
    img.write_bytes(bytes(range(256)) * 4096)  # 1 MiB, now in the page cache
    backend = RawBackend(str(img))
    ex = RecordingExecutor()
    dev = VirtioBlock(backend, executor=ex)
    [drv], [irq], _ = attach_drivers(dev, bytearray_memory(4 << 20), queue_size=64)

    drv.add_chain([hdr(VIRTIO_BLK_T_IN, 2)], [4096, 1])
    drv.kick()
    [used] = drv.get_used()
    assert used.written[:4096] == (bytes(range(256)) * 16) and used.written[4096] == VIRTIO_BLK_S_OK
    assert ex.jobs == 0  # a cached read never leaves this thread
    drv.add_chain([hdr(VIRTIO_BLK_T_OUT, 8), b"\xab" * 512], [1])
    drv.kick()
    [used] = drv.get_used()
    assert used.written[0] == VIRTIO_BLK_S_OK
    assert img.read_bytes()[4096 : 4096 + 512] == b"\xab" * 512
    # Buffered RWF_NOWAIT writes depend on the filesystem (ext4 refuses
    # them): then the write, and only the write, took the executor.
    assert ex.jobs == (1 if backend._nowait_unsupported["write"] else 0)
    assert irq.count == 2
    backend.close()


class NeverCached:
    """A backend whose non-blocking attempts always say 'would block'."""

    size, read_only = 1 << 20, False

    def __init__(self) -> None:
        self.data = bytearray(self.size)
        self.attempts = 0

    def readv_nowait(self, offset, bufs):
        self.attempts += 1
        return None

    def readv(self, offset, bufs):
        for b in bufs:
            b[:] = self.data[offset : offset + len(b)]
            offset += len(b)
        return sum(len(b) for b in bufs)

    def flush(self) -> None:
        pass


def test_would_block_goes_to_the_executor() -> None:
    backend = NeverCached()
    backend.data[:512] = b"\x5a" * 512
    ex = RecordingExecutor()
    dev = VirtioBlock(backend, executor=ex)  # type: ignore[arg-type]
    [drv], _, _ = attach_drivers(dev, bytearray_memory(4 << 20), queue_size=64)
    drv.add_chain([hdr(VIRTIO_BLK_T_IN, 0)], [512, 1])
    drv.kick()
    [used] = drv.get_used()
    assert used.written[:512] == b"\x5a" * 512 and used.written[512] == VIRTIO_BLK_S_OK
    assert backend.attempts == 1 and ex.jobs == 1


def test_raw_nowait_refuses_direct_and_read_only(tmp_path: Path) -> None:
    img = tmp_path / "d.raw"
    img.write_bytes(bytes(8192))
    ro = RawBackend(str(img), read_only=True)
    assert ro.writev_nowait(0, [b"x" * 512]) is None
    assert ro.readv_nowait(0, [memoryview(bytearray(512))]) == 512
    ro.close()


def test_indirect_table_of_queue_size_entries_is_legal() -> None:
    """Linux fills an indirect table up to the queue size for large requests
    (found by a guest's dd bs=1M oflag=direct through vhost-user)."""
    from kvmlite.devices.virtio.blk import VIRTIO_BLK_T_IN

    backend = NeverCached()
    dev = VirtioBlock(backend, queue_size=16)  # type: ignore[arg-type]
    [drv], _, _ = attach_drivers(dev, bytearray_memory(4 << 20), queue_size=16)
    drv.add_chain([hdr(VIRTIO_BLK_T_IN, 0)], [512] * 14 + [1], indirect=True)  # 16 entries
    drv.kick()
    [used] = drv.get_used()
    assert used.length == 14 * 512 + 1 and used.written[-1] == VIRTIO_BLK_S_OK
    assert not dev.broken
