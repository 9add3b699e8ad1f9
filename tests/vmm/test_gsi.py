from kvmlite.vmm.gsi import (
    FIRST_MSI_GSI,
    IRQCHIP_IOAPIC,
    IRQCHIP_PIC_MASTER,
    IRQCHIP_PIC_SLAVE,
    GsiRouter,
    legacy_routes,
)


def test_isa_irq0_goes_to_ioapic_pin2_like_the_madt_says():
    r = legacy_routes()
    assert (0, IRQCHIP_IOAPIC, 2) in r and (0, IRQCHIP_PIC_MASTER, 0) in r
    assert not [x for x in r if x[0] == 2]  # the cascade
    assert (4, IRQCHIP_IOAPIC, 4) in r and (12, IRQCHIP_PIC_SLAVE, 4) in r
    assert {g for g, chip, _ in r if chip == IRQCHIP_IOAPIC} == set(range(24)) - {2}


class FakeVm:
    def __init__(self):
        self.tables = []

    def set_gsi_routing(self, entries):
        self.tables.append([(e.gsi, e.type) for e in entries])


def test_msi_allocation_resends_whole_table():
    vm = FakeVm()
    router = GsiRouter(vm)
    router.commit()
    base = len(vm.tables[0])
    g = router.allocate_msi(0xFEE00000, 0x31)
    assert g == FIRST_MSI_GSI and len(vm.tables[-1]) == base + 1
    router.update_msi(g, 0xFEE00000, 0x31)  # unchanged: no ioctl
    assert len(vm.tables) == 2
    router.update_msi(g, 0xFEE00000, 0x32)
    assert len(vm.tables) == 3
