"""The Linux/x86 zero page as ctypes structures.

Field names and offsets follow arch/x86/include/uapi/asm/bootparam.h (Linux
6.1) and Documentation/x86/boot.rst ("The Real-Mode Kernel Header"); the
offset tests in tests/arch/x86/test_bootparams.py pin them to the spec.
"""

from __future__ import annotations

import ctypes

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64

SETUP_HEADER_OFFSET = 0x1F1
HDRS_MAGIC = 0x53726448  # "HdrS"
BOOT_FLAG = 0xAA55
E820_MAX_ENTRIES_ZEROPAGE = 128

# loadflags
LOADED_HIGH = 1 << 0
KEEP_SEGMENTS = 1 << 6
CAN_USE_HEAP = 1 << 7
# xloadflags (protocol 2.12+)
XLF_KERNEL_64 = 1 << 0
XLF_CAN_BE_LOADED_ABOVE_4G = 1 << 1


class SetupHeader(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [
        ("setup_sects", u8),
        ("root_flags", u16),
        ("syssize", u32),
        ("ram_size", u16),
        ("vid_mode", u16),
        ("root_dev", u16),
        ("boot_flag", u16),
        ("jump", u16),
        ("header", u32),
        ("version", u16),
        ("realmode_swtch", u32),
        ("start_sys_seg", u16),
        ("kernel_version", u16),
        ("type_of_loader", u8),
        ("loadflags", u8),
        ("setup_move_size", u16),
        ("code32_start", u32),
        ("ramdisk_image", u32),
        ("ramdisk_size", u32),
        ("bootsect_kludge", u32),
        ("heap_end_ptr", u16),
        ("ext_loader_ver", u8),
        ("ext_loader_type", u8),
        ("cmd_line_ptr", u32),
        ("initrd_addr_max", u32),
        ("kernel_alignment", u32),
        ("relocatable_kernel", u8),
        ("min_alignment", u8),
        ("xloadflags", u16),
        ("cmdline_size", u32),
        ("hardware_subarch", u32),
        ("hardware_subarch_data", u64),
        ("payload_offset", u32),
        ("payload_length", u32),
        ("setup_data", u64),
        ("pref_address", u64),
        ("init_size", u32),
        ("handover_offset", u32),
        ("kernel_info_offset", u32),
    ]


class BootE820Entry(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [("addr", u64), ("size", u64), ("type", u32)]


class BootParams(ctypes.LittleEndianStructure):
    """``struct boot_params``: the 4 KiB zero page."""

    _pack_ = 1
    _fields_ = [
        ("screen_info", u8 * 0x40),
        ("apm_bios_info", u8 * 0x14),
        ("_pad2", u8 * 4),
        ("tboot_addr", u64),
        ("ist_info", u8 * 0x10),
        ("acpi_rsdp_addr", u64),
        ("_pad3", u8 * 8),
        ("hd0_info", u8 * 16),
        ("hd1_info", u8 * 16),
        ("sys_desc_table", u8 * 0x10),
        ("olpc_ofw_header", u8 * 0x10),
        ("ext_ramdisk_image", u32),
        ("ext_ramdisk_size", u32),
        ("ext_cmd_line_ptr", u32),
        ("_pad4", u8 * 112),
        ("cc_blob_address", u32),
        ("edid_info", u8 * 0x80),
        ("efi_info", u8 * 0x20),
        ("alt_mem_k", u32),
        ("scratch", u32),
        ("e820_entries", u8),
        ("eddbuf_entries", u8),
        ("edd_mbr_sig_buf_entries", u8),
        ("kbd_status", u8),
        ("secure_boot", u8),
        ("_pad5", u8 * 2),
        ("sentinel", u8),
        ("_pad6", u8 * 1),
        ("hdr", SetupHeader),
        ("_pad7", u8 * (0x290 - SETUP_HEADER_OFFSET - ctypes.sizeof(SetupHeader))),
        ("edd_mbr_sig_buffer", u32 * 16),
        ("e820_table", BootE820Entry * E820_MAX_ENTRIES_ZEROPAGE),
        ("_pad8", u8 * 48),
        ("eddbuf", u8 * (6 * 82)),
        ("_pad9", u8 * 276),
    ]
