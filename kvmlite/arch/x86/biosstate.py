"""The machine state a PC BIOS leaves behind, for kernels booted by a BIOS boot loader.

A Multiboot kernel on a PC is started by GRUB (or QEMU's loader) after the
BIOS ran, and some such kernels rely on what the BIOS set up: kvm-unit-tests'
realmode.flat drops to real mode, enables interrupts and halts, and wakes up
on the BIOS timer tick. kvmlite has no BIOS, so before the kernel's entry a
short 32-bit trampoline sets up what SeaBIOS (QEMU's firmware) leaves, as
read back with QEMU 7.2's ``info pic`` after a Multiboot boot:

- both 8259A PICs initialised (8259A data sheet, ICW1-ICW4): master vector
  base 0x08, slave 0x70, slave on master IRQ 2, 8086 mode; masks 0xB8
  (master: IRQ 0, 1, 2 and 6 open) and 0x8E (slave: IRQ 8, 12, 13, 14
  open); ELCR (ports 0x4D0/0x4D1) 0x00 and 0x0C;
- PIT channel 0 in mode 3 with count 65536 (18.2 Hz, the BIOS tick;
  8254 data sheet, control word 0x36);
- a real-mode interrupt vector table whose hardware IRQ vectors (0x08-0x0F,
  0x70-0x77) point at stubs that send the PICs a non-specific EOI and IRET,
  and every other vector at a bare IRET.

The trampoline then loads EAX/EBX as Multiboot §3.2 wants and jumps to the
kernel's entry. Everything here is bytes for guest memory (hand-assembled
and checked with objdump in tests/arch/x86/test_biosstate.py).
"""

from __future__ import annotations

import struct

#: Real-mode stubs and the trampoline sit in the top of the Multiboot info page.
TRAMPOLINE_ADDR = 0x7E00
STUBS_ADDR = 0x7F00
IVT_ADDR = 0
IVT_ENTRIES = 256

PIC_MASTER_BASE = 0x08
PIC_SLAVE_BASE = 0x70
PIC_MASTER_MASK = 0xB8
PIC_SLAVE_MASK = 0x8E
ELCR_MASTER = 0x00
ELCR_SLAVE = 0x0C
PIT_MODE3_CH0_LOHI = 0x36

# 16-bit stubs: IRET; EOI master then IRET; EOI slave and master then IRET.
_IRET = bytes([0xCF])
_EOI_MASTER = bytes([0x50, 0xB0, 0x20, 0xE6, 0x20, 0x58, 0xCF])  # push ax; mov al,20h; out 20h,al
_EOI_SLAVE = bytes([0x50, 0xB0, 0x20, 0xE6, 0xA0, 0xE6, 0x20, 0x58, 0xCF])
_STUB_IRET = STUBS_ADDR
_STUB_MASTER = STUBS_ADDR + 0x10
_STUB_SLAVE = STUBS_ADDR + 0x20


def stubs_bytes() -> bytes:
    return _IRET.ljust(0x10, b"\0") + _EOI_MASTER.ljust(0x10, b"\0") + _EOI_SLAVE


def ivt_bytes() -> bytes:
    """256 segment:offset vectors (segment 0) as the BIOS leaves them (see module docs)."""
    entries = []
    for vector in range(IVT_ENTRIES):
        if PIC_MASTER_BASE <= vector < PIC_MASTER_BASE + 8:
            target = _STUB_MASTER
        elif PIC_SLAVE_BASE <= vector < PIC_SLAVE_BASE + 8:
            target = _STUB_SLAVE
        else:
            target = _STUB_IRET
        entries.append(struct.pack("<HH", target, 0))
    return b"".join(entries)


def _out(port: int, value: int) -> bytes:
    return bytes([0xB0, value, 0xE6, port])  # mov al, value; out port, al


def _out_dx(port: int, value: int) -> bytes:
    # mov dx, port; mov al, value; out dx, al (ports above 0xFF)
    return bytes([0x66, 0xBA]) + struct.pack("<H", port) + bytes([0xB0, value, 0xEE])


def trampoline_bytes(entry: int, magic: int, info: int) -> bytes:
    """32-bit code: PICs, ELCR and PIT as the BIOS leaves them, then EAX/EBX and a jump."""
    code = b"".join(
        [
            _out(0x20, 0x11),  # ICW1: edge, cascade, ICW4 follows
            _out(0x21, PIC_MASTER_BASE),  # ICW2
            _out(0x21, 0x04),  # ICW3: slave on IRQ 2
            _out(0x21, 0x01),  # ICW4: 8086 mode
            _out(0xA0, 0x11),
            _out(0xA1, PIC_SLAVE_BASE),
            _out(0xA1, 0x02),  # ICW3: slave identity 2
            _out(0xA1, 0x01),
            _out(0x21, PIC_MASTER_MASK),  # OCW1
            _out(0xA1, PIC_SLAVE_MASK),
            _out_dx(0x4D0, ELCR_MASTER),
            _out_dx(0x4D1, ELCR_SLAVE),
            _out(0x43, PIT_MODE3_CH0_LOHI),
            _out(0x40, 0x00),  # count 0 = 65536, low byte
            _out(0x40, 0x00),  # high byte
            bytes([0xB8]) + struct.pack("<I", magic),  # mov eax, magic
            bytes([0xBB]) + struct.pack("<I", info),  # mov ebx, info
            bytes([0xB9]) + struct.pack("<I", entry),  # mov ecx, entry
            bytes([0xFF, 0xE1]),  # jmp ecx
        ]
    )
    assert len(code) <= STUBS_ADDR - TRAMPOLINE_ADDR
    return code


__all__ = ["STUBS_ADDR", "TRAMPOLINE_ADDR", "ivt_bytes", "stubs_bytes", "trampoline_bytes"]
