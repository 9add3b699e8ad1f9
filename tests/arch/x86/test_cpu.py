import struct
from types import SimpleNamespace

from kvmlite.arch.x86 import cpu, layout
from kvmlite.memory import MIB, GuestMemory


def decode_descriptor(d: int) -> dict:
    """Independent decode of an SDM Vol. 3A Figure 3-8 segment descriptor."""
    limit = (d & 0xFFFF) | ((d >> 48) & 0xF) << 16
    base = ((d >> 16) & 0xFFFFFF) | ((d >> 56) & 0xFF) << 24
    access = (d >> 40) & 0xFF
    flags = (d >> 52) & 0xF
    g = flags >> 3 & 1
    return dict(
        base=base,
        limit=(limit << 12 | 0xFFF) if g else limit,
        type=access & 0xF,
        s=access >> 4 & 1,
        dpl=access >> 5 & 3,
        present=access >> 7,
        l=flags >> 1 & 1,
        db=flags >> 2 & 1,
        g=g,
    )


def test_gdt_matches_boot_protocol_selectors():
    gdt = struct.unpack("<4Q", cpu.gdt_bytes())
    assert gdt[0] == 0
    code64 = decode_descriptor(gdt[cpu.SEL_CODE64 >> 3])
    assert code64 == dict(base=0, limit=0xFFFFFFFF, type=0xB, s=1, dpl=0, present=1, l=1, db=0, g=1)
    data = decode_descriptor(gdt[cpu.SEL_DATA >> 3])
    assert data["type"] == 3 and data["db"] == 1 and data["limit"] == 0xFFFFFFFF
    code32 = decode_descriptor(gdt[cpu.SEL_CODE32 >> 3])
    assert code32["db"] == 1 and code32["l"] == 0 and code32["type"] & 0x8
    assert cpu.SEL_CODE64 == 0x10 and cpu.SEL_DATA == 0x18  # boot.rst __BOOT_CS/__BOOT_DS


def walk(mem: GuestMemory, cr3: int, va: int) -> int:
    """Translate va through 4-level paging (SDM Vol. 3A §4.5), independent of cpu.py."""
    pml4e = mem.read_int(cr3 + ((va >> 39) & 511) * 8, 8)
    assert pml4e & 1
    pdpte = mem.read_int((pml4e & ~0xFFF & (1 << 52) - 1) + ((va >> 30) & 511) * 8, 8)
    assert pdpte & 1 and not pdpte & 0x80
    pde = mem.read_int((pdpte & ~0xFFF & (1 << 52) - 1) + ((va >> 21) & 511) * 8, 8)
    assert pde & 1 and pde & 0x80 and pde & 2
    return (pde & ~0x1FFFFF & (1 << 52) - 1) | (va & 0x1FFFFF)


def test_identity_map_covers_4gib():
    mem = GuestMemory.from_buffer(bytearray(2 * MIB))
    cpu.write_boot_structures(mem, "long64")
    for va in (0, 0x7000, 0x100000, 0x12345678, 0xBFFFFFFF, 0xFEE00000, 0xFFFFFFFF):
        assert walk(mem, layout.PML4_ADDR, va) == va
    assert layout.PML4_ADDR + len(cpu.page_table_bytes()) <= layout.PAGE_TABLES_END


def test_long_mode_plan():
    st = cpu.plan_long_mode(0x100200, layout.ZERO_PAGE_ADDR)
    assert st.cr0 & cpu.CR0_PE and st.cr0 & cpu.CR0_PG
    assert st.cr4 & cpu.CR4_PAE
    assert st.efer & cpu.EFER_LME and st.efer & cpu.EFER_LMA
    assert st.cs.l == 1 and st.rflags == 2 and st.gprs == {"rsi": 0x7000}


