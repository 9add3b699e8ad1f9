"""The front-end's guest memory, mapped from SET_MEM_TABLE (vhost-user.rst).

Theory of operation
-------------------
SET_MEM_TABLE hands the back-end one fd per region with the region's guest
physical address, size, the *front-end's* virtual ("user") address of it,
and an offset into the fd.  We mmap each fd MAP_SHARED and build a
``kvmlite.memory.GuestMemory`` whose regions sit at the guest addresses, so
device models address guest RAM exactly as they do inside kvmlite.

SET_VRING_ADDR gives ring addresses as front-end user addresses (unless
VHOST_VRING_F_LOG / IOMMU address translation, which we do not offer), so
the table also keeps ``user_addr -> guest_addr`` ranges to translate them.

A front-end that shrinks a shared file after we mapped it (``ftruncate``)
makes every later touch of the pages past its new end raise SIGBUS in this
process, which Python cannot survive.  So memory must be unable to shrink:
an fd already sealed with F_SEAL_SHRINK (QEMU's ``memory-backend-memfd``,
``seal=on`` by default) is taken as is; a memfd that still allows sealing is
sealed here (guest RAM never shrinks while it is shared); anything else (a
memfd without MFD_ALLOW_SEALING, a tmpfs or hugetlbfs file) is refused.  The
size is checked after the seal, when it can no longer change under us.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
from dataclasses import dataclass

from kvmlite.errors import ConfigError, KvmliteError
from kvmlite.memory import GuestMemory, Region
from kvmlite.vhost_user.protocol import MemoryRegion

log = logging.getLogger("kvmlite.vhost_user")


class BackendError(KvmliteError):
    """A front-end request the back-end cannot carry out (an error reply or a disconnect)."""


@dataclass(frozen=True)
class _UserRange:
    user_addr: int
    size: int
    guest_addr: int


def _seal_against_shrink(fd: int, guest_addr: int) -> None:
    """Make sure the file behind ``fd`` cannot shrink (F_SEAL_SHRINK), or refuse it."""
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    except OSError:  # EINVAL: not a file that supports seals (not memfd/shmem)
        seals = None
    if seals is not None and seals & fcntl.F_SEAL_SHRINK:
        return
    if seals is not None and not seals & fcntl.F_SEAL_SEAL:
        try:
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
            log.debug("sealed the memory region at guest %#x against shrinking", guest_addr)
            return
        except OSError as e:
            log.debug("F_ADD_SEALS on the region at guest %#x: %s", guest_addr, e)
    raise BackendError(
        f"memory region at guest {guest_addr:#x}: its fd could shrink under the back-end"
        " (no F_SEAL_SHRINK seal and none can be added); share guest RAM as a sealable"
        " memfd, e.g. QEMU's memory-backend-memfd (seal=on is its default)"
    )


class MappedMemory:
    """Guest memory mapped from a front-end's memory table; ``close()`` unmaps it."""

    def __init__(self, table: tuple[MemoryRegion, ...], fds: list[int]) -> None:
        """Map every region (the fds stay the caller's to close)."""
        self._maps: list[tuple[memoryview, mmap.mmap]] = []
        regions: list[Region] = []
        try:
            for r, fd in zip(table, fds, strict=True):
                # mmap offsets must be page aligned; the region may start inside a page.
                start = r.mmap_offset - r.mmap_offset % mmap.ALLOCATIONGRANULARITY
                delta = r.mmap_offset - start
                _seal_against_shrink(fd, r.guest_addr)
                try:
                    st_size = os.fstat(fd).st_size
                    if r.mmap_offset + r.size > st_size:
                        raise BackendError(
                            f"memory region at guest {r.guest_addr:#x}: offset {r.mmap_offset:#x}"
                            f" + size {r.size:#x} is past the end of its fd ({st_size:#x} bytes)"
                        )
                    m = mmap.mmap(
                        fd,
                        r.size + delta,
                        mmap.MAP_SHARED,
                        mmap.PROT_READ | mmap.PROT_WRITE,
                        offset=start,
                    )
                except (OSError, ValueError, OverflowError) as e:
                    raise BackendError(
                        f"cannot map memory region at guest {r.guest_addr:#x} "
                        f"(size {r.size:#x}, offset {r.mmap_offset:#x}): {e}"
                    ) from None
                whole = memoryview(m)
                self._maps.append((whole, m))
                regions.append(Region(r.guest_addr, r.size, whole[delta : delta + r.size]))
            try:
                self.memory = GuestMemory(regions)
            except ConfigError as e:
                raise BackendError(f"SET_MEM_TABLE: {e}") from None
        except BaseException:
            self._regions = regions
            self.close()
            raise
        self._regions = regions
        self._user = sorted(
            (_UserRange(r.user_addr, r.size, r.guest_addr) for r in table),
            key=lambda u: u.user_addr,
        )

    def user_to_guest(self, user_addr: int, length: int) -> int:
        """Translate front-end user range [addr, addr+length) to a guest address."""
        for u in self._user:
            if u.user_addr <= user_addr and user_addr + length <= u.user_addr + u.size:
                return u.guest_addr + (user_addr - u.user_addr)
        raise BackendError(
            f"front-end address {user_addr:#x}+{length:#x} is not inside any memory region"
        )

    def close(self) -> None:
        """Unmap; views still held elsewhere keep their mapping alive until released."""
        for r in self._regions:
            r.buf.release()
        for whole, m in self._maps:
            whole.release()
            try:
                m.close()
            except BufferError:
                # A view is still alive somewhere; the mapping goes with the last one.
                log.debug("guest memory still in use; unmapped when its last view is released")
        self._maps = []
        self._regions = []
