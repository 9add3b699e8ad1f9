"""A vhost-user front-end in Python, for testing the back-end without QEMU.

It owns memfd guest RAM (mapped here too, so a ``MockDriver`` lays rings out
in it), speaks the front-end side of vhost-user.rst over a unix socket with
SCM_RIGHTS fds, and wires each driver's kick to an eventfd the back-end
watches and each queue's interrupt to a call eventfd it can wait on.
"""

from __future__ import annotations

import mmap
import os
import select
import socket

from kvmlite.memory import GuestMemory, Region
from kvmlite.testing import MockDriver
from kvmlite.vhost_user import protocol as p
from kvmlite.vhost_user.protocol import Request

#: The front-end's fake virtual address of guest RAM (any value: only translated).
USER_BASE = 0x7F12_3400_0000


class Frontend:
    def __init__(
        self, path: str, ram_size: int = 1 << 20, gpa: int = 0, *, sealable: bool = True
    ) -> None:
        """``sealable=False``: RAM is a memfd without MFD_ALLOW_SEALING (it can shrink)."""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)
        flags = os.MFD_CLOEXEC | (os.MFD_ALLOW_SEALING if sealable else 0)
        self.memfd = os.memfd_create("frontend-ram", flags)
        os.ftruncate(self.memfd, ram_size)
        self._map = mmap.mmap(self.memfd, ram_size)
        self._view = memoryview(self._map)
        self.memory = GuestMemory([Region(gpa, ram_size, self._view)])
        self.gpa = gpa
        self.ram_size = ram_size
        self.fds: list[int] = []
        self.kick: dict[int, int] = {}
        self.call: dict[int, int] = {}
        #: Whether REPLY_ACK was negotiated (``ack`` falls back to a round trip).
        self.reply_ack = True

    # -- messages -------------------------------------------------------------------

    def send(
        self, request: int, payload: bytes = b"", fds: list[int] = (), need_reply: bool = False
    ) -> None:
        msg = p.encode(request, payload, need_reply=need_reply)
        socket.send_fds(self.sock, [msg], list(fds))

    def recv_reply(self, request: int) -> bytes:
        hdr = self._exact(p.HEADER_SIZE)
        h = p.VhostUserHeader.from_buffer_copy(hdr)
        assert h.request == request, f"reply to {h.request}, expected {request}"
        assert h.flags == p.VHOST_USER_VERSION | p.VHOST_USER_REPLY_MASK
        return self._exact(h.size)

    def call_u64(self, request: int, payload: bytes = b"") -> int:
        self.send(request, payload)
        return int.from_bytes(self.recv_reply(request), "little")

    def ack(self, request: int, payload: bytes = b"", fds: list[int] = ()) -> int:
        """Send with NEED_REPLY; the REPLY_ACK status (0 = success).

        Without REPLY_ACK negotiated: send, then a GET_FEATURES round trip so
        the back-end has handled the message when this returns (0).
        """
        if not self.reply_ack:
            self.send(request, payload, fds)
            self.call_u64(Request.GET_FEATURES)
            return 0
        self.send(request, payload, fds, need_reply=True)
        return int.from_bytes(self.recv_reply(request), "little")

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("back-end closed the connection")
            buf += chunk
        return buf

    def closed_by_backend(self, timeout: float = 5) -> bool:
        """True once the back-end has closed its end."""
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return False
        try:
            return self.sock.recv(4096) == b""
        except ConnectionResetError:
            return True

    # -- set-up sequences ---------------------------------------------------------------

    def negotiate(self, protocol_features: int | None = None, *, vhost_user_pf: bool = True) -> int:
        """GET/SET_FEATURES and protocol features, SET_OWNER; returns the device features.

        ``vhost_user_pf=False``: VHOST_USER_F_PROTOCOL_FEATURES is not acked
        (no REPLY_ACK then, and rings start enabled).
        """
        features = self.call_u64(Request.GET_FEATURES)
        assert features & (1 << p.VHOST_USER_F_PROTOCOL_FEATURES)
        if vhost_user_pf:
            offered = self.call_u64(Request.GET_PROTOCOL_FEATURES)
            want = offered if protocol_features is None else protocol_features
            self.send(Request.SET_PROTOCOL_FEATURES, p.u64(want))
            self.reply_ack = bool(want & offered & (1 << p.ProtocolFeature.REPLY_ACK))
        else:
            self.reply_ack = False
            features &= ~(1 << p.VHOST_USER_F_PROTOCOL_FEATURES)
        self.send(Request.SET_OWNER)
        self.send(Request.SET_FEATURES, p.u64(features))
        return features

    def set_mem_table(self, regions: list[p.MemoryRegion] | None = None) -> int:
        if regions is None:
            regions = [p.MemoryRegion(self.gpa, self.ram_size, USER_BASE, 0)]
        return self.ack(Request.SET_MEM_TABLE, p.mem_table(regions), [self.memfd] * len(regions))

    def user_addr(self, gpa: int) -> int:
        return USER_BASE + gpa - self.gpa

    def setup_ring(
        self, index: int, drv: MockDriver, *, start: bool = True, enable: bool = True
    ) -> int:
        """NUM, BASE, ADDR, CALL, KICK (and ENABLE) for one queue; the last ack status."""
        assert self.ack(Request.SET_VRING_NUM, p.vring_state(index, drv.size)) == 0
        assert self.ack(Request.SET_VRING_BASE, p.vring_state(index, 0)) == 0
        status = self.ack(
            Request.SET_VRING_ADDR,
            p.vring_addr(
                index,
                self.user_addr(drv.desc_table),
                self.user_addr(drv.used_ring),
                self.user_addr(drv.avail_ring),
            ),
        )
        if status or not start:
            return status
        call = os.eventfd(0, os.EFD_NONBLOCK)
        kick = os.eventfd(0, os.EFD_NONBLOCK)
        self.fds += [call, kick]
        self.call[index], self.kick[index] = call, kick
        drv.notify = lambda: os.eventfd_write(kick, 1)
        assert self.ack(Request.SET_VRING_CALL, p.u64(index), [call]) == 0
        status = self.ack(Request.SET_VRING_KICK, p.u64(index), [kick])
        if status == 0 and enable:
            assert self.ack(Request.SET_VRING_ENABLE, p.vring_state(index, 1)) == 0
        return status

    def wait_call(self, index: int, timeout: float = 5) -> bool:
        r, _, _ = select.select([self.call[index]], [], [], timeout)
        if r:
            os.eventfd_read(self.call[index])
        return bool(r)

    def close(self) -> None:
        self.sock.close()
        del self.memory
        self._view.release()
        self._map.close()
        os.close(self.memfd)
        for fd in self.fds:
            os.close(fd)
        self.fds = []
