"""Fixtures for the /dev/kvm tests: a Kvm handle, built tiny guests, a one-vCPU machine."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kvmlite.kvm import IoExit, Kvm, Vcpu, Vm
from kvmlite.memory import GuestMemory
from kvmlite.testing.guests import (
    DEBUG_EXIT_PORT,
    FLAT_LOAD_ADDRESS,
    GUEST_DIR,
    build_guest,
    enter_flat,
)

GUESTS = ("hello", "pio_loop", "mmio", "halt", "crash", "spin")
RAM_SIZE = 4 << 20


@pytest.fixture(scope="session")
def kvm() -> Iterator[Kvm]:
    if not os.path.exists("/dev/kvm"):
        pytest.skip("/dev/kvm is absent on this machine")
    k = Kvm()
    yield k
    k.close()


@pytest.fixture(scope="session")
def flat_guests(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("guests")
    return {g: build_guest(GUEST_DIR / f"{g}.c", out, kind="flat") for g in GUESTS}


class Machine:
    """One VM, RAM from GuestMemory in slot 0, one vCPU."""

    def __init__(self, kvm: Kvm, *, slot_flags: int = 0, irqchip: bool = False) -> None:
        self.vm: Vm = kvm.create_vm()
        self.mem = GuestMemory.create(RAM_SIZE)
        region = self.mem.regions[0]
        self.vm.set_user_memory_region(0, 0, region.size, region.host_address(), slot_flags)
        if irqchip:
            self.vm.create_irqchip()
        self.vcpu: Vcpu = self.vm.create_vcpu(0)

    def load_real_mode(self, code: bytes, at: int = 0x1000) -> None:
        """Real-mode code at ``at`` with CS = DS = 0."""
        self.mem.write(at, code)
        sregs = self.vcpu.get_sregs()
        for seg in (sregs.cs, sregs.ds, sregs.es, sregs.ss):
            seg.base, seg.selector = 0, 0
        self.vcpu.set_sregs(sregs)
        regs = self.vcpu.get_regs()
        regs.rip, regs.rflags, regs.rsp = at, 0x2, 0x8000
        self.vcpu.set_regs(regs)

    def load_flat(self, binary: Path) -> None:
        self.mem.write(FLAT_LOAD_ADDRESS, binary.read_bytes())
        enter_flat(self.vcpu)

    def run_until_debug_exit(
        self, limit: int = 10_000
    ) -> tuple[int, bytes, list[tuple[int, bytes]]]:
        """Run, collecting COM1 output; returns (exit code, serial, [(port, OUT data)]).

        Other port writes are copied at once: an exit's data view is only valid until
        the next run().
        """
        serial = bytearray()
        others: list[tuple[int, bytes]] = []
        for _ in range(limit):
            ex = self.vcpu.run()
            if isinstance(ex, IoExit) and ex.port == 0x3F8 and ex.is_write:
                serial += ex.data
            elif isinstance(ex, IoExit) and ex.port == DEBUG_EXIT_PORT and ex.is_write:
                return ex.data[0], bytes(serial), others
            elif isinstance(ex, IoExit) and ex.is_write:
                others.append((ex.port, bytes(ex.data)))
            else:
                raise AssertionError(f"unexpected exit {ex!r}; serial so far {serial!r}")
        raise AssertionError("guest did not reach the debug-exit port")

    def close(self) -> None:
        self.vm.close()
        self.mem.close()


@pytest.fixture
def make_machine(kvm: Kvm) -> Iterator[Callable[..., Machine]]:
    made: list[Machine] = []

    def make(**kwargs: int | bool) -> Machine:
        made.append(Machine(kvm, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for m in made:
        m.close()


@pytest.fixture
def machine(make_machine: Callable[..., Machine]) -> Machine:
    return make_machine()
