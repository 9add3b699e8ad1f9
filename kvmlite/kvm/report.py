"""``crash_report()``: a readable account of why a guest stopped in a way we cannot continue.

Used for KVM_EXIT_INTERNAL_ERROR (emulation failure and friends), KVM_EXIT_SHUTDOWN
(triple fault), KVM_EXIT_FAIL_ENTRY and fatal system events. Field meanings follow
Documentation/virt/kvm/api.rst section 5 (``internal``, ``emulation_failure``,
``fail_entry``, ``system_event``). Building the report never raises: whatever cannot be
read is reported as unavailable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from kvmlite.errors import KvmliteError
from kvmlite.kvm import constants as c
from kvmlite.kvm import exits

if TYPE_CHECKING:
    from kvmlite.kvm.structs import KvmSregs
    from kvmlite.kvm.vcpu import Vcpu

CODE_BYTES = 16
PAGE_SIZE = 4096
CR0_PE = 1 << 0
CR0_PG = 1 << 31
EFER_LMA = 1 << 10

SYSTEM_EVENT_NAMES = {
    c.KVM_SYSTEM_EVENT_SHUTDOWN: "KVM_SYSTEM_EVENT_SHUTDOWN",
    c.KVM_SYSTEM_EVENT_RESET: "KVM_SYSTEM_EVENT_RESET",
    c.KVM_SYSTEM_EVENT_CRASH: "KVM_SYSTEM_EVENT_CRASH",
    c.KVM_SYSTEM_EVENT_WAKEUP: "KVM_SYSTEM_EVENT_WAKEUP",
    c.KVM_SYSTEM_EVENT_SUSPEND: "KVM_SYSTEM_EVENT_SUSPEND",
    c.KVM_SYSTEM_EVENT_SEV_TERM: "KVM_SYSTEM_EVENT_SEV_TERM",
}


class _Memory(Protocol):
    def read(self, gpa: int, length: int) -> bytes: ...


def _exit_lines(exit: exits.Exit) -> list[str]:
    if isinstance(exit, exits.ShutdownExit):
        return ["exit: KVM_EXIT_SHUTDOWN (triple fault: an exception the guest could not handle)"]
    if isinstance(exit, exits.InternalErrorExit):
        name = c.INTERNAL_ERROR_NAMES.get(exit.suberror, "unknown suberror")
        lines = [f"exit: KVM_EXIT_INTERNAL_ERROR, suberror {name} ({exit.suberror})"]
        if exit.suberror == c.KVM_INTERNAL_ERROR_EMULATION:
            lines[0] += ": KVM's emulator could not run the instruction at RIP"
            insn = _emulation_insn(exit.data)
            if insn is not None:
                lines.append(f"instruction bytes (from KVM): {insn.hex(' ')}")
        if exit.data:
            lines.append("data: " + " ".join(f"{d:#x}" for d in exit.data))
        return lines
    if isinstance(exit, exits.FailEntryExit):
        return [
            "exit: KVM_EXIT_FAIL_ENTRY (the CPU refused the vCPU state), hardware entry "
            f"failure reason {exit.hardware_entry_failure_reason:#x} on host CPU {exit.cpu}"
        ]
    if isinstance(exit, exits.SystemEventExit):
        name = SYSTEM_EVENT_NAMES.get(exit.type, "unknown")
        return [f"exit: KVM_EXIT_SYSTEM_EVENT, {name} ({exit.type}), flags {exit.flags:#x}"]
    if isinstance(exit, exits.UnknownExit):
        name = c.EXIT_REASON_NAMES.get(exit.reason, "unknown exit reason")
        return [f"exit: {name} ({exit.reason}), hardware reason {exit.hardware_exit_reason:#x}"]
    return [f"exit: {exit!r}"]


def _emulation_insn(data: tuple[int, ...]) -> bytes | None:
    """Instruction bytes of an emulation failure, when KVM supplied them (flags bit 0)."""
    if len(data) < 3 or not data[0] & c.KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES:
        return None
    raw = b"".join(d.to_bytes(8, "little") for d in data[1:3])
    return raw[1 : 1 + min(raw[0], 15)]


def _mode(sregs: KvmSregs) -> str:
    if sregs.efer & EFER_LMA:
        return "64-bit long mode" if sregs.cs.l else "compatibility mode"
    if sregs.cr0 & CR0_PE:
        paging = "paging on" if sregs.cr0 & CR0_PG else "paging off"
        return f"{'32' if sregs.cs.db else '16'}-bit protected mode, {paging}"
    return "real mode"


def _code_bytes(vcpu: Vcpu, linear: int, memory: _Memory) -> str:
    out = b""
    addr = linear
    while len(out) < CODE_BYTES:
        gpa = vcpu.translate(addr)
        if gpa is None:
            break
        chunk = min(CODE_BYTES - len(out), PAGE_SIZE - (addr % PAGE_SIZE))
        try:
            out += memory.read(gpa, chunk)
        except KvmliteError:
            if not out:
                return f"code at RIP: guest-physical {gpa:#x} is outside guest RAM"
            break
        addr += chunk
    if not out:
        return f"code at RIP: linear {linear:#x} is not mapped by the guest's page tables"
    return f"code at RIP ({len(out)} bytes): {out.hex(' ')}"


def crash_report(vcpu: Vcpu, exit: exits.Exit, memory: _Memory | None = None) -> str:
    """A multi-line report of ``vcpu``'s state after the fatal ``exit``."""
    lines = [f"guest stopped on vCPU {vcpu.index}", *_exit_lines(exit)]
    try:
        regs = vcpu.get_regs()
        sregs = vcpu.get_sregs()
    except Exception as e:  # a report must not fail while reporting
        lines.append(f"registers unavailable: {e}")
        return "\n".join(lines)
    long_mode = bool(sregs.efer & EFER_LMA and sregs.cs.l)
    linear = regs.rip if long_mode else (sregs.cs.base + regs.rip) & 0xFFFFFFFF
    lines.append(f"mode: {_mode(sregs)}")
    lines.append(f"RIP: {regs.rip:#018x} (linear {linear:#x})  RFLAGS: {regs.rflags:#x}")
    if memory is not None:
        try:
            lines.append(_code_bytes(vcpu, linear, memory))
        except Exception as e:
            lines.append(f"code at RIP unavailable: {e}")
    names = "rax rbx rcx rdx rsi rdi rsp rbp r8 r9 r10 r11 r12 r13 r14 r15".split()
    for i in range(0, len(names), 4):
        lines.append("  ".join(f"{n.upper():>3}={getattr(regs, n):016x}" for n in names[i : i + 4]))
    lines.append(
        f"CR0={sregs.cr0:#x} CR2={sregs.cr2:#x} CR3={sregs.cr3:#x} CR4={sregs.cr4:#x} "
        f"EFER={sregs.efer:#x}"
    )
    for name in ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"):
        seg = getattr(sregs, name)
        lines.append(
            f"{name.upper():>3}: selector={seg.selector:#06x} base={seg.base:#x} "
            f"limit={seg.limit:#x} type={seg.type:#x} dpl={seg.dpl} l={seg.l} db={seg.db} "
            f"present={seg.present}"
        )
    lines.append(
        f"GDT: base={sregs.gdt.base:#x} limit={sregs.gdt.limit:#x}  "
        f"IDT: base={sregs.idt.base:#x} limit={sregs.idt.limit:#x}"
    )
    try:
        ev = vcpu.get_vcpu_events()
        if ev.exception.injected or ev.exception.pending:
            err = f" error code {ev.exception.error_code:#x}" if ev.exception.has_error_code else ""
            lines.append(f"pending exception: vector {ev.exception.nr}{err}")
    except Exception:
        pass
    return "\n".join(lines)
