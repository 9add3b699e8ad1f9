"""AML encoder unit tests against hand-checked encodings from ACPI 6.4 §20."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmlite.arch.x86.acpi import aml


def decode_pkg_length(data: bytes) -> tuple[int, int]:
    """Independent PkgLength decoder (§20.2.4): (value, bytes used)."""
    lead = data[0]
    extra = lead >> 6
    if extra == 0:
        return lead & 0x3F, 1
    value = lead & 0xF
    for i in range(extra):
        value |= data[1 + i] << (4 + 8 * i)
    return value, 1 + extra


@given(st.integers(min_value=0, max_value=(1 << 28) - 5))
def test_pkg_length_roundtrip(n):
    enc = aml.pkg_length(n)
    value, used = decode_pkg_length(enc)
    assert used == len(enc)
    assert value == n + len(enc)  # counts itself
    if n + 1 < 0x40:
        assert len(enc) == 1
    else:
        assert enc[0] & 0x30 == 0  # bits 5:4 reserved in multi-byte form


def test_pkg_length_boundaries():
    assert aml.pkg_length(0x3E) == bytes([0x3F])
    assert aml.pkg_length(0x3F) == bytes([0x41, 0x04])  # 0x41 total
    assert len(aml.pkg_length(0xFFD)) == 2 and len(aml.pkg_length(0xFFE)) == 3


@pytest.mark.parametrize(
    "value,enc",
    [
        (0, "00"),
        (1, "01"),
        (2, "0a02"),
        (0xFF, "0aff"),
        (0x100, "0b0001"),
        (0x10000, "0c00000100"),
        (0x1_0000_0000, "0e0000000001000000"),
    ],
)
def test_integer_shortest(value, enc):
    assert aml.integer(value).hex() == enc


def test_integer_range():
    with pytest.raises(ValueError):
        aml.integer(-1)
    with pytest.raises(ValueError):
        aml.integer(1 << 64)


def test_names():
    assert aml.name_string("_S5") == b"_S5_"
    assert aml.name_string("\\_SB.PCI0") == b"\\\x2e_SB_PCI0"
    assert aml.name_string("\\_SB.PCI0.COM1") == b"\\\x2f\x03_SB_PCI0COM1"
    assert aml.name_string("^FOO") == b"^FOO_"
    with pytest.raises(ValueError):
        aml.name_string("TOOLONG")
    with pytest.raises(ValueError):
        aml.name_string("a-b")


def test_eisa_id():
    assert aml.eisa_id("PNP0A03") == bytes([0x0C]) + (0x030AD041).to_bytes(4, "little")
    with pytest.raises(ValueError):
        aml.eisa_id("pnp0a03")


def test_package_and_string():
    assert aml.package([aml.integer(5), aml.integer(0)]) == bytes([0x12, 0x05, 0x02, 0x0A, 5, 0])
    assert aml.string("ab") == b"\x0dab\x00"
    with pytest.raises(ValueError):
        aml.string("a\0b")
    with pytest.raises(ValueError):
        aml.package([aml.integer(0)] * 256)


def test_resource_template_end_tag():
    rt = aml.resource_template([aml.irq_no_flags(4)])
    assert rt[0] == 0x11 and rt.endswith(b"\x22\x10\x00\x79\x00")
    with pytest.raises(ValueError):
        aml.dword_memory(5, 4)
