"""virtio-net: features, config, transmit, receive (mergeable or not), back-pressure, state."""

from __future__ import annotations

import dataclasses
import struct

import pytest

from kvmlite.devices.virtio.net import VirtioNet, VirtioNetState, format_mac, parse_mac
from kvmlite.devices.virtio.net_spec import (
    OFFLOAD_FEATURES,
    VIRTIO_NET_F_CSUM,
    VIRTIO_NET_F_GUEST_CSUM,
    VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_HOST_TSO4,
    VIRTIO_NET_F_MAC,
    VIRTIO_NET_F_MQ,
    VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_MTU,
    VIRTIO_NET_F_STATUS,
    VIRTIO_NET_HDR,
    VIRTIO_NET_S_LINK_UP,
    VNET_HDR_LEN,
)
from kvmlite.devices.virtio.spec import VIRTIO_F_VERSION_1, bit
from kvmlite.errors import ConfigError, StateError
from kvmlite.state import dumps, loads
from kvmlite.testing import MockDriver, RecordingInterrupt, attach_drivers, bytearray_memory

MAC = "52:54:00:12:34:56"
GUEST_MAC = parse_mac(MAC)
PEER_MAC = bytes.fromhex("020000000001")


class FakeNetBackend:
    """A NetBackend that records sent frames and hands out queued ones."""

    def __init__(self, *, vnet_hdr: bool = False) -> None:
        self.vnet_hdr = vnet_hdr
        self.sent: list[bytes] = []
        self.inbox: list[bytes] = []
        self.recv_calls = 0
        self.sendable = True
        self.offloads: int | None = None

    def send(self, frame: bytes) -> None:
        self.sent.append(frame)

    def recv_frames(self) -> list[bytes]:
        self.recv_calls += 1
        frames, self.inbox = self.inbox, []
        return frames

    def can_send(self) -> bool:
        return self.sendable

    def set_offloads(self, features: int) -> None:
        self.offloads = features


def eth(dst: bytes, payload: bytes, src: bytes = PEER_MAC) -> bytes:
    return dst + src + b"\x08\x00" + payload


def hdr(num_buffers: int = 0, flags: int = 0, gso: int = 0) -> bytes:
    return VIRTIO_NET_HDR.pack(flags, gso, 0, 0, 0, 0, num_buffers)


Rig = tuple[
    VirtioNet, FakeNetBackend, list[MockDriver], list[RecordingInterrupt], RecordingInterrupt
]


def make(*, vnet_hdr: bool = False, mergeable: bool = True, features: int | None = None) -> Rig:
    backend = FakeNetBackend(vnet_hdr=vnet_hdr)
    dev = VirtioNet(backend, mac=MAC, queue_size=64)
    if features is None:
        features = dev.avail_features
        if not mergeable:
            features &= ~bit(VIRTIO_NET_F_MRG_RXBUF)
    drivers, irqs, cfg = attach_drivers(dev, bytearray_memory(2 << 20), features=features)
    return dev, backend, drivers, irqs, cfg


# -- features and config -------------------------------------------------------------------


def test_features_without_a_vnet_header_backend_offer_no_offloads() -> None:
    dev = VirtioNet(FakeNetBackend(), mac=MAC)
    for f in (VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_F_MTU, VIRTIO_NET_F_MRG_RXBUF):
        assert dev.avail_features & bit(f)
    assert dev.avail_features & bit(VIRTIO_F_VERSION_1)
    assert dev.avail_features & OFFLOAD_FEATURES == 0
    assert not dev.avail_features & bit(VIRTIO_NET_F_MQ)


def test_features_with_a_vnet_header_backend_offer_offloads_and_tell_the_backend() -> None:
    dev, backend, *_ = make(vnet_hdr=True)
    assert dev.avail_features & OFFLOAD_FEATURES == OFFLOAD_FEATURES
    assert backend.offloads == dev.acked_features
    assert backend.offloads & bit(VIRTIO_NET_F_GUEST_TSO4)


def test_features_ok_checks_dependencies() -> None:
    dev = VirtioNet(FakeNetBackend(vnet_hdr=True), mac=MAC)
    base = bit(VIRTIO_F_VERSION_1)
    dev.ack_features(base | bit(VIRTIO_NET_F_GUEST_TSO4))
    assert not dev.features_ok()
    dev.ack_features(base | bit(VIRTIO_NET_F_GUEST_TSO4) | bit(VIRTIO_NET_F_GUEST_CSUM))
    assert dev.features_ok()
    dev.ack_features(base | bit(VIRTIO_NET_F_HOST_TSO4))
    assert not dev.features_ok()
    dev.ack_features(base | bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_CSUM))
    assert dev.features_ok()


