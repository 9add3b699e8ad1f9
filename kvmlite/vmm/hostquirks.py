"""Work-arounds for KVM hosts that emulate guest kernel code (the "PVM" KVM).

Some development machines run /dev/kvm through a software implementation
(the ``kvm_pvm`` module) whose instruction emulator cannot run several
instructions Linux uses at boot (XRSTOR, CLAC/STAC, RDTSCP, ...); see
shared/TEST-HOST.md for the measured facts. On such a host kvmlite can:

* append kernel options that stop Linux from using those instructions
  (``kvmlite.guestimage.hostquirks.PVM_HOST_CMDLINE``), and
* advertise CPUID 0x80000008 EBX bit 2 (XSAVEERPTR) so Linux skips the AMD
  x87 pointer-leak work-around (``fnclex; emms; fild``) the emulator lacks.

``--host-quirks=auto`` (the default) applies them only where the host is
detected (``/sys/module/kvm_pvm`` exists); ``on`` forces them, ``off`` never
applies them. On a real KVM host ``auto`` changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PVM_MODULE = Path("/sys/module/kvm_pvm")


def pvm_host_detected(module_path: Path = PVM_MODULE) -> bool:
    return module_path.exists()


@dataclass(frozen=True)
class HostQuirks:
    enabled: bool
    cmdline: str = ""
    advertise_xsaveerptr: bool = False


def resolve(mode: str, module_path: Path = PVM_MODULE) -> HostQuirks:
    """Decide what to apply for ``--host-quirks=mode`` (auto, on, off)."""
    if mode == "off" or (mode == "auto" and not pvm_host_detected(module_path)):
        return HostQuirks(False)
    from kvmlite.guestimage.hostquirks import PVM_HOST_CMDLINE

    return HostQuirks(True, PVM_HOST_CMDLINE, advertise_xsaveerptr=True)


#: CPUID 0x80000008 EBX bit 2: "FXSAVE/XRSTOR always save/restore the x87 error pointers".
XSAVEERPTR_LEAF, XSAVEERPTR_BIT = 0x80000008, 2


def advertise_xsaveerptr(entries: list) -> list:
    """Set XSAVEERPTR in CPUID so Linux skips the AMD x87 pointer-leak work-around."""
    import dataclasses

    out = []
    for e in entries:
        if e.function == XSAVEERPTR_LEAF and e.index == 0:
            e = dataclasses.replace(e, ebx=e.ebx | (1 << XSAVEERPTR_BIT))
        out.append(e)
    return out
