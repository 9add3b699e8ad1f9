"""virtio-net against a hostile driver: malformed chains, headers and control messages."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_virtio_net import GUEST_MAC, PEER_MAC, FakeNetBackend, eth, make

from kvmlite.devices.virtio.net import VirtioNet
from kvmlite.devices.virtio.net_spec import MAX_FRAME_LEN, VNET_HDR_LEN
from kvmlite.testing import MockDriver, attach_drivers, bytearray_memory

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def broken_rig(
    *, vnet_hdr: bool = False, mergeable: bool = True
) -> tuple[VirtioNet, FakeNetBackend, list[MockDriver], list[int]]:
    """A device whose NEEDS_RESET requests are recorded in the returned list."""
    dev, backend, drv, _, _ = make(vnet_hdr=vnet_hdr, mergeable=mergeable)
    resets: list[int] = []
    dev.needs_reset_handler = lambda: resets.append(1)
    return dev, backend, drv, resets


def test_tx_chain_with_writable_buffers_needs_reset() -> None:
    dev, backend, drv, resets = broken_rig()
    drv[1].add_chain([bytes(VNET_HDR_LEN) + eth(PEER_MAC, b"x")], [64])
    drv[1].kick()
    assert dev.broken and resets == [1] and backend.sent == []
    [u] = drv[1].get_used()  # the chain is given back, not kept
    assert u.length == 0


def test_tx_shorter_than_the_header_needs_reset() -> None:
    dev, backend, drv, resets = broken_rig()
    drv[1].add_chain([b"\0" * 5])
    drv[1].kick()
    assert dev.broken and resets == [1] and backend.sent == []


def test_tx_huge_frame_needs_reset() -> None:
    dev, backend, drv, resets = broken_rig()
    drv[1].add_chain([bytes(VNET_HDR_LEN), bytes(MAX_FRAME_LEN + 1)])
    drv[1].kick()
    assert dev.broken and backend.sent == []


def test_tx_largest_frame_is_sent() -> None:
    dev, backend, drv, resets = broken_rig()
    drv[1].add_chain([bytes(VNET_HDR_LEN), bytes(MAX_FRAME_LEN)])
    drv[1].kick()
    assert not dev.broken and [len(f) for f in backend.sent] == [MAX_FRAME_LEN]


def test_rx_chain_with_readable_buffers_needs_reset_and_rx_stops() -> None:
    dev, backend, drv, resets = broken_rig()
    drv[0].add_chain([b"guest data"], [1600])
    backend.inbox = [eth(GUEST_MAC, b"in")]
    assert dev.handle_rx(0) is False  # device broken: stop reading
    assert dev.broken and resets == [1]
    assert dev.handle_rx(0) is False
    assert backend.recv_calls == 1


def test_rx_buffer_smaller_than_the_header_needs_reset() -> None:
    dev, backend, drv, resets = broken_rig()
    drv[0].add_chain([], [4])
    backend.inbox = [eth(GUEST_MAC, b"in")]
    dev.handle_rx(0)
    assert dev.broken and resets == [1]


def test_short_frame_from_a_vnet_header_backend_is_dropped() -> None:
    dev, backend, drv, resets = broken_rig(vnet_hdr=True)
    drv[0].add_chain([], [1600])
    backend.inbox = [b"\0" * 5, bytes(VNET_HDR_LEN) + eth(GUEST_MAC, b"ok")]
    assert dev.handle_rx(0) is True
    [u] = drv[0].get_used()
    assert u.written[VNET_HDR_LEN : u.length] == eth(GUEST_MAC, b"ok")
    assert dev.stats.rx_oversize == 1 and not dev.broken


def test_control_without_an_ack_byte_or_command_needs_reset() -> None:
    for readable, writable in (([b"\0\0\1"], []), ([b"\0"], [1]), ([b"\0\0\1"], [0])):
        dev, _, drv, resets = broken_rig()
        drv[dev.ctrl_queue].add_chain(readable, writable)
        drv[dev.ctrl_queue].kick(force=True)
        assert dev.broken and resets == [1], (readable, writable)


def test_reset_after_an_error_makes_the_device_usable_again() -> None:
    dev, backend, drv, resets = broken_rig()
    drv[1].add_chain([b"\0"])
    drv[1].kick()
    assert dev.broken
    dev.reset()
    drv, _, _ = attach_drivers(dev, bytearray_memory(2 << 20))
    drv[1].add_chain([bytes(VNET_HDR_LEN) + eth(PEER_MAC, b"again")])
    drv[1].kick()
    assert backend.sent == [eth(PEER_MAC, b"again")]


# -- fuzzing -------------------------------------------------------------------------------------

raw_descriptor = st.tuples(
    st.sampled_from(["data", "ring", "outside", "zero"]),
    st.integers(0, 70000),
    st.integers(0, 7),  # NEXT | WRITE | INDIRECT in any combination
    st.integers(0, 70),
)


def _write_raw(drv: MockDriver, descs: list[tuple[str, int, int, int]]) -> None:
    base = drv.alloc(4096)
    for i, (where, length, flags, nxt) in enumerate(descs):
        addr = {
            "data": base,
            "ring": drv.desc_table,
            "outside": 1 << 40,
            "zero": 0,
        }[where]
        drv.write_descriptor(i, addr, length % (drv.data_end - base), flags, nxt)


@FUZZ
@given(
    descs=st.lists(raw_descriptor, min_size=1, max_size=8),
    heads=st.lists(st.integers(0, 70), min_size=1, max_size=4),
)
def test_fuzz_tx_chains_never_raise(
    descs: list[tuple[str, int, int, int]], heads: list[int]
) -> None:
    dev, backend, drv, resets = broken_rig()
    _write_raw(drv[1], descs)
    for h in heads:
        drv[1].publish(h)
    drv[1].kick(force=True)  # must not raise
    assert dev.broken == bool(resets)
    for frame in backend.sent:
        assert len(frame) <= MAX_FRAME_LEN


@FUZZ
@given(
    descs=st.lists(raw_descriptor, min_size=1, max_size=8),
    heads=st.lists(st.integers(0, 70), min_size=1, max_size=4),
    frames=st.lists(st.binary(min_size=0, max_size=3000), min_size=1, max_size=4),
    mergeable=st.booleans(),
)
def test_fuzz_rx_chains_never_raise_nor_lose_frames(
    descs: list[tuple[str, int, int, int]], heads: list[int], frames: list[bytes], mergeable: bool
) -> None:
    dev, backend, drv, resets = broken_rig(mergeable=mergeable)
    _write_raw(drv[0], descs)
    for h in heads:
        drv[0].publish(h)
    backend.inbox = list(frames)
    dev.handle_rx(0)  # must not raise
    if not dev.broken:
        # Every frame was delivered, dropped with a count, or still waits.
        accounted = dev.stats.rx_frames + dev.stats.rx_oversize + len(dev.pending[0])
        assert accounted == len(frames)


@FUZZ
@given(
    msg=st.one_of(
        st.binary(min_size=2, max_size=200),
        st.tuples(st.integers(0, 5), st.integers(0, 3), st.binary(max_size=40)).map(
            lambda t: bytes([t[0], t[1]]) + t[2]
        ),
    ),
    ack_len=st.integers(1, 4),
)
def test_fuzz_control_messages_get_ok_or_err(msg: bytes, ack_len: int) -> None:
    dev, _, drv, resets = broken_rig()
    ctrlq = drv[dev.ctrl_queue]
    ctrlq.add_chain([msg], [ack_len])
    ctrlq.kick(force=True)
    [u] = ctrlq.get_used()
    assert not dev.broken and u.length == 1
    assert u.written[-1] in (0, 1)
    assert len(dev.mac) == 6 and len(dev.read_config(0, 12)) == 12
    assert all(len(m) == 6 for m in dev.uni_macs + dev.multi_macs)
