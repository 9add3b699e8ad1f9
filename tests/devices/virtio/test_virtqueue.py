"""VirtQueue: split ring parsing, validation of hostile chains, notification logic."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvmlite.devices.virtio.queue import ChainError, QueueError, VirtQueue, VirtQueueState
from kvmlite.devices.virtio.spec import (
    VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
    VIRTQ_USED_F_NO_NOTIFY,
)
from kvmlite.memory import GuestMemory
from kvmlite.state import dumps, loads
from kvmlite.testing import MockDriver

RAM_GPA = 0x10000
RAM_SIZE = 256 * 1024
GUARD = 4096
CANARY = 0x5C


def guarded_memory() -> tuple[GuestMemory, bytearray]:
    """Guest RAM inside a larger buffer whose guard bytes must stay untouched."""
    buf = bytearray([CANARY]) * (RAM_SIZE + 2 * GUARD)
    inner = memoryview(buf)[GUARD : GUARD + RAM_SIZE]
    inner[:] = bytes(RAM_SIZE)
    return GuestMemory.from_buffer(inner, RAM_GPA), buf


def guards_intact(buf: bytearray) -> bool:
    return buf[:GUARD] == bytes([CANARY]) * GUARD and buf[-GUARD:] == bytes([CANARY]) * GUARD


def setup(size: int = 16, event_idx: bool = False) -> tuple[GuestMemory, MockDriver, VirtQueue]:
    mem, _ = guarded_memory()
    drv = MockDriver(mem, size, event_idx=event_idx)
    q = VirtQueue(size)
    drv.configure(q)
    return mem, drv, q


def test_pop_direct_chain_readable_then_writable() -> None:
    mem, drv, q = setup()
    assert q.is_valid(mem)
    sub = drv.add_chain([b"hello", b"world!"], [32, 8])
    chain = q.pop(mem)
    assert chain is not None and chain.head == sub.head
    assert chain.read_all(mem) == b"helloworld!"
    assert chain.readable_len == 11 and chain.writable_len == 40
    assert [d.writable for d in chain.descriptors] == [False, False, True, True]
    assert q.pop(mem) is None


def test_pop_indirect_chain() -> None:
    mem, drv, q = setup()
    drv.add_chain([b"abc"], [4], indirect=True)
    chain = q.pop(mem)
    assert chain is not None
    assert chain.read_all(mem) == b"abc"
    assert chain.write_all(mem, b"wxyz") == 4
    q.add_used(mem, chain.head, 4)
    [used] = drv.get_used()
    assert used.length == 4 and used.written == b"wxyz"


def test_used_ring_and_wraparound() -> None:
    mem, drv, q = setup(size=4)
    # Start just below the u16 wrap so the indices cross 0xFFFF -> 0.
    q.set_next_avail(0xFFFE)
    q.set_next_used(0xFFFE)
    drv.avail_idx = 0xFFFE
    drv.last_used = 0xFFFE
    for n in range(6):
        sub = drv.add_chain([bytes([n])], [1])
        chain = q.pop(mem)
        assert chain is not None and chain.head == sub.head
        q.add_used(mem, chain.head, 1)
        assert [u.head for u in drv.get_used()] == [sub.head]
    assert q.next_avail == 4 and q.next_used == 4


def test_loop_is_a_chain_error() -> None:
    mem, drv, q = setup()
    buf = drv.alloc(8)
    drv.write_descriptor(0, buf, 8, VIRTQ_DESC_F_NEXT, 1)
    drv.write_descriptor(1, buf, 8, VIRTQ_DESC_F_NEXT, 0)
    drv.publish(0)
    with pytest.raises(ChainError, match="longer than"):
        q.pop(mem)
    assert q.pop(mem) is None  # the bad entry was consumed


@pytest.mark.parametrize(
    "descs, match",
    [
        ([(0xDEAD0000, 8, 0, 0)], "outside guest RAM"),
        ([(RAM_GPA + RAM_SIZE - 4, 8, 0, 0)], "outside guest RAM"),
        ([("buf", 8, VIRTQ_DESC_F_NEXT, 99)], "next index"),
        ([("buf", 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1), ("buf", 8, 0, 0)], "after a"),
        ([("buf", 12, VIRTQ_DESC_F_INDIRECT, 0)], "multiple of 16"),
        ([("buf", 0, VIRTQ_DESC_F_INDIRECT, 0)], "multiple of 16"),
        ([("buf", 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1)], "NEXT"),
        ([(0xFFFFFFFFFFFFFFF0, 16, VIRTQ_DESC_F_INDIRECT, 0)], "outside RAM"),
        ([("buf", 16 * 17, VIRTQ_DESC_F_INDIRECT, 0)], "> 16"),
    ],
)
def test_malformed_direct_chains(descs: list, match: str) -> None:
    mem, drv, q = setup()
    buf = drv.alloc(1024)
    for i, (addr, length, flags, nxt) in enumerate(descs):
        drv.write_descriptor(i, buf if addr == "buf" else addr, length, flags, nxt)
    drv.publish(0)
    with pytest.raises(ChainError, match=match) as e:
        q.pop(mem)
    assert e.value.head == 0


def test_nested_indirect_and_indirect_loop() -> None:
    mem, drv, q = setup()
    table = drv.alloc(64)
    drv.write_indirect_table(table, [(table, 16, VIRTQ_DESC_F_INDIRECT, 0)])
    drv.write_descriptor(0, table, 16, VIRTQ_DESC_F_INDIRECT, 0)
    drv.publish(0)
    with pytest.raises(ChainError, match="nested"):
        q.pop(mem)
    drv.write_indirect_table(
        table, [(table, 8, VIRTQ_DESC_F_NEXT, 1), (table, 8, VIRTQ_DESC_F_NEXT, 0)]
    )
    drv.write_descriptor(1, table, 32, VIRTQ_DESC_F_INDIRECT, 0)
    drv.publish(1)
    with pytest.raises(ChainError, match="longer than"):
        q.pop(mem)


def test_zero_length_buffer_is_accepted_and_harmless() -> None:
    mem, drv, q = setup()
    drv.write_descriptor(0, 0xFFFFFFFF_00000000, 0, 0, 0)  # zero length: address not used
    drv.publish(0)
    chain = q.pop(mem)
    assert chain is not None and chain.readable_len == 0 and chain.read_all(mem) == b""


def test_head_out_of_range_and_runaway_avail_idx() -> None:
    mem, drv, q = setup()
    drv.publish(200)
    with pytest.raises(ChainError, match="head index"):
        q.pop(mem)
    drv.set_avail_idx(q.next_avail + 17)
    with pytest.raises(QueueError, match="ahead"):
        q.pop(mem)


def test_invalid_size_and_rings_outside_memory() -> None:
    mem, drv, q = setup()
    q.set_size(12)
    assert not q.is_valid(mem)
    with pytest.raises(QueueError):
        q.pop(mem)
    q.set_size(16)
    q.set_used_ring_address(0xFFFFF000, 0)
    assert not q.is_valid(mem)
    q.set_used_ring_address(high=0x1)
    assert q.used_ring == 0x1_FFFFF000
    q.set_used_ring_address(low=0x2000)
    assert q.used_ring == 0x1_00002000


def test_needs_notification_without_event_idx() -> None:
    mem, drv, q = setup()
    drv.add_chain([b"x"])
    chain = q.pop(mem)
    assert chain is not None
    q.add_used(mem, chain.head, 0)
    assert q.needs_notification(mem)
    drv.set_no_interrupt(True)
    drv.add_chain([b"x"])
    chain = q.pop(mem)
    assert chain is not None
    q.add_used(mem, chain.head, 0)
    assert not q.needs_notification(mem)


def test_needs_notification_with_event_idx() -> None:
    mem, drv, q = setup(event_idx=True)
    drv.set_used_event(2)  # interrupt when used idx goes past 2, i.e. reaches 3
    results = []
    for _ in range(4):
        drv.add_chain([b"x"])
        chain = q.pop(mem)
        assert chain is not None
        q.add_used(mem, chain.head, 0)
        results.append(q.needs_notification(mem))
    assert results == [False, False, True, False]
    # Two entries added in one batch that cross used_event: one notification.
    drv.set_used_event(4)
    for _ in range(2):
        drv.add_chain([b"x"])
        chain = q.pop(mem)
        assert chain is not None
        q.add_used(mem, chain.head, 0)
    assert q.needs_notification(mem)


def test_enable_disable_notification() -> None:
    mem, drv, q = setup()
    q.disable_notification(mem)
    assert mem.read_int(drv.used_ring, 2) & VIRTQ_USED_F_NO_NOTIFY
    assert not drv.device_wants_kick()
    drv.add_chain([b"x"])
    assert q.enable_notification(mem) is True  # something arrived while polling
    assert drv.device_wants_kick()
    mem2, drv2, q2 = setup(event_idx=True)
    q2.set_next_avail(5)
    drv2.set_avail_idx(5)
    assert q2.enable_notification(mem2) is False
    assert drv2.avail_event() == 5


def test_state_round_trip() -> None:
    mem, drv, q = setup(event_idx=True)
    drv.add_chain([b"a"])
    drv.add_chain([b"b"])
    first = q.pop(mem)
    assert first is not None
    state = q.save()
    q2 = VirtQueue.restore({"max_size": 16}, loads(VirtQueueState, dumps(state)))
    assert q2.save() == state
    second = q2.pop(mem)
    assert second is not None and second.read_all(mem) == b"b"


# -- fuzzing -----------------------------------------------------------------------

desc_strategy = st.tuples(
    st.one_of(
        st.integers(0, 2**64 - 1),
        st.integers(RAM_GPA - 64, RAM_GPA + RAM_SIZE + 64),
        st.sampled_from([0, RAM_GPA, RAM_GPA + 0x30000]),
    ),
    st.one_of(st.integers(0, 2**32 - 1), st.integers(0, 300)),
    st.integers(0, 7),
    st.integers(0, 20),
)


@settings(max_examples=200, deadline=None)
@given(
    descs=st.lists(desc_strategy, min_size=16, max_size=16),
    indirect=st.lists(desc_strategy, max_size=20),
    heads=st.lists(st.integers(0, 20), min_size=1, max_size=20),
    avail_idx=st.one_of(st.none(), st.integers(0, 0xFFFF)),
    event_idx=st.booleans(),
)
def test_fuzz_random_descriptor_tables(
    descs: list, indirect: list, heads: list, avail_idx: int | None, event_idx: bool
) -> None:
    mem, buf = guarded_memory()
    drv = MockDriver(mem, 16, event_idx=event_idx)
    q = VirtQueue(16)
    drv.configure(q)
    table = RAM_GPA + 0x30000
    drv.write_indirect_table(table, indirect)
    for i, d in enumerate(descs):
        drv.write_descriptor(i, *d)
    for h in heads:
        drv.publish(h)
    if avail_idx is not None:
        drv.set_avail_idx(avail_idx)
    for _ in range(40):
        try:
            chain = q.pop(mem)
        except ChainError as e:
            if e.head < 16:
                q.add_used(mem, e.head, 0)
            continue
        except QueueError:
            break
        if chain is None:
            break
        assert len(chain.descriptors) <= 16
        for d in chain.descriptors:
            assert d.length == 0 or mem.contains(d.addr, d.length)
        chain.read_all(mem)
        chain.write_all(mem, b"\xff" * chain.writable_len)
        q.add_used(mem, chain.head, chain.writable_len)
        q.needs_notification(mem)
    assert guards_intact(buf)


def test_used_elem_layout() -> None:
    mem, drv, q = setup()
    drv.add_chain([b"x"])
    chain = q.pop(mem)
    assert chain is not None
    q.add_used(mem, chain.head, 0x12345678)
    assert mem.read(drv.used_ring + 2, 10) == struct.pack("<HII", 1, chain.head, 0x12345678)


def test_event_idx_pop_keeps_avail_event_current() -> None:
    # A device that only pops (no enable/disable_notification calls) must
    # keep getting kicks from a driver that suppresses them like Linux does.
    mem, drv, q = setup(event_idx=True)
    kicks = []
    drv.notify = lambda: kicks.append(1)
    for n in range(5):
        drv.add_chain([bytes([n])])
        assert drv.kick() is True
        chain = q.pop(mem)
        assert chain is not None and chain.read_all(mem) == bytes([n])
        assert q.pop(mem) is None
        assert drv.avail_event() == q.next_avail
    assert len(kicks) == 5
    # Two chains before the device runs: one kick covers both.
    drv.add_chain([b"a"])
    assert drv.kick() is True
    drv.add_chain([b"b"])
    assert drv.kick() is False
    assert q.pop(mem) is not None and q.pop(mem) is not None and q.pop(mem) is None
