"""ACPI tables judged by iasl (acpica-tools) and by decoders written from ACPI 6.4 §5.2."""

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from kvmlite.arch.x86 import layout
from kvmlite.arch.x86.acpi import Ecam, build_acpi_tables
from kvmlite.errors import ConfigError
from kvmlite.memory import MIB, GuestMemory

IASL = shutil.which("iasl")
ROUTES = [(1, 0, 16), (2, 1, 17), (3, 3, 19)]


@pytest.fixture
def tables():
    return build_acpi_tables(
        3, pci_routes=ROUTES, ecam=Ecam(0xB0000000), mmio64=(1 << 36, (1 << 37) - 1)
    )


def disassemble(tmp_path: Path, sig: str, data: bytes) -> str:
    assert IASL, "iasl is missing: apt-get install acpica-tools"
    src = tmp_path / f"{sig}.dat"
    src.write_bytes(data)
    proc = subprocess.run([IASL, "-d", src.name], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "error" not in (proc.stdout + proc.stderr).lower()
    return (tmp_path / f"{sig}.dsl").read_text()


def test_every_table_checksums(tables):
    for sig, data in tables.tables.items():
        if sig == "FACS":
            continue  # the FACS has no checksum (§5.2.10)
        if sig == "RSDP":
            assert sum(data[:20]) & 0xFF == 0
        assert sum(data) & 0xFF == 0, sig
        if sig not in ("RSDP",):
            assert struct.unpack_from("<I", data, 4)[0] == len(data)


def test_blob_placement(tables):
    mem = GuestMemory.from_buffer(bytearray(2 * MIB))
    tables.write(mem)
    # Find the RSDP the way Linux does: 16-byte steps over 0xE0000..0xFFFFF.
    found = [a for a in range(0xE0000, 0x100000, 16) if mem.read(a, 8) == b"RSD PTR "]
    assert found == [tables.rsdp_addr]
    sig, _c, _oem, rev, rsdt, length, xsdt, _x = struct.unpack(
        "<8sB6sBIIQB3x", mem.read(found[0], 36)
    )
    assert (rev, rsdt, length) == (2, 0, 36)
    xlen = mem.read_int(xsdt + 4, 4)
    ptrs = struct.unpack(f"<{(xlen - 36) // 8}Q", mem.read(xsdt + 36, xlen - 36))
    assert sorted(mem.read(p, 4) for p in ptrs) == [b"APIC", b"FACP", b"MCFG"]
    fadt = next(p for p in ptrs if mem.read(p, 4) == b"FACP")
    x_dsdt = mem.read_int(fadt + 140, 8)
    assert mem.read(x_dsdt, 4) == b"DSDT" and mem.read_int(fadt + 40, 4) == x_dsdt
    assert mem.read_int(fadt + 132, 8) == 0  # X_FIRMWARE_CTRL: the 32-bit pointer is used
    facs = mem.read_int(fadt + 36, 4)
    assert facs % 64 == 0 and mem.read(facs, 4) == b"FACS"
    end = max(tables.addresses.values()) + 36
    assert end <= layout.ACPI_ADDR + layout.ACPI_MAX_SIZE


def test_madt_iasl(tables, tmp_path):
    dsl = disassemble(tmp_path, "APIC", tables.tables["APIC"])
    assert len(re.findall(r"Subtable Type : 00 \[Processor Local APIC\]", dsl)) == 3
    assert re.findall(r"Local Apic ID : (\w+)", dsl) == ["00", "01", "02"]
    assert "I/O Apic ID : 03" in dsl and "Address : FEC00000" in dsl
    assert "Local Apic Address : FEE00000" in dsl
    overrides = re.findall(r"Source : (\w+)\s+\[.*?Interrupt : (\w+)", dsl, re.S)
    assert overrides == [("00", "00000002"), ("09", "00000009")]
    assert "Trigger Mode : 3" in dsl  # the SCI is level-triggered
    assert re.search(r"Interrupt Input LINT : 01", dsl)


def test_fadt_iasl(tables, tmp_path):
    dsl = disassemble(tmp_path, "FACP", tables.tables["FACP"])
    assert re.search(r"Revision : 06", dsl)
    for field, value in [
        ("SCI Interrupt", "0009"),
        ("SMI Command Port", "00000000"),
        ("PM1A Event Block Address", "00000600"),
        ("PM1A Control Block Address", "00000604"),
        ("PM Timer Block Address", "00000608"),
        ("PM1 Event Block Length", "04"),
        ("PM1 Control Block Length", "02"),
        ("PM Timer Block Length", "04"),
    ]:
        assert re.search(rf"{field} : {value}\b", dsl), field
    assert re.search(r"8042 Present on ports 60/64 \(V2\) : 1", dsl)
    assert re.search(r"Legacy Devices Supported \(V2\) : 1", dsl)
    assert re.search(r"Reset Register Supported \(V2\) : 0", dsl)
    # the fixed-feature power button (QMP system_powerdown); no sleep button
    assert re.search(r"Control Method Power Button \(V1\) : 0", dsl)
    assert re.search(r"Control Method Sleep Button \(V1\) : 1", dsl)
    assert re.search(r"WBINVD instruction is operational \(V1\) : 1", dsl)
    # the X_ forms: three System I/O GAS blocks at the same ports
    assert len(re.findall(r"Space ID : 01 \[SystemIO\]", dsl)) == 3
    for port in ("0000000000000600", "0000000000000604", "0000000000000608"):
        assert f"Address : {port}" in dsl


def test_dsdt_iasl_and_roundtrip(tables, tmp_path):
    dsl = disassemble(tmp_path, "DSDT", tables.tables["DSDT"])
    assert re.search(
        r"Name \(\\_S5, Package \(0x04\)\s*// _S5_.*?\{\s*0x05,\s*0x05,\s*Zero,"
        r"\s*Zero\s*\}",
        dsl,
        re.S,
    )
    assert 'EisaId ("PNP0A03")' in dsl and 'EisaId ("PNP0A08")' in dsl
    assert 'EisaId ("PNP0501")' in dsl and 'EisaId ("PNP0C02")' in dsl
    assert "Method" not in dsl
    prt = re.findall(r"Package \(0x04\)\s*\{\s*(\w+),\s*(\w+),\s*Zero,\s*(\w+)\s*\}", dsl)
    as_int = {"Zero": 0, "One": 1}
    got = [
        (int(a, 16) >> 16, as_int.get(p) if p in as_int else int(p, 16), int(g, 16))
        for a, p, g in prt
        if a.endswith("FFFF")
    ]
    assert got == ROUTES
    for lo, hi in [
        ("0xC0000000", "0xFEBFFFFF"),
        ("0x0D00", "0xFFFF"),
        ("0x0000", "0x0CF7"),
        ("0x0000001000000000", "0x0000001FFFFFFFFF"),
    ]:
        assert re.search(rf"{lo},\s*// Range Minimum\s*{hi},\s*// Range Maximum", dsl), lo
    # Recompile the disassembly without optimisations: the AML must come back byte for byte.
    src = tmp_path / "DSDT.dsl"
    proc = subprocess.run(
        [IASL, "-oa", "-p", "re", src.name], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0 and "0 Errors" in proc.stdout, proc.stdout + proc.stderr
    assert (tmp_path / "re.aml").read_bytes()[36:] == tables.tables["DSDT"][36:]


def test_mcfg_and_xsdt_iasl(tables, tmp_path):
    dsl = disassemble(tmp_path, "MCFG", tables.tables["MCFG"])
    assert "Base Address : 00000000B0000000" in dsl and "End Bus Number : FF" in dsl
    dsl = disassemble(tmp_path, "XSDT", tables.tables["XSDT"])
    assert len(re.findall(r"ACPI Table Address\s+\d+ : ", dsl)) == 3
    disassemble(tmp_path, "FACS", tables.tables["FACS"])


def test_without_ecam_no_mcfg(tmp_path):
    t = build_acpi_tables(1)
    assert "MCFG" not in t.tables
    dsl = disassemble(tmp_path, "DSDT", t.tables["DSDT"])
    assert "PNP0A08" not in dsl and "PNP0C02" not in dsl
    assert "Package (0x00)" in dsl  # empty _PRT


def test_bad_parameters():
    with pytest.raises(ConfigError):
        build_acpi_tables(0)
    with pytest.raises(ConfigError, match="DSDT"):
        build_acpi_tables(1, pci_routes=[(40, 0, 16)])
    with pytest.raises(ConfigError, match="DSDT"):
        build_acpi_tables(1, mmio32=(0xF0000000, 0xE0000000))
