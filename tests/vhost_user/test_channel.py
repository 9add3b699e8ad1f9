"""The back-end request channel: SET_BACKEND_REQ_FD and config-change messages.

A served ``VirtioNet`` whose link goes down (``set_link(False)``, which calls
``config_changed()``) must send VHOST_USER_BACKEND_CONFIG_CHANGE_MSG on the
socket the front-end handed over; bad hand-overs are refused.
"""

from __future__ import annotations

import os
import socket

import pytest

from kvmlite.vhost_user import protocol as p
from kvmlite.vhost_user.channel import BackendRequest
from kvmlite.vhost_user.protocol import ProtocolError, ProtocolFeature, Request

from .test_net import net, start  # noqa: F401


def test_link_change_sends_config_change_msg(net) -> None:  # noqa: ANN001, F811
    served, dev, f, peer = net
    offered = f.call_u64(Request.GET_PROTOCOL_FEATURES)
    assert offered & (1 << ProtocolFeature.BACKEND_REQ)
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    try:
        start(f)  # negotiates everything offered, starts the rings (activation)
        assert f.ack(Request.SET_BACKEND_REQ_FD, b"", [theirs.fileno()]) == 0
        dev.set_link(False)
        hdr = p.VhostUserHeader.from_buffer_copy(ours.recv(p.HEADER_SIZE))
        assert (hdr.request, hdr.flags, hdr.size) == (
            BackendRequest.CONFIG_CHANGE_MSG,
            p.VHOST_USER_VERSION,
            0,
        )
        assert dev.read_config(6, 2) == b"\0\0"  # status: link down
        dev.set_link(True)
        hdr = p.VhostUserHeader.from_buffer_copy(ours.recv(p.HEADER_SIZE))
        assert hdr.request == BackendRequest.CONFIG_CHANGE_MSG
    finally:
        ours.close()
        theirs.close()


def test_channel_needs_the_protocol_feature(net) -> None:  # noqa: ANN001, F811
    served, dev, f, peer = net
    f.negotiate(protocol_features=1 << ProtocolFeature.REPLY_ACK)
    ours, theirs = socket.socketpair()
    try:
        assert f.ack(Request.SET_BACKEND_REQ_FD, b"", [theirs.fileno()]) == 1
        dev.set_link(False)  # nothing to send it on: no error either
        assert f.call_u64(Request.GET_FEATURES)  # still served
    finally:
        ours.close()
        theirs.close()


def test_channel_fd_that_is_no_socket_is_refused(net) -> None:  # noqa: ANN001, F811
    served, dev, f, peer = net
    f.negotiate()
    efd = os.eventfd(0)
    try:
        assert f.ack(Request.SET_BACKEND_REQ_FD, b"", [efd]) == 1
        assert f.call_u64(Request.GET_FEATURES)
    finally:
        os.close(efd)


def test_peer_gone_is_logged_not_raised(net) -> None:  # noqa: ANN001, F811
    served, dev, f, peer = net
    start(f)
    ours, theirs = socket.socketpair()
    assert f.ack(Request.SET_BACKEND_REQ_FD, b"", [theirs.fileno()]) == 0
    ours.close()
    theirs.close()
    dev.set_link(False)  # EPIPE on the channel: logged once, the device carries on
    dev.set_link(True)
    assert f.call_u64(Request.GET_FEATURES)


@pytest.mark.parametrize(("payload", "nfds"), [(b"", 0), (b"\0" * 4, 1), (b"", 2)])
def test_set_backend_req_fd_malformed(payload: bytes, nfds: int) -> None:
    with pytest.raises(ProtocolError):
        p.parse_payload(Request.SET_BACKEND_REQ_FD, payload, nfds)
    assert p.parse_payload(Request.SET_BACKEND_REQ_FD, b"", 1) is None
    assert p.parse_payload(Request.SET_BACKEND_REQ_FD, p.u64(0), 1) is None