def test_config_space_and_link() -> None:
    dev, _, _, _, cfg = make()
    mac, status, pairs, mtu = struct.unpack("<6sHHH", dev.read_config(0, 12))
    assert (mac, status, pairs, mtu) == (GUEST_MAC, VIRTIO_NET_S_LINK_UP, 1, 1500)
    dev.set_link(False)
    assert dev.read_config(6, 2) == b"\0\0" and cfg.count == 1
    dev.set_link(False)
    assert cfg.count == 1
    dev.set_link(True)
    assert dev.read_config(6, 2) == b"\1\0" and cfg.count == 2


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        VirtioNet(FakeNetBackend(), mac="52:54:00:12:34")
    with pytest.raises(ConfigError):
        VirtioNet(FakeNetBackend(), mac="01:00:5e:00:00:01")  # multicast
    with pytest.raises(ConfigError):
        VirtioNet(FakeNetBackend(), mac=MAC, mtu=20)
    with pytest.raises(ConfigError, match="multicast"):
        VirtioNet(FakeNetBackend(), mac=b"\x03" + bytes(5))
    with pytest.raises(ConfigError, match="6 bytes"):
        VirtioNet(FakeNetBackend(), mac=bytes(5))
    with pytest.raises(ConfigError):
        VirtioNet([FakeNetBackend(), FakeNetBackend(vnet_hdr=True)], mac=MAC)
    with pytest.raises(ConfigError):
        VirtioNet([], mac=MAC)
    assert format_mac(GUEST_MAC) == MAC


# -- transmit ----------------------------------------------------------------------------------


def test_tx_single_descriptor_strips_the_header() -> None:
    dev, backend, drv, irqs, _ = make()
    frame = eth(PEER_MAC, b"hello")
    drv[1].add_chain([hdr() + frame])
    drv[1].kick()
    assert backend.sent == [frame]
    [u] = drv[1].get_used()
    assert u.length == 0 and irqs[1].count == 1 and dev.stats.tx_frames == 1


def test_tx_multi_descriptor_frames() -> None:
    dev, backend, drv, _, _ = make()
    frame = eth(PEER_MAC, bytes(range(200)))
    drv[1].add_chain([hdr(), frame[:20], frame[20:]])
    drv[1].add_chain([hdr()[:5], hdr()[5:] + frame[:3], frame[3:]], indirect=True)
    drv[1].kick()
    assert backend.sent == [frame, frame]
    assert len(drv[1].get_used()) == 2


def test_tx_passes_the_header_to_a_vnet_header_backend() -> None:
    dev, backend, drv, _, _ = make(vnet_hdr=True)
    h = VIRTIO_NET_HDR.pack(1, 1, 54, 1448, 34, 16, 0)
    frame = eth(PEER_MAC, b"x" * 100)
    drv[1].add_chain([h, frame])
    drv[1].kick()
    assert backend.sent == [h + frame]


def test_tx_waits_while_the_backend_is_backed_up() -> None:
    dev, backend, drv, _, _ = make()
    backend.sendable = False
    frame = eth(PEER_MAC, b"later")
    drv[1].add_chain([hdr() + frame])
    drv[1].kick(force=True)
    assert backend.sent == [] and drv[1].get_used() == [] and dev.tx_blocked[0]
    backend.sendable = True
    dev.tx_ready(0)
    assert backend.sent == [frame] and len(drv[1].get_used()) == 1


# -- receive -----------------------------------------------------------------------------------


def test_rx_into_non_mergeable_buffers() -> None:
    dev, backend, drv, irqs, _ = make(mergeable=False)
    frame = eth(GUEST_MAC, b"ping" * 10)
    drv[0].add_chain([], [VNET_HDR_LEN + 1514])
    backend.inbox = [frame]
    assert dev.handle_rx(0) is True
    [u] = drv[0].get_used()
    assert u.length == VNET_HDR_LEN + len(frame)
    assert u.written[: u.length] == hdr(num_buffers=1) + frame
    assert irqs[0].count == 1 and dev.stats.rx_frames == 1


def test_rx_frame_too_big_for_a_non_mergeable_buffer_is_dropped_and_counted() -> None:
    dev, backend, drv, _, _ = make(mergeable=False)
    drv[0].add_chain([], [VNET_HDR_LEN + 100])
    drv[0].add_chain([], [VNET_HDR_LEN + 1514])
    small = eth(GUEST_MAC, b"s")
    backend.inbox = [eth(GUEST_MAC, b"B" * 500), small]
    assert dev.handle_rx(0) is True
    a, b = drv[0].get_used()
    assert a.length == 0 and b.written[: b.length] == hdr(1) + small
    assert dev.stats.rx_oversize == 1 and not dev.broken


def test_rx_mergeable_frame_spans_several_chains() -> None:
    dev, backend, drv, _, _ = make()
    for _ in range(4):
        drv[0].add_chain([], [100])
    frame = eth(GUEST_MAC, bytes(i & 0xFF for i in range(236)))  # 250 bytes + 12 = 262
    backend.inbox = [frame]
    assert dev.handle_rx(0) is True
    used = drv[0].get_used()
    assert [u.length for u in used] == [100, 100, 62]
    data = b"".join(u.written[: u.length] for u in used)
    assert data == hdr(num_buffers=3) + frame


