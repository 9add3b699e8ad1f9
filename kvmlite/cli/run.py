"""``kvmlite run``: boot a kernel (the README lists every option)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from kvmlite.config import (
    BootSource,
    CdromConfig,
    CharConfig,
    DriveConfig,
    HostQuirksMode,
    MachineConfig,
    NetConfig,
    RngConfig,
    Transport,
    VirtioConsoleConfig,
    VmConfig,
    VncConfig,
    parse_size,
)
from kvmlite.errors import ConfigError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="boot a Linux kernel (bzImage or vmlinux)",
        description="Boot a kernel on /dev/kvm. With no -k, boot kvmlite's default guest "
        "(built once from Debian's linux-source and busybox-static).",
    )
    p.add_argument(
        "-k", "--kernel", type=Path, help="bzImage, ELF vmlinux with a PVH entry, or Multiboot"
    )
    p.add_argument("-i", "--initrd", type=Path, help="initramfs / initrd image")
    p.add_argument("-a", "--append", default="", metavar="CMDLINE", help="kernel command line")
    p.add_argument("-m", "--memory", default="256M", help="guest RAM, e.g. 512M or 2G")
    p.add_argument("-c", "--cpus", type=int, default=1, help="number of vCPUs")
    p.add_argument(
        "--cpu-features", default="", metavar="LIST", help="CPUID overrides, e.g. -avx512f,+x2apic"
    )
    p.add_argument(
        "--console",
        default="stdio",
        metavar="SPEC",
        help="serial console: stdio, file:PATH, unix:PATH, pty, null",
    )
    p.add_argument(
        "--serial",
        action="append",
        default=[],
        metavar="SPEC",
        help="another 16550A UART (COM2, then COM3, COM4) connected to SPEC (file:, unix:, pty)",
    )
    p.add_argument(
        "-d",
        "--disk",
        action="append",
        default=[],
        metavar="PATH[,ro][,...]",
        help="virtio-blk disk: PATH[,ro][,direct][,serial=S][,format=raw|qcow2][,queues=N]"
        "[,aio=threads|native|io_uring] (aio: the I/O engine; default threads);"
        " ,if=scsi puts it on virtio-scsi instead",
    )
    p.add_argument(
        "--cdrom",
        action="append",
        default=[],
        metavar="ISO|DIR|''",
        help="a CD-ROM drive on virtio-scsi (repeatable): an ISO image, a directory (made"
        " into an ISO 9660 image with Rock Ridge and Joliet names) or '' for an empty drive",
    )
    p.add_argument(
        "-n",
        "--net",
        action="append",
        default=[],
        metavar="SPEC",
        help="virtio-net NIC: user[,hostfwd=tcp::2222-:22] (passt, no root), "
        "tap[,ifname=NAME][,queues=N][,script=PATH][,downscript=PATH][,vnet_hdr=off], "
        "socket,listen=PATH|connect=PATH, none; "
        "each NIC may add mac=52:54:00:12:34:56 (see docs/networking.md)",
    )
    p.add_argument(
        "--rng",
        nargs="?",
        const="0",
        default=None,
        metavar="BYTES_PER_S",
        help="add a virtio-rng (optionally rate-limited)",
    )
    p.add_argument(
        "--virtio-console",
        metavar="SPEC",
        help="add a virtio-console; hvc0 goes to SPEC (stdio, unix:PATH, pty, ...)",
    )
    p.add_argument(
        "--virtio-port",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="extra virtio-console port (guest /dev/vportDpN), e.g. log=unix:/tmp/s",
    )
    p.add_argument(
        "--virtio-transport",
        choices=("pci", "mmio"),
        default="pci",
        help="transport for virtio devices (default pci)",
    )
    p.add_argument(
        "--test-devices",
        action="store_true",
        help="QEMU's test devices: isa-debug-exit at 0xf4 (exit status (v<<1)|1) and pc-testdev",
    )
    p.add_argument("--no-acpi", action="store_true", help="no ACPI tables (MP table only)")
    p.add_argument(
        "--host-quirks",
        choices=("auto", "on", "off"),
        default="auto",
        help="work-arounds for emulated-KVM hosts (default: only where detected)",
    )
    p.add_argument(
        "--kvm-device",
        default="/dev/kvm",
        metavar="PATH",
        help="the KVM device to open (default /dev/kvm)",
    )
    p.add_argument(
        "--restore",
        type=Path,
        metavar="DIR",
        help="bring back the snapshot in DIR (kvmlite snapshot) instead of booting; the "
        "machine is the snapshot's, only --console may be given (docs/snapshot.md)",
    )
    p.add_argument("--paused", action="store_true", help="with --restore: do not resume the vCPUs")
    p.add_argument(
        "--id", metavar="NAME", help="the VM's id for kvmlite ps/pause/stop... (default: generated)"
    )
    p.add_argument(
        "--qmp",
        action="append",
        default=[],
        metavar="unix:PATH|tcp:HOST:PORT",
        help="a QMP monitor (QEMU's -qmp spelling; ',server,nowait' accepted); "
        "default: qmp.sock in the VM's runtime directory",
    )
    p.add_argument(
        "--api-sock",
        metavar="PATH",
        help="serve the Firecracker-compatible REST API on this unix socket (docs/api.md)",
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the VM's resources from a Firecracker config file (JSON; docs/api.md): they "
        "replace -k/-i/-a/-m/-c/-d/-n; the other options still apply",
    )
    p.add_argument(
        "--vnc",
        metavar="ADDR",
        help="a framebuffer served over VNC on :N (loopback, port 5900+N), HOST:N or unix:PATH",
    )
    p.add_argument("--vnc-password-file", type=Path, metavar="FILE",
                   help="VNC password: the first line of FILE (8 bytes are used)")  # fmt: skip
    p.add_argument("--vnc-size", default="800x600", metavar="WxH", help="framebuffer size")
    p.add_argument("-v", "--verbose", action="count", default=0)


def config_from_args(args: argparse.Namespace) -> VmConfig:
    """The command line as configuration resources (nothing is opened here)."""
    console: VirtioConsoleConfig | None = None
    if args.virtio_console is not None or args.virtio_port:
        console = VirtioConsoleConfig(
            CharConfig.parse(args.virtio_console or "null"),
            tuple((name, CharConfig.parse(spec)) for name, spec in map(_port, args.virtio_port)),
        )
    return VmConfig(
        machine=MachineConfig(
            memory=parse_size(args.memory),
            cpus=args.cpus,
            cpu_features=args.cpu_features,
            acpi=not args.no_acpi,
            host_quirks=HostQuirksMode(args.host_quirks),
            virtio_transport=Transport(args.virtio_transport),
            kvm_path=args.kvm_device,
            test_devices=args.test_devices,
        ),
        boot=BootSource(args.kernel, args.initrd, args.append),
        console=CharConfig.parse(args.console),
        serial=tuple(CharConfig.parse(s) for s in args.serial),
        drives=tuple(DriveConfig.parse(d) for d in args.disk),
        cdroms=tuple(CdromConfig(c) for c in args.cdrom),
        nets=tuple(NetConfig.parse(n) for n in args.net),
        rng=None if args.rng is None else RngConfig(parse_size(args.rng, default_unit="B")),
        virtio_console=console,
        vnc=_vnc(args),
    )


#: Options that describe the machine, which --restore takes from the snapshot.
_MACHINE_OPTIONS = ("kernel", "initrd", "append", "cpu_features", "virtio_console", "rng")
_MACHINE_LISTS = ("serial", "disk", "net", "virtio_port")


def _check_restore_args(args: argparse.Namespace) -> None:
    given = [o for o in _MACHINE_OPTIONS if getattr(args, o) not in (None, "")]
    given += [o for o in _MACHINE_LISTS if getattr(args, o)]
    if args.memory != "256M" or args.cpus != 1:
        given.append("memory/cpus")
    if given:
        names = ", ".join("--" + o.replace("_", "-") for o in given)
        raise ConfigError(f"--restore takes the machine from the snapshot: drop {names}")


def _vnc(args: argparse.Namespace) -> VncConfig | None:
    if args.vnc is None:
        if args.vnc_password_file is not None:
            raise ConfigError("--vnc-password-file needs --vnc")
        return None
    w, sep, h = args.vnc_size.partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        raise ConfigError(f"--vnc-size {args.vnc_size!r}: expected WIDTHxHEIGHT, e.g. 800x600")
    return VncConfig(args.vnc, args.vnc_password_file, int(w), int(h))


def _port(spec: str) -> tuple[str, str]:
    name, sep, backend = spec.partition("=")
    if not sep or not name or not backend:
        raise ConfigError(f"--virtio-port {spec!r}: expected NAME=SPEC, e.g. log=unix:/tmp/log")
    return name, backend


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(args: argparse.Namespace) -> int:
    from kvmlite.api.address import SocketAddress  # noqa: PLC0415
    from kvmlite.api.management import Management  # noqa: PLC0415
    from kvmlite.api.rundir import check_id  # noqa: PLC0415
    from kvmlite.vmm.actions import Action, Quit, SnapshotLoad, Start  # noqa: PLC0415
    from kvmlite.vmm.vmm import Vmm  # noqa: PLC0415

    qmp = [SocketAddress.parse(spec) for spec in args.qmp]
    extra = {"api": Path(args.api_sock)} if args.api_sock else {}
    vm_id = args.id and check_id(args.id)
    if args.restore is not None:
        _check_restore_args(args)
        vmm = Vmm(id=vm_id)
        start: Action = SnapshotLoad(
            args.restore, resume=not args.paused, console=CharConfig.parse(args.console)
        )
    else:
        config = config_from_args(args)
        if args.config is not None:
            from kvmlite.cli.firecracker import read_config_file  # noqa: PLC0415

            config = read_config_file(args.config, config)[0]
        vmm = Vmm(config, id=vm_id)
        start = Start()
    management = Management(vmm, qmp, extra_sockets=extra)
    api_server = None
    # SIGTERM (kill, systemd) ends the VM like Ctrl-C: sockets and runtime dir removed.
    signal.signal(signal.SIGTERM, _terminate)
    try:
        management.open()
        if args.api_sock:
            from kvmlite.cli.firecracker import open_api  # noqa: PLC0415

            api_server = open_api(vmm, args.api_sock, None, require_kernel=False, max_body=51200)
        vmm.submit(start, timeout=None)
        management.serve()
        result = None
        while result is None:
            try:
                result = vmm.wait(0.5)
            except KeyboardInterrupt:
                vmm.submit(Quit("interrupted"))
    finally:
        if api_server is not None:
            api_server.close()
        management.close()
        vmm.close()
    if result.message and (result.status != 0 or args.verbose):
        print(f"kvmlite: {result.reason.value}: {result.message}", file=sys.stderr)
    return result.status
