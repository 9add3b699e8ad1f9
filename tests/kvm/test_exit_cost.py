"""Cost of a port-I/O exit through Vcpu.run(), next to QEMU on the same guest.

The pio_loop guest does N 1-byte OUTs to port 0x510. kvmlite runs its flat build (N from
an IN on port 0x511); QEMU (microvm, KVM) boots its PVH build with ``-append N`` and
``-append 0``, and the difference of the two runs is QEMU's cost of N exits. A bare
``fcntl.ioctl(fd, KVM_RUN)`` loop shows what the typed-exit layer adds. Numbers are
printed (pytest -s) and recorded as properties; only correctness is asserted, since
timings on the emulated, shared development KVM (TEST-HOST.md) are noisy.
"""

from __future__ import annotations

import fcntl
import subprocess
import time
from pathlib import Path

from kvmlite.kvm import IoExit
from kvmlite.kvm.ioctls import KVM_RUN
from kvmlite.testing.guests import GUEST_DIR, build_guest

N = 10_000
REPS = 3


def _start(make_machine, flat_guests: dict[str, Path]):
    m = make_machine()
    m.load_flat(flat_guests["pio_loop"])
    ask = m.vcpu.run()
    assert isinstance(ask, IoExit) and ask.port == 0x511
    ask.data[:] = N.to_bytes(4, "little")
    return m


def _kvmlite_run(make_machine, flat_guests) -> float:
    m = _start(make_machine, flat_guests)
    run = m.vcpu.run
    seen = 0
    t0 = time.perf_counter()
    while True:
        ex = run()
        if ex.port == 0x501:  # type: ignore[union-attr]
            break
        seen += ex.data[0] == (seen & 0xFF)  # type: ignore[union-attr]
    t1 = time.perf_counter()
    assert seen == N
    m.close()
    return (t1 - t0) / N * 1e6


def _bare_run(make_machine, flat_guests) -> float:
    m = _start(make_machine, flat_guests)
    fd = m.vcpu.fd
    t0 = time.perf_counter()
    for _ in range(N + 1):
        fcntl.ioctl(fd, KVM_RUN)
    t1 = time.perf_counter()
    m.close()
    return (t1 - t0) / N * 1e6


def _qemu(elf: Path, n: int) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["qemu-system-x86_64", "-M", "microvm", "-accel", "kvm", "-m", "64", "-nodefaults"]
        + ["-display", "none", "-no-reboot", "-kernel", str(elf), "-append", str(n)]
        + ["-device", "isa-debug-exit,iobase=0x501,iosize=1"],
        capture_output=True,
        timeout=120,
    )
    wall = time.perf_counter() - t0
    assert proc.returncode == 1, proc.stderr  # (0 << 1) | 1: the guest exited with 0
    return wall


def test_port_io_exit_cost(
    make_machine, flat_guests: dict[str, Path], tmp_path: Path, record_property
) -> None:
    ours = min(_kvmlite_run(make_machine, flat_guests) for _ in range(REPS))
    bare = min(_bare_run(make_machine, flat_guests) for _ in range(REPS))
    elf = build_guest(GUEST_DIR / "pio_loop.c", tmp_path, kind="pvh")
    loaded = min(_qemu(elf, N) for _ in range(REPS))
    empty = min(_qemu(elf, 0) for _ in range(REPS))
    qemu = (loaded - empty) / N * 1e6
    record_property("kvmlite_us_per_exit_wall", round(ours, 2))
    record_property("bare_ioctl_us_per_exit_wall", round(bare, 2))
    record_property("qemu_us_per_exit_wall", round(qemu, 2))
    print(
        f"\nport-I/O exit, wall us per exit (min of {REPS} x {N}): "
        f"kvmlite Vcpu.run() {ours:.2f}; bare fcntl.ioctl loop {bare:.2f}; "
        f"QEMU {qemu:.2f}; kvmlite/QEMU ratio {ours / qemu:.2f}"
    )


def test_python_cost_of_run(kvm, monkeypatch, record_property) -> None:
    """CPU time run() spends in Python per I/O exit, with KVM_RUN itself stubbed out:
    the part of the exit cost that is kvmlite's, free of the emulated KVM's noise."""
    import struct

    import kvmlite.kvm.vcpu as vcpu_module
    from kvmlite.kvm.structs import KvmRun

    vm = kvm.create_vm()
    try:
        vcpu = vm.create_vcpu(0)
        run_page = vcpu.run_struct()
        run_page.exit_reason = 2  # KVM_EXIT_IO: a 1-byte OUT to port 0x510
        io = struct.pack("=BBHIQ", 1, 1, 0x510, 1, 4096)
        vcpu._run[KvmRun.io.offset : KvmRun.io.offset + len(io)] = io
        del run_page
        monkeypatch.setattr(vcpu_module, "_ioctl", lambda fd, code: 0)
        run, n = vcpu.run, 100_000
        t0 = time.thread_time()
        for _ in range(n):
            ex = run()
        per_exit = (time.thread_time() - t0) / n * 1e6
        assert isinstance(ex, IoExit) and (ex.port, ex.is_write, len(ex.data)) == (0x510, True, 1)
        del ex
    finally:
        vm.close()
    record_property("run_python_cpu_us", round(per_exit, 3))
    print(f"\nVcpu.run() Python-side CPU per I/O exit (KVM_RUN stubbed): {per_exit:.2f} us")
