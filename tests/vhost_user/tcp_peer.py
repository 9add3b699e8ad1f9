"""A TCP peer inside a network namespace (kvmlite.testing.netns) for the networking tests
and bench_net: one connection accepted and served on a thread, timed and checksummed."""

from __future__ import annotations

import fcntl
import hashlib
import socket
import threading
import time

from kvmlite.testing.netns import NetNs

#: tcp(7): bytes in the send queue not yet acknowledged by the peer (TIOCOUTQ).
SIOCOUTQ = 0x5411


class TcpPeer:
    """One TCP connection accepted on ``addr:port`` inside a namespace, served on a thread.

    The peer first sends ``send`` and waits until the other side's kernel acknowledged
    all of it (the send queue, SIOCOUTQ in tcp(7), is empty), then shuts its write side
    and reads until the other side's EOF.  ``result()`` gives what it read (count,
    SHA-256) and the seconds from the accept to that EOF; ``sent_seconds`` the seconds
    from the accept until all of ``send`` was acknowledged."""

    def __init__(self, ns: NetNs, addr: str, port: int, send: bytes = b"") -> None:
        self.listener = ns.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((addr, port))
        self.listener.listen(1)
        self.listener.settimeout(120)
        self.send = send
        self.received = 0
        self.digest = hashlib.sha256()
        self.accepted_at = 0.0
        self.eof_at = 0.0
        self.drained_at = 0.0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True, name=f"peer-{port}")
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
            self.accepted_at = time.monotonic()
            with conn:
                conn.settimeout(120)
                if self.send:
                    conn.sendall(self.send)
                    while fcntl.ioctl(conn, SIOCOUTQ, b"\0\0\0\0") != bytes(4):
                        time.sleep(0.0005)
                    self.drained_at = time.monotonic()
                    conn.shutdown(socket.SHUT_WR)
                while data := conn.recv(1 << 16):
                    self.received += len(data)
                    self.digest.update(data)
                self.eof_at = time.monotonic()
        except BaseException as e:  # handed to result()
            self.error = e
        finally:
            self.listener.close()

    @property
    def sent_seconds(self) -> float:
        return self.drained_at - self.accepted_at

    def result(self, timeout: float = 120) -> tuple[int, str, float]:
        """(bytes read, their SHA-256, seconds from accept to EOF), once the peer is done."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the peer's connection did not end"
        if self.error is not None:
            raise AssertionError(f"peer failed: {self.error!r}") from self.error
        return self.received, self.digest.hexdigest(), self.eof_at - self.accepted_at
