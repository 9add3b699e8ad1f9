"""Offsets from Documentation/x86/boot.rst and bootparam.h, checked one by one."""

import ctypes

import pytest

from kvmlite.arch.x86.bootparams import BootE820Entry, BootParams, SetupHeader


def test_sizes():
    assert ctypes.sizeof(BootParams) == 4096
    assert ctypes.sizeof(BootE820Entry) == 20
    assert ctypes.sizeof(SetupHeader) == 0x26C - 0x1F1


@pytest.mark.parametrize(
    "field,offset",
    [
        ("acpi_rsdp_addr", 0x070),
        ("ext_ramdisk_image", 0x0C0),
        ("ext_cmd_line_ptr", 0x0C8),
        ("cc_blob_address", 0x13C),
        ("alt_mem_k", 0x1E0),
        ("e820_entries", 0x1E8),
        ("sentinel", 0x1EF),
        ("hdr", 0x1F1),
        ("edd_mbr_sig_buffer", 0x290),
        ("e820_table", 0x2D0),
        ("eddbuf", 0xD00),
    ],
)
def test_boot_params_offsets(field, offset):
    assert getattr(BootParams, field).offset == offset


@pytest.mark.parametrize(
    "field,offset",
    [
        ("setup_sects", 0x1F1),
        ("syssize", 0x1F4),
        ("vid_mode", 0x1FA),
        ("boot_flag", 0x1FE),
        ("header", 0x202),
        ("version", 0x206),
        ("type_of_loader", 0x210),
        ("loadflags", 0x211),
        ("code32_start", 0x214),
        ("ramdisk_image", 0x218),
        ("ramdisk_size", 0x21C),
        ("heap_end_ptr", 0x224),
        ("cmd_line_ptr", 0x228),
        ("initrd_addr_max", 0x22C),
        ("kernel_alignment", 0x230),
        ("relocatable_kernel", 0x234),
        ("xloadflags", 0x236),
        ("cmdline_size", 0x238),
        ("setup_data", 0x250),
        ("pref_address", 0x258),
        ("init_size", 0x260),
        ("handover_offset", 0x264),
        ("kernel_info_offset", 0x268),
    ],
)
def test_setup_header_offsets(field, offset):
    assert 0x1F1 + getattr(SetupHeader, field).offset == offset
