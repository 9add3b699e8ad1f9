"""Kernel command-line options for the development machines' emulated KVM.

The machines that build and test kvmlite expose a nested, software "PVM"
KVM (the host has the ``kvm_pvm`` module: /sys/module/kvm_pvm exists) that
emulates guest kernel code instruction by instruction and cannot run some
instructions at all. Setting CPUID through KVM_SET_CPUID2 does not hide
every feature from such a guest, so the guest kernel's own command line
does the hiding. See /work/shared/TEST-HOST.md for the measurements.

None of this is needed, or wanted, on a real KVM host; kvmlite appends it
only where ``pvm_host_detected()`` says so (or where the user asks).
"""

from __future__ import annotations

from pathlib import Path

PVM_MODULE = Path("/sys/module/kvm_pvm")

# Each option and why. Kept as a tuple so that tests and docs can walk it.
PVM_HOST_OPTIONS: tuple[tuple[str, str], ...] = (
    # FPU init would run xrstor, which the emulator cannot.
    ("noxsave", "XSAVE family (xrstor) is not emulated"),
    (
        "clearcpuid=smap,rdtscp,114,popcnt,rdrand,rdseed,rdpid,3dnowprefetch,erms,fsrm",
        # smap: clac/stac on every kernel entry; rdtscp, popcnt, rdrand,
        # rdseed, rdpid, 3dnowprefetch: not emulated; 114 (LFENCE_RDTSC):
        # lfence before rdtsc is not emulated; erms/fsrm: 'rep movsb/stosb'
        # is emulated a byte per iteration, so hiding them makes memcpy and
        # memset use 'rep movsq/stosq' (about 8x cheaper here).
        "hide CPU features the emulator cannot run, or runs very slowly",
    ),
    ("nofsgsbase", "rdfsbase/wrfsbase and friends are not emulated"),
    ("nopcid", "PCID (tagged TLB flushes) is not emulated"),
    ("noinvpcid", "invpcid is not emulated"),
    # Options below only save time (measured in TEST-HOST.md).
    ("rodata=off", "skips write-protecting kernel text/rodata: -6.7 s of boot"),
    ("noreplace-smp", "skips the SMP alternatives re-patching: -1.6 s"),
    ("percpu_alloc=page", "a cheaper first-chunk percpu allocator here: -1.4 s"),
    # Both boot options below come from kvmlite's kernel patches
    # (kvmlite/guestimage/patches); an unpatched kernel ignores them.
    (
        "pvm_quirks",
        "skip the boot INT3 self-test, skip fwait in fpu__drop(), and finish a "
        "user SYSCALL that page-faults at entry_SYSCALL_64",
    ),
    ("skip_builtin_param_sysfs", "no /sys/module/*/parameters for built-in code: -4.4 s"),
)

PVM_HOST_CMDLINE: str = " ".join(opt for opt, _why in PVM_HOST_OPTIONS)
"""Options appended to a guest kernel's command line on the PVM host:

- ``noxsave``: the XSAVE family (xrstor at FPU init) is not emulated.
- ``clearcpuid=smap,rdtscp,114,popcnt,rdrand,rdseed,rdpid,3dnowprefetch,erms,fsrm``:
  hide features whose instructions the emulator cannot run (clac/stac for
  SMAP on every kernel entry, rdtscp, lfence-before-rdtsc = bit 114, popcnt,
  rdrand, rdseed, rdpid, prefetchw) or runs a byte at a time
  (``rep movsb/stosb`` behind erms/fsrm).
- ``nofsgsbase nopcid noinvpcid``: those instructions are not emulated.
- ``rodata=off noreplace-smp percpu_alloc=page``: only save boot time here
  (6.7 s, 1.6 s, 1.4 s).
- ``pvm_quirks`` (kvmlite kernel patch): skip the INT3 self-test and the
  fwait in fpu__drop(), and complete a user-mode SYSCALL that the emulator
  leaves page-faulting at entry_SYSCALL_64.
- ``skip_builtin_param_sysfs`` (kvmlite kernel patch): saves 4.4 s.
"""


def pvm_host_detected(module_path: Path | None = None) -> bool:
    """True on a host whose /dev/kvm is the software PVM implementation."""
    return (module_path or PVM_MODULE).exists()
