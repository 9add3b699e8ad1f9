"""CPUID feature flag names, spelled as /proc/cpuinfo spells them, and the
``--cpu-features`` parser.

Bit positions: Intel SDM Vol. 2A "CPUID" (Tables 3-10, 3-11, 3-8 leaf 07H),
AMD APM Vol. 3 Appendix E (CPUID Fn8000_0001, Fn8000_0008 EBX), named after
Linux's arch/x86/include/asm/cpufeatures.h, which is where /proc/cpuinfo's
names come from.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from kvmlite.errors import ConfigError

#: (leaf, subleaf, register) for each group of names below.
L1_ECX = (0x1, 0, "ecx")
L1_EDX = (0x1, 0, "edx")
L7_EBX = (0x7, 0, "ebx")
L7_ECX = (0x7, 0, "ecx")
L7_EDX = (0x7, 0, "edx")
LD1_EAX = (0xD, 1, "eax")
X1_ECX = (0x80000001, 0, "ecx")
X1_EDX = (0x80000001, 0, "edx")
X8_EBX = (0x80000008, 0, "ebx")

_GROUPS: dict[tuple[int, int, str], dict[str, int]] = {
    L1_EDX: dict(fpu=0, vme=1, de=2, pse=3, tsc=4, msr=5, pae=6, mce=7, cx8=8, apic=9, sep=11,
                 mtrr=12, pge=13, mca=14, cmov=15, pat=16, pse36=17, clflush=19, mmx=23, fxsr=24,
                 sse=25, sse2=26, ss=27, ht=28),
    L1_ECX: dict(pni=0, pclmulqdq=1, dtes64=2, monitor=3, ds_cpl=4, vmx=5, smx=6, est=7, tm2=8,
                 ssse3=9, cid=10, sdbg=11, fma=12, cx16=13, xtpr=14, pdcm=15, pcid=17, dca=18,
                 sse4_1=19, sse4_2=20, x2apic=21, movbe=22, popcnt=23, tsc_deadline_timer=24,
                 aes=25, xsave=26, avx=28, f16c=29, rdrand=30, hypervisor=31),
    L7_EBX: dict(fsgsbase=0, tsc_adjust=1, sgx=2, bmi1=3, hle=4, avx2=5, fdp_excptn_only=6,
                 smep=7, bmi2=8, erms=9, invpcid=10, rtm=11, cqm=12, mpx=14, rdt_a=15,
                 avx512f=16, avx512dq=17, rdseed=18, adx=19, smap=20, avx512ifma=21,
                 clflushopt=23, clwb=24, intel_pt=25, avx512pf=26, avx512er=27, avx512cd=28,
                 sha_ni=29, avx512bw=30, avx512vl=31),
    L7_ECX: dict(avx512vbmi=1, umip=2, pku=3, waitpkg=5, avx512_vbmi2=6, gfni=8, vaes=9,
                 vpclmulqdq=10, avx512_vnni=11, avx512_bitalg=12, tme=13, avx512_vpopcntdq=14,
                 la57=16, rdpid=22, bus_lock_detect=24, cldemote=25, movdiri=27, movdir64b=28,
                 enqcmd=29, sgx_lc=30),
    L7_EDX: dict(avx512_4vnniw=2, avx512_4fmaps=3, fsrm=4, avx512_vp2intersect=8, md_clear=10,
                 serialize=14, tsxldtrk=16, pconfig=18, arch_lbr=19, amx_bf16=22,
                 avx512_fp16=23, amx_tile=24, amx_int8=25, flush_l1d=28, arch_capabilities=29),
    LD1_EAX: dict(xsaveopt=0, xsavec=1, xgetbv1=2, xsaves=3),
    X1_EDX: dict(syscall=11, nx=20, mmxext=22, fxsr_opt=25, pdpe1gb=26, rdtscp=27, lm=29),
    X1_ECX: {"lahf_lm": 0, "cmp_legacy": 1, "svm": 2, "extapic": 3, "cr8_legacy": 4, "abm": 5,
             "sse4a": 6, "misalignsse": 7, "3dnowprefetch": 8, "osvw": 9, "ibs": 10, "xop": 11,
             "skinit": 12, "wdt": 13, "lwp": 15, "fma4": 16, "tce": 17, "nodeid_msr": 19,
             "tbm": 21, "topoext": 22, "perfctr_core": 23, "perfctr_nb": 24, "bpext": 26,
             "ptsc": 27, "perfctr_llc": 28, "mwaitx": 29},
    X8_EBX: dict(clzero=0, irperf=1, xsaveerptr=2, rdpru=4, wbnoinvd=9, amd_ibpb=12,
                 amd_ibrs=14, amd_stibp=15, amd_ssbd=24, virt_ssbd=25),
}  # fmt: skip

#: name -> (leaf, subleaf, register, bit)
FEATURES: dict[str, tuple[int, int, str, int]] = {
    name: (*where, bit) for where, names in _GROUPS.items() for name, bit in names.items()
}

_AVX512 = [n for n in FEATURES if n.startswith("avx512")]
#: Turning a feature off turns these off too: software checks only the child
#: flag and would then use state the parent enables (XSAVE holds the AVX state).
DEPENDENTS: dict[str, list[str]] = {
    "xsave": ["avx", "xsaveopt", "xsavec", "xgetbv1", "xsaves", "xsaveerptr"],
    "avx": ["avx2", "fma", "f16c", "vaes", "vpclmulqdq", "avx512f"],
    "avx512f": [n for n in _AVX512 if n != "avx512f"],
    "sse2": ["pni"],
    "pni": ["ssse3"],
    "ssse3": ["sse4_1"],
    "sse4_1": ["sse4_2"],
}


@dataclass(frozen=True)
class FeatureOverrides:
    """Flags to force on or off on top of what KVM reports."""

    enable: frozenset[str] = frozenset()
    disable: frozenset[str] = frozenset()

    def disabled_closure(self) -> set[str]:
        """``disable`` plus every dependent of a disabled flag, transitively."""
        out: set[str] = set()
        todo = list(self.disable)
        while todo:
            name = todo.pop()
            if name not in out:
                out.add(name)
                todo += DEPENDENTS.get(name, [])
        return out - set(self.enable) | set(self.disable)


def parse_cpu_features(text: str) -> FeatureOverrides:
    """Parse ``"-avx512f,+x2apic"``: each item is +name or -name (cpuinfo spelling)."""
    enable: set[str] = set()
    disable: set[str] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        sign, name = item[0], item[1:].strip().lower()
        if sign not in "+-" or not name:
            raise ConfigError(
                f"--cpu-features item {item!r} must be +name or -name (e.g. -avx512f,+x2apic)"
            )
        if name not in FEATURES:
            close = difflib.get_close_matches(name, FEATURES, n=4, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown CPU feature {name!r} in --cpu-features{hint}")
        (enable if sign == "+" else disable).add(name)
    both = enable & disable
    if both:
        raise ConfigError(f"--cpu-features both enables and disables {', '.join(sorted(both))}")
    return FeatureOverrides(frozenset(enable), frozenset(disable))
