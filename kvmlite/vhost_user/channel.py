"""The back-end request channel (vhost-user.rst "Back-end message types").

With protocol feature BACKEND_REQ (formerly SLAVE_REQ) negotiated, the
front-end hands the back-end one end of a socket pair with
VHOST_USER_SET_BACKEND_REQ_FD; the back-end then sends its own requests on
it. kvmlite sends one: VHOST_USER_BACKEND_CONFIG_CHANGE_MSG when the
device's config space changed (virtio-net link status, a resized disk), so
the front-end re-reads it with GET_CONFIG and interrupts its guest.

``ConfigChangeInterrupt`` is the device's ``config_interrupt`` (the
``Interrupt`` the transport hands to ``VirtioDevice.activate``), so the
device's ``config_changed()`` reaches the front-end unchanged. It may fire
on any thread; sends are serialised by a lock and never wait for a reply
(NEED_REPLY is not set, so the front-end sends none).
"""

from __future__ import annotations

import enum
import logging
import socket
import threading

from kvmlite.vhost_user import protocol as p

log = logging.getLogger("kvmlite.vhost_user")


class BackendRequest(enum.IntEnum):
    """Back-end message types."""

    IOTLB_MSG = 1
    CONFIG_CHANGE_MSG = 2
    VRING_HOST_NOTIFIER_MSG = 3


class BackendChannel:
    """The socket the front-end gave us for our requests (absent: nothing is sent)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def attach(self, fd: int) -> None:
        """Take ownership of ``fd`` (a connected stream socket); the previous one is closed.

        OSError (ENOTSOCK) if ``fd`` is no socket; the caller still owns it then.
        """
        sock = socket.socket(fileno=fd)
        sock.settimeout(1.0)  # a front-end that stops reading must not stall the device
        with self._lock:
            old, self._sock = self._sock, sock
            self._warned = False
        if old is not None:
            old.close()

    def send(self, request: BackendRequest, payload: bytes = b"") -> bool:
        """Send one request; False (logged once) when there is no channel or it broke."""
        with self._lock:
            if self._sock is None:
                return False
            try:
                self._sock.sendall(p.encode(request, payload))
                return True
            except OSError as e:
                if not self._warned:
                    self._warned = True
                    log.error("back-end request channel: %s; requests are dropped", e)
                return False

    def close(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


class ConfigChangeInterrupt:
    """A device's config interrupt: VHOST_USER_BACKEND_CONFIG_CHANGE_MSG on the channel."""

    def __init__(self, channel: BackendChannel) -> None:
        self.channel = channel

    def trigger(self) -> None:
        self.channel.send(BackendRequest.CONFIG_CHANGE_MSG)
