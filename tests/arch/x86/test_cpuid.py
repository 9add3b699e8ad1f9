"""CPUID policy against the KVM_GET_SUPPORTED_CPUID recorded on the development host
(AMD EPYC, data/supported_cpuid.json) and a synthetic Intel-style list."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from kvmlite.arch.x86.cpufeatures import FEATURES, parse_cpu_features
from kvmlite.arch.x86.cpuid import CpuidEntry, apply_cpuid, build_cpuid, supported_from_kvm
from kvmlite.errors import ConfigError

DATA = Path(__file__).parent / "data" / "supported_cpuid.json"


def recorded() -> list[CpuidEntry]:
    return [CpuidEntry(**e) for e in json.loads(DATA.read_text())["entries"]]


def intel() -> list[CpuidEntry]:
    vendor = b"GenuineIntel"
    b, d, c = (int.from_bytes(vendor[i : i + 4], "little") for i in (0, 4, 8))
    return [
        CpuidEntry(0, 0, 0, 0x1F, b, c, d),
        CpuidEntry(1, 0, 0, 0x806EC, 0x00100800, 0xF7FA3223, 0x0F8BFBFF),
        CpuidEntry(4, 0, 1, 0x1C004121, 0x01C0003F, 0x3F, 0),  # L1d, 8 cores in EAX[31:26]
        CpuidEntry(4, 1, 1, 0x1C004122, 0x01C0003F, 0x3F, 0),
        CpuidEntry(4, 2, 1, 0x1C004143, 0x00C0003F, 0x3FF, 0),
        CpuidEntry(4, 3, 1, 0x1C03C163, 0x02C0003F, 0x1FFF, 6),  # L3 shared by 16
        CpuidEntry(4, 4, 1, 0, 0, 0, 0),
        CpuidEntry(6, 0, 0, 0x77, 2, 9, 0),
        CpuidEntry(7, 0, 1, 0, 0xD39FFFFB, 0x40000008, 0xBC000400),
        CpuidEntry(0xA, 0, 0, 0, 0, 0, 0),
        CpuidEntry(0xB, 0, 1, 1, 2, 0x100, 5),
        CpuidEntry(0xB, 1, 1, 4, 8, 0x201, 5),
        CpuidEntry(0x1F, 0, 1, 1, 2, 0x100, 5),
        CpuidEntry(0x80000000, 0, 0, 0x80000008, 0, 0, 0),
        CpuidEntry(0x80000001, 0, 0, 0, 0, 0x121, 0x2C100800),
        CpuidEntry(0x80000008, 0, 0, 0x3027, 0, 0, 0),
        CpuidEntry(0x40000001, 0, 0, 0x01007AFB, 0, 0, 0),
    ]


def table(entries):
    return {(e.function, e.index): e for e in entries}


def bit(entries, name):
    leaf, sub, reg, b = FEATURES[name]
    return getattr(table(entries)[(leaf, sub)], reg) >> b & 1


@pytest.mark.parametrize("source", [recorded, intel])
@pytest.mark.parametrize("n", [1, 2, 6])
def test_topology(source, n):
    sup = source()
    seen_ids = set()
    for i in range(n):
        t = table(build_cpuid(sup, i, n))
        ebx = t[(1, 0)].ebx
        assert ebx >> 24 == i and (ebx >> 16) & 0xFF == n
        assert ebx & 0xFFFF == table(sup)[(1, 0)].ebx & 0xFFFF  # CLFLUSH size kept
        assert bool(t[(1, 0)].edx >> 28 & 1) == (n > 1)  # HTT
        seen_ids.add(ebx >> 24)
        for leaf in (0xB, 0x1F):
            if (leaf, 0) not in table(sup):
                continue
            subs = sorted((k[1], v) for k, v in t.items() if k[0] == leaf)
            assert [s for s, _ in subs] == [0, 1, 2]
            assert all(v.edx == i and v.flags & 1 for _, v in subs)
            assert subs[0][1].ebx == 1 and subs[0][1].ecx == 0x100
            assert subs[1][1].ebx == n and subs[1][1].ecx >> 8 == 2
            assert 1 << subs[1][1].eax >= n  # the core shift spans every APIC id
            assert subs[2][1].ecx >> 8 == 0 and subs[2][1].ebx == 0
    assert seen_ids == set(range(n))


def test_intel_leaf4():
    t = table(build_cpuid(intel(), 0, 4))
    for sub in range(4):
        eax = t[(4, sub)].eax
        assert eax >> 26 == 3  # 4 cores per package
        level = eax >> 5 & 7
        assert (eax >> 14) & 0xFFF == (3 if level == 3 else 0)
        assert eax & 0x3FFF == intel()[2 + sub].eax & 0x3FFF
    assert t[(4, 4)].eax == 0


def test_amd_topology_leaves():
    t = table(build_cpuid(recorded(), 3, 4))
    assert t[(0x80000008, 0)].ecx & 0xFF == 3 and (t[(0x80000008, 0)].ecx >> 12) & 0xF == 2
    assert t[(0x8000001E, 0)].eax == 3
    l3 = t[(0x8000001D, 3)].eax
    assert (l3 >> 5) & 7 == 3 and (l3 >> 14) & 0xFFF == 3
    assert (t[(0x8000001D, 0)].eax >> 14) & 0xFFF == 0


@pytest.mark.parametrize("source", [recorded, intel])
def test_hypervisor_and_kvm_leaves(source):
    sup = source()
    t = table(build_cpuid(sup, 0, 1))
    assert t[(1, 0)].ecx >> 31 == 1
    sig = t[(0x40000000, 0)]
    assert sig.eax == 0x40000001
    assert b"".join(r.to_bytes(4, "little") for r in (sig.ebx, sig.ecx, sig.edx)) == (
        b"KVMKVMKVM\0\0\0"
    )
    assert t[(0x40000001, 0)].eax == table(sup)[(0x40000001, 0)].eax
    assert t[(6, 0)].eax == table(sup)[(6, 0)].eax & 4 and t[(6, 0)].ecx == 0
    assert not t[(1, 0)].ecx & (1 << 3 | 1 << 5 | 1 << 27)  # monitor, vmx, osxsave


def test_untouched_leaves_and_input_unchanged():
    sup = recorded()
    copy = list(sup)
    out = table(build_cpuid(sup, 1, 2))
    assert sup == copy
    assert out[(0, 0)] == table(sup)[(0, 0)]
    assert out[(0xD, 0)] == table(sup)[(0xD, 0)]


def test_overrides():
    sup = intel()
    ov = parse_cpu_features("-avx512f, +x2apic,-erms,+xsaveerptr")
    out = build_cpuid(sup, 0, 1, ov)
    assert bit(sup, "avx512f") and not bit(out, "avx512f")
    assert bit(sup, "avx512bw") and not bit(out, "avx512bw")  # dependents go too
    assert bit(out, "avx2") and bit(out, "x2apic") and not bit(out, "erms")
    assert bit(out, "xsaveerptr")
    # the recorded AMD host: hide what TEST-HOST.md says the emulator cannot run
    ov = parse_cpu_features("-xsave,-smap,-erms,-fsrm,-rdtscp,-rdpid,+xsaveerptr")
    out = build_cpuid(recorded(), 0, 1, ov)
    for name in ("xsave", "avx", "smap", "erms", "rdtscp", "xsaveopt"):
        assert not bit(out, name), name
    assert bit(out, "xsaveerptr") and bit(out, "hypervisor")


def test_enable_on_missing_leaf():
    sup = [e for e in intel() if e.function != 7]
    with pytest.raises(ConfigError, match="leaf 0x7"):
        build_cpuid(sup, 0, 1, parse_cpu_features("+avx2"))


@pytest.mark.parametrize(
    "text,match",
    [
        ("-avx512", "did you mean avx512f"),
        ("+x2apci", "x2apic"),
        ("avx", r"\+name or -name"),
        ("-", r"\+name or -name"),
        ("+avx,-avx", "both enables and disables avx"),
        ("-nosuchflagatall", "unknown CPU feature 'nosuchflagatall' in --cpu-features$"),
    ],
)
def test_parse_errors(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_cpu_features(text)


def test_parse_empty():
    ov = parse_cpu_features(" , ")
    assert not ov.enable and not ov.disable


def test_bad_vcpu_numbers():
    with pytest.raises(ConfigError):
        build_cpuid(intel(), 2, 2)
    with pytest.raises(ConfigError):
        build_cpuid(intel(), 0, 256)


def test_feature_table_has_no_collisions():
    where = [v for v in FEATURES.values()]
    assert len(where) == len(set(where))
    assert FEATURES["xsaveerptr"] == (0x80000008, 0, "ebx", 2)
    assert FEATURES["x2apic"] == (1, 0, "ecx", 21) and FEATURES["avx512f"] == (7, 0, "ebx", 16)


def test_converters_and_apply():
    class Entry:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    kvm_like = [SimpleNamespace(function=1, index=0, flags=0, eax=1, ebx=2, ecx=3, edx=4)]
    entries = supported_from_kvm(kvm_like)
    assert entries == [CpuidEntry(1, 0, 0, 1, 2, 3, 4)]
    got = []
    apply_cpuid(SimpleNamespace(set_cpuid2=got.extend), entries, entry_type=Entry)
    assert vars(got[0]) == dict(function=1, index=0, flags=0, eax=1, ebx=2, ecx=3, edx=4)


def test_to_kvm_struct():
    structs = pytest.importorskip("kvmlite.kvm.structs")
    e = CpuidEntry(0xB, 1, 1, 2, 3, 4, 5).to_kvm()
    assert isinstance(e, structs.KvmCpuidEntry2)
    assert CpuidEntry.from_kvm(e) == CpuidEntry(0xB, 1, 1, 2, 3, 4, 5)
