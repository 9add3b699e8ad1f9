from kvmlite.arch.x86 import msrs


def test_boot_msrs_values():
    m = msrs.boot_msrs()
    assert m[0xC0000082] == 0 and m[0x10] == 0  # LSTAR, TSC
    assert m[0x1A0] & 1  # fast strings
    assert m[0x2FF] == (1 << 11) | 6  # MTRRs on, default write-back
    assert 0x1B not in m  # IA32_APIC_BASE is KVM's


def test_filter_and_apply():
    class Vcpu:
        got = None

        def set_msrs(self, d):
            self.got = d

    v = Vcpu()
    out = msrs.apply_boot_msrs(v, [0x10, 0x2FF, 0x12345])
    assert v.got == out == {0x10: 0, 0x2FF: 0x806}
