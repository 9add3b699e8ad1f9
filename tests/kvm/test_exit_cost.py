"""Cost of a port-I/O exit through Vcpu.run(), measured with the pio_loop guest.

Prints wall-clock and user-CPU microseconds per exit (run pytest with -s to see them)
next to a bare loop of fcntl.ioctl(fd, KVM_RUN) on the same guest: the difference is
what the typed-exit layer costs. Only correctness is asserted; timings on the emulated
development KVM (TEST-HOST.md) say little about a real machine.
"""

from __future__ import annotations

import fcntl
import resource
import time
from pathlib import Path

from kvmlite.kvm import IoExit
from kvmlite.kvm.ioctls import KVM_RUN

N = 20000


def _start(make_machine, flat_guests: dict[str, Path]):
    m = make_machine()
    m.load_flat(flat_guests["pio_loop"])
    ask = m.vcpu.run()
    assert isinstance(ask, IoExit) and ask.port == 0x511
    ask.data[:] = N.to_bytes(4, "little")
    return m


def _clock() -> tuple[float, float]:
    return time.perf_counter(), resource.getrusage(resource.RUSAGE_THREAD).ru_utime


def test_port_io_exit_cost(make_machine, flat_guests: dict[str, Path], record_property) -> None:
    m = _start(make_machine, flat_guests)
    run = m.vcpu.run
    seen = 0
    t0, u0 = _clock()
    while True:
        ex = run()
        if ex.port == 0x501:  # type: ignore[union-attr]
            break
        seen += ex.data[0] == (seen & 0xFF)  # type: ignore[union-attr]
    t1, u1 = _clock()
    assert seen == N

    # Baseline: the bare ioctl loop, reading nothing from the run page.
    m2 = _start(make_machine, flat_guests)
    fd = m2.vcpu.fd
    t2, u2 = _clock()
    for _ in range(N + 1):
        fcntl.ioctl(fd, KVM_RUN)
    t3, u3 = _clock()

    wall, user = (t1 - t0) / N * 1e6, (u1 - u0) / N * 1e6
    bare_wall, bare_user = (t3 - t2) / N * 1e6, (u3 - u2) / N * 1e6
    record_property("us_per_exit_wall", round(wall, 2))
    record_property("us_per_exit_user_cpu", round(user, 2))
    print(
        f"\nport-I/O exit via Vcpu.run(): {wall:.2f} us wall, {user:.2f} us user CPU; "
        f"bare fcntl.ioctl loop: {bare_wall:.2f} us wall, {bare_user:.2f} us user CPU"
    )
