"""DescriptorChain.read_prefix / iter_readable agree with read_all, for any chain."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kvmlite.devices.virtio.queue import Descriptor, DescriptorChain
from kvmlite.testing import bytearray_memory

RAM = 4096
MEM = bytearray_memory(RAM)
MEM.write(0, bytes(range(256)) * (RAM // 256))

descriptors = st.builds(
    lambda addr, length, w: Descriptor(addr, min(length, RAM - addr), w),
    st.integers(0, RAM - 1),
    st.integers(0, RAM),
    st.booleans(),
)


@given(st.lists(descriptors, max_size=12), st.integers(0, 3 * RAM), st.integers(1, 5000))
def test_reads_agree(descs: list[Descriptor], limit: int, chunk: int) -> None:
    chain = DescriptorChain(0, sorted(descs, key=lambda d: d.writable))
    whole = chain.read_all(MEM)
    assert chain.read_prefix(MEM, limit) == whole[:limit]
    pieces = list(chain.iter_readable(MEM, chunk))
    assert b"".join(pieces) == whole
    assert all(0 < len(p) <= chunk for p in pieces)


def test_zero_length_and_writable_buffers_are_skipped() -> None:
    chain = DescriptorChain(
        0, [Descriptor(10, 0, False), Descriptor(0, 4, False), Descriptor(0, 9, True)]
    )
    assert chain.read_prefix(MEM, 100) == bytes(range(4))
    assert list(chain.iter_readable(MEM, 3)) == [bytes(range(3)), b"\x03"]
    assert chain.read_prefix(MEM, 0) == b""
