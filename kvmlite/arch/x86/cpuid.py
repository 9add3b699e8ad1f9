"""The CPUID table each vCPU sees, built from KVM_GET_SUPPORTED_CPUID.

Sources: Documentation/virt/kvm/api.rst (KVM_GET_SUPPORTED_CPUID,
KVM_SET_CPUID2; "the entries for each vCPU must carry its own APIC id"),
Documentation/virt/kvm/x86/cpuid.rst (the 0x40000000 "KVMKVMKVM" leaves),
Intel SDM Vol. 2A "CPUID" (leaf 01H EBX, leaf 04H, leaf 0BH/1FH x2APIC
topology), AMD APM Vol. 3 Appendix E (Fn8000_0008 ECX, Fn8000_001D/1E).

Theory of operation: the topology is one socket of ``num_vcpus`` cores with
one thread each, APIC id = vCPU index. ``build_cpuid`` is pure: it copies
KVM's list, rewrites the topology leaves for one vCPU, sets the hypervisor
bit and the KVM signature, clears what a VM cannot have (monitoring and
power-management features KVM does not emulate), then applies the user's
``--cpu-features`` overrides last so they always win.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from kvmlite.arch.x86.cpufeatures import FEATURES, FeatureOverrides
from kvmlite.errors import ConfigError

KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1  # (sic) the kernel's spelling
KVM_CPUID_SIGNATURE = 0x40000000
KVM_CPUID_FEATURES = 0x40000001
KVM_SIGNATURE = b"KVMKVMKVM\0\0\0"

HTT = 1 << 28  # leaf 1 EDX
HYPERVISOR = 1 << 31  # leaf 1 ECX
OSXSAVE = 1 << 27  # leaf 1 ECX: mirrors CR4.OSXSAVE, KVM computes it
#: Leaf 1 bits a VM never gets: DTES64, MONITOR, DS-CPL, VMX, SMX, EST, TM2, xTPR, PDCM.
LEAF1_ECX_CLEAR = sum(1 << b for b in (2, 3, 4, 5, 6, 7, 8, 14, 15)) | OSXSAVE
#: DS, ACPI (thermal), TM, PBE.
LEAF1_EDX_CLEAR = sum(1 << b for b in (21, 22, 29, 31))
LEAF6_ARAT = 1 << 2  # APIC timer always running: the only thermal/power bit we keep

NO_OVERRIDES = FeatureOverrides()
TOPO_LEVEL_SMT = 1
TOPO_LEVEL_CORE = 2


@dataclass(frozen=True)
class CpuidEntry:
    """One CPUID leaf/subleaf, as ``struct kvm_cpuid_entry2`` holds it."""

    function: int
    index: int
    flags: int
    eax: int
    ebx: int
    ecx: int
    edx: int

    @classmethod
    def from_kvm(cls, e: Any) -> CpuidEntry:
        """From anything with the kvm_cpuid_entry2 attributes (ctypes struct, dict-like)."""
        return cls(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx)

    def to_kvm(self, entry_type: Any = None) -> Any:
        if entry_type is None:
            from kvmlite.kvm.structs import KvmCpuidEntry2 as entry_type  # noqa: N813

        return entry_type(
            function=self.function, index=self.index, flags=self.flags,
            eax=self.eax, ebx=self.ebx, ecx=self.ecx, edx=self.edx,
        )  # fmt: skip


def _bits_for(count: int) -> int:
    """Bits needed to number ``count`` items (0 for 1)."""
    return max(0, (count - 1).bit_length())


class _Table:
    """Entries keyed by (function, index), kept in KVM's order."""

    def __init__(self, entries: Iterable[CpuidEntry]) -> None:
        self.entries = {(e.function, e.index): e for e in entries}

    def get(self, function: int, index: int = 0) -> CpuidEntry | None:
        return self.entries.get((function, index))

    def has(self, function: int) -> bool:
        return any(f == function for f, _ in self.entries)

    def subleaves(self, function: int) -> list[CpuidEntry]:
        return [e for (f, _), e in self.entries.items() if f == function]

    def update(self, function: int, index: int = 0, **regs: int) -> None:
        e = self.entries.get((function, index))
        if e is not None:
            self.entries[(function, index)] = replace(e, **regs)

    def put(self, entry: CpuidEntry) -> None:
        self.entries[(entry.function, entry.index)] = entry

    def vendor(self) -> bytes:
        e = self.get(0)
        if e is None:
            return b""
        return b"".join(r.to_bytes(4, "little") for r in (e.ebx, e.edx, e.ecx))


def _topology_leaf(t: _Table, leaf: int, apic_id: int, num_vcpus: int) -> None:
    """Leaf 0BH/1FH: SMT level (1 thread), core level (num_vcpus), then the end marker."""
    for old in t.subleaves(leaf):
        del t.entries[(old.function, old.index)]
    core_shift = _bits_for(num_vcpus)
    levels = [
        (0, 1, TOPO_LEVEL_SMT),  # (shift, logical processors at this level, type)
        (core_shift, num_vcpus, TOPO_LEVEL_CORE),
        (0, 0, 0),
    ]
    for index, (shift, count, kind) in enumerate(levels):
        t.put(CpuidEntry(leaf, index, KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                         shift, count, (kind << 8) | index, apic_id))  # fmt: skip


