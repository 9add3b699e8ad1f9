"""Model-specific register values a Linux guest expects at boot.

Indices and bits: Intel SDM Vol. 4 ("Model-Specific Registers"), Vol. 3A
§11.11 (MTRRs). The SYSCALL/SYSENTER MSRs start at zero because the guest
programs them itself; IA32_MISC_ENABLE gets fast-string enable as real
firmware leaves it; the MTRR default type is write-back with MTRRs enabled,
so a guest that honours MTRRs does not run uncached. IA32_APIC_BASE is
KVM's to set (it already holds the BSP flag and the LAPIC address).

The caller filters ``boot_msrs()`` against KVM_GET_MSR_INDEX_LIST before
KVM_SET_MSRS: ``filter_supported(boot_msrs(), supported)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MSR_IA32_TSC = 0x10
MSR_IA32_SYSENTER_CS = 0x174
MSR_IA32_SYSENTER_ESP = 0x175
MSR_IA32_SYSENTER_EIP = 0x176
MSR_IA32_MISC_ENABLE = 0x1A0
MSR_MTRR_DEF_TYPE = 0x2FF
MSR_STAR = 0xC0000081
MSR_LSTAR = 0xC0000082
MSR_CSTAR = 0xC0000083
MSR_SYSCALL_MASK = 0xC0000084  # SFMASK
MSR_KERNEL_GS_BASE = 0xC0000102

MISC_ENABLE_FAST_STRING = 1 << 0
MTRR_TYPE_WRBACK = 6
MTRR_DEF_TYPE_E = 1 << 11  # MTRRs enabled


def boot_msrs() -> dict[int, int]:
    """{msr index: value} to load into every vCPU before it first runs."""
    return {
        MSR_IA32_SYSENTER_CS: 0,
        MSR_IA32_SYSENTER_ESP: 0,
        MSR_IA32_SYSENTER_EIP: 0,
        MSR_STAR: 0,
        MSR_LSTAR: 0,
        MSR_CSTAR: 0,
        MSR_SYSCALL_MASK: 0,
        MSR_KERNEL_GS_BASE: 0,
        MSR_IA32_TSC: 0,
        MSR_IA32_MISC_ENABLE: MISC_ENABLE_FAST_STRING,
        MSR_MTRR_DEF_TYPE: MTRR_DEF_TYPE_E | MTRR_TYPE_WRBACK,
    }


def filter_supported(msrs: dict[int, int], supported: Iterable[int]) -> dict[int, int]:
    """Keep only the MSRs the host KVM lists (KVM_GET_MSR_INDEX_LIST)."""
    allowed = set(supported)
    return {index: value for index, value in msrs.items() if index in allowed}


def apply_boot_msrs(vcpu: Any, supported: Iterable[int]) -> dict[int, int]:
    """Load the supported boot MSRs into ``vcpu`` (``set_msrs(dict)``); returns them."""
    msrs = filter_supported(boot_msrs(), supported)
    vcpu.set_msrs(msrs)
    return msrs
