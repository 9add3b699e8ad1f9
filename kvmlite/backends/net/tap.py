"""A Linux tap interface as the host side of virtio-net (one backend per queue pair).

Follows the kernel's Documentation/networking/tuntap.rst: a tap fd carries
exactly one Ethernet frame per read() and per write(); with IFF_VNET_HDR
and TUNSETVNETHDRSZ 12 every frame starts with the 12-byte
``virtio_net_hdr_v1`` of virtio 1.2 §5.1.6 (flags, gso_type, hdr_len,
gso_size, csum_start, csum_offset, num_buffers), which is exactly the header
VirtioNet passes through, so guest checksum and segmentation offloads
reach the host stack unchanged. ``TUNSETOFFLOAD`` says which offloaded
frames the tap may hand us: those the guest accepted (§5.1.3.1, GUEST_*).

Theory of operation
-------------------
``TapBackend.open()`` (see ``tap_open``) creates or attaches the interface
and returns one backend per queue (IFF_MULTI_QUEUE for more than one).
Every tap fd is non-blocking. ``fileno()`` is an internal epoll fd, the same
for the backend's life: the tap fd is registered in it for input only while
reading is on, so with reading off frames wait in the tap's kernel queue
(txqueuelen frames, then the kernel drops and counts them, as a full NIC
would) and the loop is not woken: back-pressure.

Writes practically never fail with EAGAIN (the tap hands the frame to the
host stack at once), but if one does the frame waits in a small queue,
``can_send()`` turns False and EPOLLOUT is watched, so ``service()`` sends
the rest when the fd can take it. A frame the kernel refuses (a malformed
virtio-net header from the guest: EINVAL) is guest input: it is counted in
``tx_dropped`` and logged once per errno, never raised.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import logging
import os
import select
import threading

from kvmlite.backends.net.base import NetBackend, locked
from kvmlite.backends.net.tap_open import (
    TUN_F_CSUM,
    TUN_F_TSO4,
    TUN_F_TSO6,
    TUN_F_TSO_ECN,
    TUN_F_UFO,
    TUNSETOFFLOAD,
    TapGroup,
    check_ifname,
    open_queue,
    run_script,
)
from kvmlite.devices.virtio.net_spec import (
    MAX_FRAME_LEN,
    VIRTIO_NET_F_GUEST_CSUM,
    VIRTIO_NET_F_GUEST_ECN,
    VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_GUEST_UFO,
    VNET_HDR_LEN,
)
from kvmlite.errors import ConfigError

log = logging.getLogger("kvmlite.backends.net")

#: Frames and bytes read per ``recv_frames`` call, so one busy tap cannot starve the loop.
READ_FRAMES = 64
READ_BUDGET = 256 * 1024
#: Frames kept when the tap says EAGAIN before ``can_send()`` says stop.
MAX_QUEUED = 64
#: Read buffer: the largest frame (a 64 KiB GSO packet + Ethernet + VLAN) and
#: the header, with room to spare so a frame that fills it is known to be too big.
READ_SIZE = VNET_HDR_LEN + MAX_FRAME_LEN + 64
#: The most queues a tap has (MAX_TAP_QUEUES in drivers/net/tun.c).
MAX_QUEUES = 256

#: virtio-net feature bit -> TUN_F_* flag (what the guest can take, the tap may give).
OFFLOAD_MAP = (
    (VIRTIO_NET_F_GUEST_CSUM, TUN_F_CSUM),
    (VIRTIO_NET_F_GUEST_TSO4, TUN_F_TSO4),
    (VIRTIO_NET_F_GUEST_TSO6, TUN_F_TSO6),
    (VIRTIO_NET_F_GUEST_ECN, TUN_F_TSO_ECN),
    (VIRTIO_NET_F_GUEST_UFO, TUN_F_UFO),
)


def tun_offloads(features: int) -> int:
    """The TUN_F_* flags for a set of accepted virtio-net features."""
    flags = 0
    for feat, tun_flag in OFFLOAD_MAP:
        if features >> feat & 1:
            flags |= tun_flag
    if not flags & TUN_F_CSUM:
        return 0  # the kernel only segments for a reader that takes partial checksums
    return flags


class TapBackend(NetBackend):
    """One queue of a tap interface."""

    def __init__(
        self,
        fd: int,
        ifname: str,
        *,
        vnet_hdr: bool,
        queue: int = 0,
        group: TapGroup | None = None,
    ) -> None:
        self.ifname = ifname
        self.queue = queue
        self.name = f"tap {ifname}" + (f" queue {queue}" if queue else "")
        self.vnet_hdr = vnet_hdr
        self.closed = False
        self.rx_frames = 0
        self.tx_frames = 0
        self.tx_dropped = 0
        self.rx_dropped = 0
        self._fd = fd
        self._group = group or TapGroup(ifname, None, 1)
        self._lock = threading.RLock()
        self._epoll = select.epoll()
        self._events = 0
        self._reading = True
        self._out: collections.deque[bytes] = collections.deque()
        self._buf = bytearray(READ_SIZE)
        self._logged: set[str] = set()
        self._update_events()

    @classmethod
    def open(
        cls,
        ifname: str | None = None,
        *,
        queues: int = 1,
        vnet_hdr: bool = True,
        script: str | None = None,
        downscript: str | None = None,
    ) -> list[TapBackend]:
        """Create or attach tap ``ifname`` (None: the kernel names it tapN); one backend per queue.

        ``script`` is run as ``script IFNAME`` once the tap is open (like
        QEMU's ``script=``); ``downscript`` when the last queue is closed.
        """
        if not 1 <= queues <= MAX_QUEUES:
            raise ConfigError(f"tap: queues={queues} must be between 1 and {MAX_QUEUES}")
        name = "" if ifname is None else check_ifname(ifname).decode()
        fds: list[int] = []
        try:
            fd, actual = open_queue(name, vnet_hdr=vnet_hdr, multi_queue=queues > 1)
            fds.append(fd)
            for _ in range(1, queues):
                fds.append(open_queue(actual, vnet_hdr=vnet_hdr, multi_queue=True)[0])
            if script is not None:
                run_script(script, actual, "script")
        except BaseException:
            for fd in fds:
                os.close(fd)  # a tap we created goes away with its last fd
            raise
        group = TapGroup(actual, downscript, queues)
        backends: list[TapBackend] = []
        try:
            for i, fd in enumerate(fds):
                backends.append(cls(fd, actual, vnet_hdr=vnet_hdr, queue=i, group=group))
        except BaseException:  # out of fds for the epoll: leave nothing open
            group.downscript = None
            for b in backends:
                b.close()
            for fd in fds[len(backends) :]:
                os.close(fd)
            raise
        log.info("tap: %s open, %d queue(s), vnet_hdr=%s", actual, queues, vnet_hdr)
        return backends

    # -- internals -----------------------------------------------------------------------------

    def _update_events(self) -> None:
        """Watch the tap fd for exactly what can be acted on now (none: unregistered)."""
        if self._fd < 0:
            return
        ev = (select.EPOLLIN if self._reading and not self.closed else 0) | (
            select.EPOLLOUT if self._out else 0
        )
        if ev == self._events:
            return
        if not ev:
            self._epoll.unregister(self._fd)
        elif self._events:
            self._epoll.modify(self._fd, ev)
        else:
            self._epoll.register(self._fd, ev)
        self._events = ev

    def _log_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning("%s: " + msg + " (logged once)", self.name, *args)

    def _gone(self, e: OSError) -> None:
        # EBADFD/ENODEV: the interface was deleted under us; the fd is dead for good.
        log.warning("%s: the tap is gone (%s); no more traffic", self.name, e.strerror)
        self.closed = True
        self._out.clear()
        self._update_events()

    # -- the NetBackend interface ----------------------------------------------------------------

    def fileno(self) -> int:
        return self._epoll.fileno()

    @property
    def tap_fd(self) -> int:
        """The tap queue's own fd (for tests and diagnostics; the loop watches ``fileno()``)."""
        return self._fd

    @locked
    def set_reading(self, on: bool) -> None:
        """Whether incoming frames make ``fileno()`` readable (off while the guest is full)."""
        if on != self._reading:
            self._reading = on
            self._update_events()

    @locked
    def set_offloads(self, features: int) -> None:
        """Let the tap hand us the offloaded frames the guest accepted (TUNSETOFFLOAD)."""
        if not self.vnet_hdr or self._fd < 0:
            return
        flags = tun_offloads(features)
        try:
            fcntl.ioctl(self._fd, TUNSETOFFLOAD, flags)
        except OSError as e:
            # A kernel without UFO support refuses the flag: fewer offloads are still correct.
            if flags & TUN_F_UFO:
                try:
                    fcntl.ioctl(self._fd, TUNSETOFFLOAD, flags & ~TUN_F_UFO)
                    return
                except OSError:
                    pass
            self._log_once("offload", "TUNSETOFFLOAD %#x failed: %s", flags, e.strerror)

    @locked
    def service(self) -> None:
        """Write frames the tap refused earlier with EAGAIN; never blocks."""
        if self._out:
            self.flush()

    @locked
    def send(self, frame: bytes) -> None:
        if self.closed or self._fd < 0:
            self.tx_dropped += 1
            return
        if not (VNET_HDR_LEN if self.vnet_hdr else 0) < len(frame) <= READ_SIZE:
            self.tx_dropped += 1
            self._log_once("size", "not sending a frame of %d bytes", len(frame))
            return
        self._out.append(frame)
        self.flush()

    def can_send(self) -> bool:
        return len(self._out) < MAX_QUEUED

    def wants_write(self) -> bool:
        return bool(self._out)

    @locked
    def flush(self) -> None:
        while self._out and self._fd >= 0 and not self.closed:
            try:
                os.write(self._fd, self._out[0])
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno in (errno.EBADFD, errno.ENODEV):
                    self._gone(e)
                    return
                # The kernel refused this frame (EINVAL: a bad virtio-net header,
                # EIO: the interface is down, ...): drop it, as a NIC drops garbage.
                self._out.popleft()
                self.tx_dropped += 1
                self._log_once(f"tx{e.errno}", "frame dropped by the kernel: %s", e.strerror)
                continue
            self._out.popleft()
            self.tx_frames += 1
        self._update_events()  # no epoll_ctl unless the mask changed

    @locked
    def recv_frames(self) -> list[bytes]:
        frames: list[bytes] = []
        if self._fd < 0 or self.closed:
            return frames
        budget = READ_BUDGET
        buf = self._buf
        view = memoryview(buf)
        while len(frames) < READ_FRAMES and budget > 0:
            try:
                n = os.readv(self._fd, [buf])
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno in (errno.EBADFD, errno.ENODEV):
                    self._gone(e)
                else:
                    self._log_once(f"rx{e.errno}", "read failed: %s", e.strerror)
                break
            if n >= READ_SIZE or n <= (VNET_HDR_LEN if self.vnet_hdr else 0):
                # Truncated (the interface's gso_max_size was raised past 64 KiB) or empty.
                self.rx_dropped += 1
                self._log_once("rxsize", "dropped a received frame of %d bytes", n)
                budget -= max(n, 1)
                continue
            frames.append(bytes(view[:n]))
            budget -= n
        view.release()
        self.rx_frames += len(frames)
        return frames

    @locked
    def close(self) -> None:
        if self._fd >= 0:
            self._group.queue_closing()
            os.close(self._fd)
            self._fd = -1
            self._out.clear()
        if not self._epoll.closed:
            self._epoll.close()
        self.closed = True