def _set_topology(t: _Table, apic_id: int, num_vcpus: int) -> None:
    leaf1 = t.get(1)
    if leaf1 is not None:
        ebx = (leaf1.ebx & 0xFFFF) | (min(num_vcpus, 255) << 16) | (apic_id << 24)
        edx = leaf1.edx | HTT if num_vcpus > 1 else leaf1.edx & ~HTT
        t.update(1, ebx=ebx, edx=edx)
    for leaf in (0xB, 0x1F):
        if t.has(leaf):
            _topology_leaf(t, leaf, apic_id, num_vcpus)
    # Leaf 4 (Intel caches): EAX[31:26] cores per package - 1, EAX[25:14] sharing - 1.
    for e in t.subleaves(4):
        if e.eax & 0x1F == 0:  # cache type 0: no more caches
            continue
        level = (e.eax >> 5) & 7
        sharing = num_vcpus - 1 if level >= 3 else 0
        eax = (e.eax & 0x3FFF) | (min(sharing, 0xFFF) << 14) | (min(num_vcpus - 1, 63) << 26)
        t.update(4, e.index, eax=eax)
    if t.vendor() in (b"AuthenticAMD", b"HygonGenuine"):
        x8 = t.get(0x80000008)
        if x8 is not None:  # ECX[7:0] NC = cores - 1, ECX[15:12] ApicIdCoreIdSize
            ecx = (x8.ecx & ~0xF0FF) | ((num_vcpus - 1) & 0xFF) | (_bits_for(num_vcpus) << 12)
            t.update(0x80000008, ecx=ecx)
        for e in t.subleaves(0x8000001D):
            if e.eax & 0x1F:
                sharing = num_vcpus - 1 if (e.eax >> 5) & 7 >= 3 else 0
                t.update(0x8000001D, e.index, eax=(e.eax & ~(0xFFF << 14)) | (sharing << 14))
        if t.has(0x8000001E):  # extended APIC id, core id; one thread per core, node 0
            t.update(0x8000001E, eax=apic_id, ebx=apic_id & 0xFF, ecx=0)


def _set_hypervisor(t: _Table) -> None:
    leaf1 = t.get(1)
    if leaf1 is not None:
        t.update(1, ecx=(leaf1.ecx | HYPERVISOR) & ~LEAF1_ECX_CLEAR,
                 edx=leaf1.edx & ~LEAF1_EDX_CLEAR)  # fmt: skip
    b, c, d = (int.from_bytes(KVM_SIGNATURE[i : i + 4], "little") for i in (0, 4, 8))
    t.put(CpuidEntry(KVM_CPUID_SIGNATURE, 0, 0, KVM_CPUID_FEATURES, b, c, d))
    features = t.get(KVM_CPUID_FEATURES)
    t.put(CpuidEntry(KVM_CPUID_FEATURES, 0, 0, features.eax if features else 0, 0, 0, 0))
    leaf6 = t.get(6)
    if leaf6 is not None:
        t.update(6, eax=leaf6.eax & LEAF6_ARAT, ebx=0, ecx=0, edx=0)
    pmu = t.get(0xA)
    if pmu is not None and pmu.eax & 0xFF == 0:  # no architectural PMU: say nothing at all
        t.update(0xA, eax=0, ebx=0, ecx=0, edx=0)


def _apply_overrides(t: _Table, overrides: FeatureOverrides) -> None:
    for name in sorted(overrides.enable):
        leaf, sub, reg, bit = FEATURES[name]
        e = t.get(leaf, sub)
        if e is None:
            raise ConfigError(
                f"cannot enable {name}: this host's KVM has no CPUID leaf {leaf:#x}.{sub}"
            )
        t.update(leaf, sub, **{reg: getattr(e, reg) | (1 << bit)})
    for name in sorted(overrides.disabled_closure()):
        leaf, sub, reg, bit = FEATURES[name]
        e = t.get(leaf, sub)
        if e is not None:
            t.update(leaf, sub, **{reg: getattr(e, reg) & ~(1 << bit)})


def build_cpuid(
    supported: Iterable[CpuidEntry],
    vcpu_index: int,
    num_vcpus: int,
    features: FeatureOverrides = NO_OVERRIDES,
) -> list[CpuidEntry]:
    """The CPUID entries for vCPU ``vcpu_index`` of ``num_vcpus`` (for KVM_SET_CPUID2)."""
    if not 0 <= vcpu_index < num_vcpus <= 255:
        raise ConfigError(f"vCPU {vcpu_index} of {num_vcpus}: kvmlite supports 1..255 vCPUs")
    t = _Table(supported)
    _set_topology(t, vcpu_index, num_vcpus)
    _set_hypervisor(t)
    _apply_overrides(t, features)
    return list(t.entries.values())


def apply_cpuid(vcpu: Any, entries: Iterable[CpuidEntry], entry_type: Any = None) -> None:
    """KVM_SET_CPUID2 through ``vcpu.set_cpuid2`` (kvm_cpuid_entry2 structs)."""
    vcpu.set_cpuid2([e.to_kvm(entry_type) for e in entries])


def supported_from_kvm(entries: Iterable[Any]) -> list[CpuidEntry]:
    """Convert what ``Kvm.supported_cpuid()`` returns."""
    return [CpuidEntry.from_kvm(e) for e in entries]
