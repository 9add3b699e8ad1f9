"""Work-arounds for KVM hosts that emulate guest kernel code (the "PVM" KVM).

Some development machines run /dev/kvm through a software implementation
(the ``kvm_pvm`` module) whose instruction emulator cannot run several
instructions Linux uses at boot (XRSTOR, CLAC/STAC, RDTSCP, ...); see
shared/TEST-HOST.md for the measured facts. On such a host kvmlite can:

* append kernel options that stop Linux from using those instructions
  (``kvmlite.guestimage.hostquirks.PVM_HOST_CMDLINE``), and
* advertise CPUID 0x80000008 EBX bit 2 (XSAVEERPTR) so Linux skips the AMD
  x87 pointer-leak work-around (``fnclex; emms; fild``) the emulator lacks;
* tell Linux the TSC rate (``tsc_early_khz=``): emulated guest code is so
  slow that its calibration of the TSC against the PIT and the PM timer
  fails, the TSC is then marked unstable, and every clock read becomes a
  PM-timer port exit. The rate is the host's (KVM runs the guest TSC at the
  host rate unless told otherwise), read from /proc/cpuinfo.

``--host-quirks=auto`` (the default) applies them only where the host is
detected (``/sys/module/kvm_pvm`` exists); ``on`` forces them, ``off`` never
applies them. On a real KVM host ``auto`` changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kvmlite.guestimage.hostquirks import pvm_host_detected


@dataclass(frozen=True)
class HostQuirks:
    enabled: bool
    cmdline: str = ""
    advertise_xsaveerptr: bool = False


def resolve(mode: str, module_path: Path | None = None) -> HostQuirks:
    """Decide what to apply for ``--host-quirks=mode`` (auto, on, off)."""
    if mode == "off" or (mode == "auto" and not pvm_host_detected(module_path)):
        return HostQuirks(False)
    from kvmlite.guestimage.hostquirks import PVM_HOST_CMDLINE

    cmdline = PVM_HOST_CMDLINE
    khz = host_tsc_khz()
    if khz:
        cmdline += f" tsc_early_khz={khz}"
    return HostQuirks(True, cmdline, advertise_xsaveerptr=True)


def host_tsc_khz(cpuinfo: Path = Path("/proc/cpuinfo")) -> int | None:
    """The host CPU's rate in kHz from /proc/cpuinfo ("cpu MHz"), if it says."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("cpu MHz"):
                return int(float(line.split(":")[1]) * 1000)
    except (OSError, ValueError, IndexError):
        pass
    return None


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
