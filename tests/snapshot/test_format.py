"""The snapshot state file (kvmlite/snapshot/format.py): round trip and hostile input."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvmlite.config import VmConfig
from kvmlite.kvm.state import VcpuState, VmState
from kvmlite.snapshot.format import (
    FORMAT_VERSION,
    HEADER,
    MAGIC,
    DiskInfo,
    SnapshotError,
    SnapshotFile,
    decode,
    encode,
)
from kvmlite.vmm.persist import MachineState, PartState

VCPU = VcpuState(0, 0, b"r", b"s", b"f", b"x", b"c", b"l", b"e", b"d", {0x10: 5})
SAMPLE = SnapshotFile(
    config=VmConfig().to_json(),
    machine=MachineState(
        memory_size=256 << 20,
        vcpus=(VCPU,),
        vm=VmState(b"pm", b"ps", b"io", b"pit", b"clk"),
        devices=(PartState("serial0", "Serial16550", '{"ier":1}'),),
        transports=(),
    ),
    disks=(DiskInfo("/tmp/disk.img", 1 << 20), DiskInfo("/tmp/d.qcow2", None)),
    memory_size=256 << 20,
)


def test_round_trip() -> None:
    blob = encode(SAMPLE)
    assert blob[:8] == MAGIC and struct.unpack_from("<I", blob, 8)[0] == FORMAT_VERSION
    assert decode(blob) == SAMPLE
    assert encode(decode(blob)) == blob


def test_header_layout() -> None:
    blob = encode(SAMPLE)
    magic, version, flags, length, digest = HEADER.unpack_from(blob)
    assert HEADER.size == 56 and flags == 0 and length == len(blob) - 56
    assert digest == hashlib.sha256(blob[56:]).digest()


@pytest.mark.parametrize("cut", [0, 7, 55, 56, 100, -1])
def test_truncated_is_refused(cut: int) -> None:
    blob = encode(SAMPLE)
    with pytest.raises(SnapshotError, match="short|truncated"):
        decode(blob[:cut])


def test_corrupted_payload_is_refused() -> None:
    blob = bytearray(encode(SAMPLE))
    blob[100] ^= 1
    with pytest.raises(SnapshotError, match="checksum"):
        decode(bytes(blob))


def test_other_version_is_refused_with_a_clear_message() -> None:
    blob = bytearray(encode(SAMPLE))
    struct.pack_into("<I", blob, 8, FORMAT_VERSION + 1)
    with pytest.raises(
        SnapshotError, match=f"version {FORMAT_VERSION + 1}.*version {FORMAT_VERSION}"
    ):
        decode(bytes(blob))


def test_other_magic_and_flags_are_refused() -> None:
    blob = encode(SAMPLE)
    with pytest.raises(SnapshotError, match="not a kvmlite snapshot"):
        decode(b"QFI\xfb" + blob[4:])
    flagged = bytearray(blob)
    struct.pack_into("<I", flagged, 12, 1)
    with pytest.raises(SnapshotError, match="flags"):
        decode(bytes(flagged))


def test_valid_checksum_over_bad_content_is_refused() -> None:
    for payload in (b"not json", b'{"config": 1}', b"[]", b'{"machine": null}', b"[" * 100000):
        blob = HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(payload), hashlib.sha256(payload).digest())
        with pytest.raises(SnapshotError):
            decode(blob + payload)


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_fuzz_decode_raises_only_snapshot_error(data: bytes) -> None:
    for blob in (data, MAGIC + data, encode(SAMPLE)[:60] + data):
        try:
            decode(blob)
        except SnapshotError:
            pass


@settings(max_examples=200)
@given(st.binary(max_size=2000))
def test_fuzz_payload_with_valid_header(payload: bytes) -> None:
    blob = HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(payload), hashlib.sha256(payload).digest())
    try:
        decode(blob + payload)
    except SnapshotError:
        pass