def test_rx_vnet_header_backend_keeps_its_header_and_gets_num_buffers() -> None:
    dev, backend, drv, _, _ = make(vnet_hdr=True)
    drv[0].add_chain([], [4096])
    h = VIRTIO_NET_HDR.pack(2, 0, 0, 0, 0, 0, 0)  # DATA_VALID
    frame = eth(GUEST_MAC, b"ok")
    backend.inbox = [h + frame]
    dev.handle_rx(0)
    [u] = drv[0].get_used()
    assert u.written[: u.length] == VIRTIO_NET_HDR.pack(2, 0, 0, 0, 0, 0, 1) + frame


@pytest.mark.parametrize("mergeable", [True, False])
def test_back_pressure_keeps_every_frame_in_order(mergeable: bool) -> None:
    dev, backend, drv, _, _ = make(mergeable=mergeable)
    ready: list[int] = []
    dev.rx_ready_handler = ready.append
    frames = [eth(GUEST_MAC, f"frame {i}".encode()) for i in range(5)]
    backend.inbox = list(frames)
    assert dev.handle_rx(0) is False  # no buffers at all
    assert list(dev.pending[0]) == frames and dev.throttled[0]
    backend.inbox = [eth(GUEST_MAC, b"not read yet")]
    assert dev.handle_rx(0) is False
    assert backend.recv_calls == 1  # nothing more was taken from the backend
    drv[0].add_chain([], [1600])
    drv[0].add_chain([], [1600])
    assert drv[0].kick()  # the device asked to be told about new buffers
    assert ready == [] and len(dev.pending[0]) == 3
    for _ in range(3):
        drv[0].add_chain([], [1600])
    assert drv[0].kick()
    assert ready == [0] and not dev.pending[0] and not dev.throttled[0]
    got = [u.written[VNET_HDR_LEN : u.length] for u in drv[0].get_used()]
    assert got == frames
    drv[0].add_chain([], [1600])
    assert dev.handle_rx(0) is True
    assert [u.written[VNET_HDR_LEN : u.length] for u in drv[0].get_used()] == [
        eth(GUEST_MAC, b"not read yet")
    ]


def test_mergeable_frame_waits_until_enough_buffers_are_there() -> None:
    dev, backend, drv, _, _ = make()
    ready: list[int] = []
    dev.rx_ready_handler = ready.append
    drv[0].add_chain([], [100])
    drv[0].add_chain([], [100])
    frame = eth(GUEST_MAC, b"z" * 250)  # needs 3 buffers of 100
    backend.inbox = [frame]
    assert dev.handle_rx(0) is False
    assert drv[0].get_used() == [] and list(dev.pending[0]) == [frame]
    drv[0].add_chain([], [100])
    assert drv[0].kick()
    used = drv[0].get_used()
    assert b"".join(u.written[: u.length] for u in used) == hdr(3) + frame
    assert ready == [0]


def test_rx_before_driver_ok_reads_nothing_and_wakes_on_activation() -> None:
    backend = FakeNetBackend()
    dev = VirtioNet(backend, mac=MAC, queue_size=64)
    ready: list[int] = []
    dev.rx_ready_handler = ready.append
    backend.inbox = [eth(GUEST_MAC, b"early")]
    assert dev.handle_rx(0) is False and backend.recv_calls == 0
    attach_drivers(dev, bytearray_memory(2 << 20))
    assert ready == [0]


def test_reset_drops_pending_frames_and_counts_them() -> None:
    dev, backend, _, _, _ = make()
    backend.inbox = [eth(GUEST_MAC, b"a"), eth(GUEST_MAC, b"b")]
    assert dev.handle_rx(0) is False
    dev.reset()
    assert dev.stats.rx_dropped_reset == 2 and not dev.pending[0]


# -- state -------------------------------------------------------------------------------------


def test_state_round_trip() -> None:
    dev, backend, drv, _, _ = make()
    backend.inbox = [eth(GUEST_MAC, b"queued")]
    dev.handle_rx(0)
    dev.promisc = False
    dev.uni_macs = (PEER_MAC,)
    dev.mac = bytes.fromhex("525400aabbcc")
    dev.link_up = False
    state = loads(VirtioNetState, dumps(dev.save()))
    dev2 = VirtioNet.restore({"backend": FakeNetBackend(), "mac": MAC, "queue_size": 64}, state)
    assert dev2.save() == dataclasses.replace(
        state, device=dataclasses.replace(state.device, activated=False)
    )
    assert dev2.read_config(0, 8) == bytes.fromhex("525400aabbcc") + b"\0\0"
    assert dev2.throttled == [True]
    # Restored into a machine with another number of queue pairs: refused.
    with pytest.raises(StateError):
        VirtioNet.restore({"backend": [FakeNetBackend(), FakeNetBackend()], "mac": MAC}, state)