def test_pvh_plan():
    st = cpu.plan_protected32(0x1000000, 0x7000)
    assert st.cr0 & cpu.CR0_PE and not st.cr0 & cpu.CR0_PG
    assert st.efer == 0 and st.cs.db == 1 and st.cs.l == 0 and st.gprs == {"rbx": 0x7000}


def test_mp_state():
    assert cpu.initial_mp_state(0) == cpu.KVM_MP_STATE_RUNNABLE
    assert cpu.initial_mp_state(3) == cpu.KVM_MP_STATE_UNINITIALIZED


def seg():
    return SimpleNamespace(
        base=0,
        limit=0xFFFF,
        selector=0xF000,
        type=3,
        present=1,
        dpl=0,
        db=0,
        s=1,
        l=0,
        g=0,
        avl=0,
        unusable=0,
    )


class FakeVcpu:
    def __init__(self):
        self.sregs = SimpleNamespace(
            cs=seg(),
            ds=seg(),
            es=seg(),
            fs=seg(),
            gs=seg(),
            ss=seg(),
            tr=SimpleNamespace(type=11, selector=0),
            gdt=SimpleNamespace(base=0, limit=0xFFFF),
            idt=SimpleNamespace(base=0, limit=0xFFFF),
            cr0=0x60000010,
            cr3=0,
            cr4=0,
            efer=0,
        )
        self.calls = []

    def get_sregs(self):
        self.calls.append("get_sregs")
        return self.sregs

    def set_sregs(self, s):
        self.calls.append(("set_sregs", s))

    def set_regs(self, r):
        self.calls.append(("set_regs", r))


class Regs:
    rip = rflags = rsi = rbx = 0


def test_apply_boot_state_long_mode():
    vcpu = FakeVcpu()
    cpu.apply_boot_state(vcpu, cpu.plan_long_mode(0x100200, 0x7000), regs_type=Regs)
    assert vcpu.calls[0] == "get_sregs"
    s = vcpu.calls[1][1]
    assert s.cs.selector == 0x10 and s.cs.l == 1 and s.cs.limit == 0xFFFFFFFF
    assert all(getattr(s, n).selector == 0x18 for n in ("ds", "es", "fs", "gs", "ss"))
    assert s.tr.type == 11  # left as KVM reset it
    assert s.gdt.base == layout.GDT_ADDR and s.gdt.limit == 31
    assert s.efer == 0x500 and s.cr3 == layout.PML4_ADDR and s.cr0 & 0x80000001 == 0x80000001
    r = vcpu.calls[2][1]
    assert (r.rip, r.rsi, r.rflags) == (0x100200, 0x7000, 2)


def test_apply_boot_state_pvh():
    vcpu = FakeVcpu()
    cpu.apply_boot_state(vcpu, cpu.plan_protected32(0x1000000, 0x7000), regs_type=Regs)
    s = vcpu.calls[1][1]
    assert s.cs.selector == 0x08 and s.cs.db == 1 and s.efer == 0 and s.cr0 & 0x80000000 == 0
    assert vcpu.calls[2][1].rbx == 0x7000


def test_apply_with_kvm_structs():
    """The same path with the real ctypes structs (nested segments are written in place)."""
    from kvmlite.kvm.structs import KvmRegs, KvmSregs

    class Vcpu:
        def __init__(self):
            self.sregs = KvmSregs()
            self.sregs.tr.type = 11
            self.regs = None

        def get_sregs(self):
            return self.sregs

        def set_sregs(self, s):
            self.sregs = s

        def set_regs(self, r):
            self.regs = r

    v = Vcpu()
    cpu.apply_boot_state(v, cpu.plan_long_mode(0x100200, 0x7000))
    assert isinstance(v.regs, KvmRegs) and v.regs.rsi == 0x7000 and v.regs.rip == 0x100200
    assert v.sregs.cs.l == 1 and v.sregs.ss.selector == 0x18 and v.sregs.tr.type == 11
    assert v.sregs.efer == 0x500 and v.sregs.gdt.limit == 31
