"""TCP throughput over tap: ``kvmlite serve net tap`` (vhost-user) against QEMU's own tap.

Two QEMU -accel tcg guests run side by side in one run, the same kernel and busybox
initramfs (tests/vhost_user/qemu_rig.py), each with a virtio-net-pci NIC on a tap of
its own inside a network namespace made for the run (kvmlite.testing.netns):

- kvmlite: ``-netdev vhost-user`` whose rings ``kvmlite serve net tap,ifname=kb0``
  serves (the tap opened with IFF_VNET_HDR and the offloads the guest negotiates);
- QEMU: ``-netdev tap,ifname=kb1,script=no,downscript=no,vhost=off``, QEMU's own
  userspace virtio-net datapath (no vhost-net kernel help, as the issue asks).

The host end of each tap has an address in the namespace, where the benchmark's own
sockets are the peers; in the guest, tests/vhost_user/guest/net_blast.c moves the data
in 64 KiB reads and writes (busybox nc's 1 KiB writes would measure its system calls).
guest -> host: the guest sends SIZE bytes; the time runs from the peer's accept to the
end of the stream.  host -> guest: the peer sends SIZE bytes; the time runs from the
accept until the guest's kernel has acknowledged every byte (the send queue, SIOCOUTQ,
is empty).  Each figure is the median of RUNS transfers, interleaved so
that a change in the machine's load hits both alike.  The guest is the same on both
sides and its CPU is emulated, so guest-side costs weigh alike on both; the ratio is
what carries over to other machines, not the MB/s.
"""

from __future__ import annotations

import itertools
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.common import Row

RUNS = 5
SIZE = 64 << 20
TAPS = {"kvmlite": ("kb0", "10.77.0"), "QEMU": ("kb1", "10.78.0")}
MACS = {"kvmlite": "52:54:00:77:00:02", "QEMU": "52:54:00:78:00:02"}


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def rows() -> list[Row]:
    from benchmarks.run import Skip

    if shutil.which("qemu-system-x86_64") is None:
        raise Skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    if os.geteuid() != 0:
        raise Skip("needs root (CAP_NET_ADMIN) for a network namespace with taps")
    # The rig and the namespace helper are shared with the tests (tests/vhost_user).
    from kvmlite.testing.netns import NetNs
    from tests.vhost_user.qemu_rig import (
        boot,
        build_net_guest,
        qemu_nic,
        serve_net,
        stop_all,
        vhost_user_nic,
    )
    from tests.vhost_user.tcp_peer import TcpPeer

    print(f"bench_net: before: {_load()}", file=sys.stderr)
    procs: list = []
    ports = itertools.count(6000)
    with tempfile.TemporaryDirectory() as tmp, NetNs() as ns:
        try:
            guest = build_net_guest(Path(tmp))
            for ifname, net in TAPS.values():
                ns.add_tap(ifname)
                ns.address(ifname, f"{net}.1/24")
            sock = Path(tmp) / "net.sock"
            serve_net(procs, sock, f"tap,ifname={TAPS['kvmlite'][0]}", ns)
            nic = f"tap,ifname={TAPS['QEMU'][0]},script=no,downscript=no,vhost=off"
            shells = {
                "kvmlite": boot(procs, guest, vhost_user_nic(sock, MACS["kvmlite"])),
                "QEMU": boot(procs, guest, qemu_nic(nic, MACS["QEMU"]), ns),
            }
            for vmm, shell in shells.items():
                shell.sh(f"ip addr add {TAPS[vmm][1]}.2/24 dev eth0 && ip link set eth0 up")

            def upload(vmm: str, size: int) -> float:
                host = f"{TAPS[vmm][1]}.1"
                port = next(ports)
                sink = TcpPeer(ns, host, port)
                out = shells[vmm].sh(f"net_blast send {host} {port} {size}", 120)
                assert f"BLAST: sent={size}" in out, out
                received, _, seconds = sink.result()
                assert received == size, f"{vmm}: the host got {received} of {size} bytes"
                return seconds

            def download(vmm: str, size: int) -> float:
                host = f"{TAPS[vmm][1]}.1"
                port = next(ports)
                source = TcpPeer(ns, host, port, send=bytes(size))
                out = shells[vmm].sh(f"net_blast recv {host} {port}", 120)
                assert f"BLAST: received={size}" in out, out
                source.result()
                return source.sent_seconds

            tests = {"guest -> host": upload, "host -> guest": download}
            for vmm in shells:  # warm-up: ARP, page cache, TCP windows
                for run in tests.values():
                    run(vmm, 1 << 20)
            times: dict[tuple[str, str], list[float]] = {}
            for _ in range(RUNS):
                for name, run in tests.items():
                    for vmm in shells:
                        times.setdefault((vmm, name), []).append(run(vmm, SIZE))
            for vmm, shell in shells.items():
                # Receive length errors: frames Linux's driver found malformed and dropped.
                counters = shell.sh("grep eth0: /proc/net/dev").split(":", 1)[1].split()
                print(
                    f"bench_net: {vmm} guest eth0 rx length errors: {counters[5]}", file=sys.stderr
                )
                shell.poweroff()
        finally:
            stop_all(procs)
    print(f"bench_net: after: {_load()}", file=sys.stderr)

    out = []
    for name in tests:
        rate = {vmm: SIZE / statistics.median(times[(vmm, name)]) / 1e6 for vmm in TAPS}
        spread = {vmm: [f"{SIZE / t / 1e6:.1f}" for t in times[(vmm, name)]] for vmm in TAPS}
        print(f"bench_net: {name} MB/s per run: {spread}", file=sys.stderr)
        out.append(
            Row(
                f"virtio-net TCP {name}, {SIZE >> 20} MiB, tap (QEMU tcg guest)",
                rate["kvmlite"],
                rate["QEMU"],
                "MB/s",
                higher_is_better=True,
                reference_name="QEMU tap, vhost=off",
            )
        )
    return out
