"""The ``kvmlite`` command line: ``kvmlite run|img|serve ...``.

``img`` lives in kvmlite/imgtool.py and ``serve`` (vhost-user) in kvmlite/serve/.

``kvmlite run`` exit statuses: 0 the guest powered off (or the user quit
from the console), 1 kvmlite failed (bad input, KVM error), 2 usage error,
3 the guest rebooted, 4 the guest crashed; a test guest that writes a value
to the debug-exit port ends kvmlite with that value as its status.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from kvmlite.backends.net.spec import NetSpec
from kvmlite.errors import ConfigError, KvmliteError
from kvmlite.vmm.config import DiskConfig, VmConfig, parse_size


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="boot a Linux kernel (bzImage or vmlinux)",
        description="Boot a kernel on /dev/kvm. With no -k, boot kvmlite's default guest "
        "(built once from Debian's linux-source and busybox-static).",
    )
    p.add_argument("-k", "--kernel", type=Path, help="bzImage or ELF vmlinux with a PVH entry")
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
        help="virtio-blk disk: PATH[,ro][,direct][,serial=S][,format=raw|qcow2][,queues=N]",
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
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.set_defaults(func=cmd_run)


def config_from_args(args: argparse.Namespace) -> VmConfig:
    return VmConfig(
        kernel=args.kernel,
        initrd=args.initrd,
        cmdline=args.append,
        memory=parse_size(args.memory),
        cpus=args.cpus,
        cpu_features=args.cpu_features,
        console=args.console,
        serial=args.serial,
        acpi=not args.no_acpi,
        host_quirks=args.host_quirks,
        disks=[DiskConfig.parse(d) for d in args.disk],
        nets=[NetSpec.parse(n) for n in args.net],
        kvm_path=args.kvm_device,
        rng=None if args.rng is None else int(parse_size(args.rng, default_unit="B")),
        virtio_console=args.virtio_console,
        virtio_ports=[_port(p) for p in args.virtio_port],
        virtio_transport=args.virtio_transport,
    )


def _port(spec: str) -> tuple[str, str]:
    name, sep, backend = spec.partition("=")
    if not sep or not name or not backend:
        raise ConfigError(f"--virtio-port {spec!r}: expected NAME=SPEC, e.g. log=unix:/tmp/log")
    return name, backend


def cmd_run(args: argparse.Namespace) -> int:
    from kvmlite.vmm.builder import build_vm

    config = config_from_args(args)
    machine = build_vm(config)
    try:
        result = machine.run()
    finally:
        machine.close()
    if result.message and (result.status != 0 or args.verbose):
        print(f"kvmlite: {result.reason.value}: {result.message}", file=sys.stderr)
    return result.status


def make_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvmlite", description="A small VMM for Linux/KVM.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    if argv is None or argv[:1] == ["img"]:
        from kvmlite import imgtool

        imgtool.register(sub)
    else:  # listed in --help; the image tools load only when used (start-up time)
        sub.add_parser("img", help="create, inspect, check and convert disk images")
    if argv is None or argv[:1] == ["serve"]:
        from kvmlite import serve

        serve.register(sub)
    else:
        sub.add_parser("serve", help="serve a virtio device to another VMM over vhost-user")
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = make_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG
        if getattr(args, "verbose", 0) > 1
        else logging.INFO
        if getattr(args, "verbose", 0)
        else logging.WARNING,
        format="kvmlite: %(message)s",
    )
    if args.command == "img":
        from kvmlite import imgtool

        return imgtool.run(args)
    if args.command == "serve":
        from kvmlite import serve

        return serve.run(args)
    try:
        return args.func(args)
    except KvmliteError as e:
        print(f"kvmlite: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
