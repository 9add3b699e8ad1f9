"""Firecracker's JSON resources <-> kvmlite's configuration resources.

The contract is Firecracker's API definition (swagger 2.0,
``firecracker-1.17.0-dev.yaml``: definitions ``BootSource``, ``Drive``,
``MachineConfiguration``, ``NetworkInterface``, ``EntropyDevice``,
``SerialDevice``, ``RateLimiter``, ``FullVmConfiguration``). A
``--config-file`` holds the same resources under their endpoints' names
(``boot-source``, ``drives``, ``machine-config``, ``network-interfaces``,
``entropy``, ``logger``, ``metrics``...), which is also what
``GET /vm/config`` answers: one document, read by ``from_firecracker`` and
written by ``to_firecracker``.

How Firecracker's resources map onto kvmlite's:

- ``boot-source`` -> ``BootSource`` (kernel, initrd, ``boot_args`` as the
  command line; kvmlite still puts ``console=ttyS0 reboot=k panic=-1`` first
  when the arguments name no console).
- ``drives[]`` -> virtio-blk ``DriveConfig`` with ``id = drive_id``, always
  raw (Firecracker never probes an image format; probing a guest-writable
  raw image would let the guest turn it into a qcow2 with a backing file).
  ``is_root_device``: like Firecracker, the root drive becomes the first
  virtio-blk device (``/dev/vda``) and ``root=/dev/vda rw`` (``ro`` for a
  read-only drive, ``root=PARTUUID=<partuuid>`` when one is given) is
  appended to the command line; ``to_firecracker`` recognises that suffix and
  gives back ``is_root_device``. ``cache_type`` and ``io_engine`` are accepted
  (kvmlite always honours flushes and uses its thread pool); rate limiters are
  checked and then ignored with a warning (kvmlite has none yet);
  ``socket`` (vhost-user-blk) is refused.
- ``network-interfaces[]`` -> a tap ``NetConfig``: ``host_dev_name`` is the
  tap's name, ``guest_mac`` its MAC, ``iface_id`` its id; ``mtu`` is refused.
- ``machine-config`` -> ``MachineConfig`` (vcpu_count 1..32 as in the
  definition, mem_size_mib, track_dirty_pages); ``smt: true``, a CPU template
  or huge pages are refused.
- ``entropy`` -> ``RngConfig``, its bandwidth bucket as bytes per second.
- ``PUT /serial``'s ``serial_out_path`` -> the console as ``file:PATH``.

What Firecracker JSON cannot express (kvmlite's own options, non-tap NICs) is
taken from ``base`` when a resource with the same id is there; a document
describes all of Firecracker's resources, so a drive it does not list is not
in the result.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Any

from kvmlite.config.boot import BootSource
from kvmlite.config.char import CharConfig, CharKind
from kvmlite.config.drive import DriveConfig, ImageFormat
from kvmlite.config.jsonfields import check_keys, get, get_enum, get_int, json_type, obj
from kvmlite.config.machine import MAX_MEMORY, MachineConfig, Transport
from kvmlite.config.net import NetConfig, NetKind
from kvmlite.config.sizes import MIB
from kvmlite.config.vm import RngConfig, VmConfig
from kvmlite.errors import ConfigError

log = logging.getLogger(__name__)

#: The version of Firecracker's API definition kvmlite answers to.
FIRECRACKER_API_VERSION = "1.17.0-dev"
DEFAULT_MEMORY_MIB = 128
MAX_VCPUS = 32
_ID = re.compile(r"[A-Za-z0-9_]{1,64}")
_ROOT_SUFFIX = re.compile(r"(?:^| )root=(/dev/vda|PARTUUID=\S+) (ro|rw)$")

#: The config file's keys: those kvmlite reads, and those it refuses for now.
CONFIG_KEYS = {
    "boot-source", "drives", "machine-config", "network-interfaces", "entropy",
    "logger", "metrics", "serial",
    "balloon", "vsock", "mmds-config", "cpu-config", "pmem", "memory-hotplug",
}  # fmt: skip
UNSUPPORTED = ("balloon", "vsock", "mmds-config", "cpu-config", "pmem", "memory-hotplug")
BOOT_KEYS = {"kernel_image_path", "boot_args", "initrd_path"}
DRIVE_KEYS = {
    "drive_id", "partuuid", "is_root_device", "cache_type", "is_read_only",
    "path_on_host", "rate_limiter", "io_engine", "socket",
}  # fmt: skip
PARTIAL_DRIVE_KEYS = {"drive_id", "path_on_host", "rate_limiter"}
NET_KEYS = {"iface_id", "guest_mac", "host_dev_name", "mtu", "rx_rate_limiter", "tx_rate_limiter"}
PARTIAL_NET_KEYS = {"iface_id", "rx_rate_limiter", "tx_rate_limiter"}
MACHINE_KEYS = {
    "vcpu_count",
    "mem_size_mib",
    "smt",
    "track_dirty_pages",
    "cpu_template",
    "huge_pages",
}
CPU_TEMPLATES = ("C3", "T2", "T2S", "T2CL", "T2A", "V1N1", "None")


def firecracker_defaults() -> VmConfig:
    """What Firecracker starts with: 1 vCPU, 128 MiB, virtio over MMIO (Firecracker's
    guests are often booted with ``pci=off``), the serial console on stdout."""
    return VmConfig(
        machine=MachineConfig(memory=DEFAULT_MEMORY_MIB * MIB, virtio_transport=Transport.MMIO)
    )


def check_id(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {json_type(value)}")
    if not _ID.fullmatch(value):
        raise ConfigError(f"{where}: {value!r} must be 1 to 64 letters, digits or _")
    return value


# -- rate limiters (checked, then used only by entropy) ----------------------------------


def token_bucket(value: Any, where: str) -> tuple[int, int]:
    """A ``TokenBucket``: (size, refill_time in ms)."""
    bucket = obj(value, where)
    check_keys(bucket, where, {"size", "refill_time", "one_time_burst"}, {"size", "refill_time"})
    int64 = 2**63 - 1  # the definition's "format: int64"
    get_int(bucket, "one_time_burst", where, 0, 0, int64)
    return get_int(bucket, "size", where, 0, 0, int64), get_int(
        bucket, "refill_time", where, 0, 0, int64
    )


def rate_limiter(value: Any, where: str) -> tuple[int, bool]:
    """A ``RateLimiter``: (bandwidth in bytes/s, 0 = unlimited; whether it limits anything)."""
    if value is None:
        return 0, False
    limiter = obj(value, where)
    check_keys(limiter, where, {"bandwidth", "ops"})
    rate, limits = 0, False
    if limiter.get("bandwidth") is not None:
        size, refill_ms = token_bucket(limiter["bandwidth"], f"{where}.bandwidth")
        if size and refill_ms:
            rate, limits = max(1, size * 1000 // refill_ms), True
    if limiter.get("ops") is not None:
        size, refill_ms = token_bucket(limiter["ops"], f"{where}.ops")
        limits = limits or bool(size and refill_ms)
    return rate, limits


def _ignored_limiter(value: Any, where: str) -> None:
    if rate_limiter(value, where)[1]:
        log.warning("%s: kvmlite has no I/O rate limiter yet; the limit is ignored", where)


# -- one resource each ---------------------------------------------------------------


def machine_from_firecracker(value: Any, base: MachineConfig) -> MachineConfig:
    where = "machine-config"
    mc = obj(value, where)
    check_keys(mc, where, MACHINE_KEYS, {"vcpu_count", "mem_size_mib"})
    cpus = get_int(mc, "vcpu_count", where, 1, 1, MAX_VCPUS)
    mib = get_int(mc, "mem_size_mib", where, DEFAULT_MEMORY_MIB, 1, MAX_MEMORY // MIB)
    if get(mc, "smt", bool, where, False):
        raise ConfigError(f"{where}.smt: kvmlite does not model SMT siblings; use false")
    if get_enum(mc, "cpu_template", where, CPU_TEMPLATES, "None") != "None":
        raise ConfigError(f"{where}.cpu_template: kvmlite has no CPU templates; use None")
    if get_enum(mc, "huge_pages", where, ("None", "Transparent", "2M"), "None") != "None":
        raise ConfigError(f"{where}.huge_pages: kvmlite backs guest RAM with 4 KiB pages; use None")
    dirty = get(mc, "track_dirty_pages", bool, where, False)
    return dataclasses.replace(base, cpus=cpus, memory=mib * MIB, track_dirty_pages=dirty)


def boot_from_firecracker(value: Any) -> BootSource:
    where = "boot-source"
    bs = obj(value, where)
    check_keys(bs, where, BOOT_KEYS, {"kernel_image_path"})
    kernel = get(bs, "kernel_image_path", str, where, "")
    initrd = get(bs, "initrd_path", str, where, "")
    if not kernel:
        raise ConfigError(f"{where}.kernel_image_path: empty path")
    return BootSource(
        Path(kernel), Path(initrd) if initrd else None, get(bs, "boot_args", str, where, "")
    )


def drive_from_firecracker(
    value: Any, base: DriveConfig | None, where: str = "drive"
) -> tuple[DriveConfig, bool, str]:
    """A ``Drive`` -> (DriveConfig, is_root_device, partuuid)."""
    drive = obj(value, where)
    check_keys(drive, where, DRIVE_KEYS, {"drive_id", "is_root_device"})
    drive_id = check_id(drive["drive_id"], f"{where}.drive_id")
    if drive.get("socket") is not None:
        raise ConfigError(f"{where}.socket: kvmlite does not attach vhost-user-blk drives yet")
    path = get(drive, "path_on_host", str, where, "")
    if not path:
        raise ConfigError(f"{where}: missing field 'path_on_host'")
    root = get(drive, "is_root_device", bool, where, False)
    read_only = get(drive, "is_read_only", bool, where, False)
    partuuid = get(drive, "partuuid", str, where, "")
    if partuuid and not re.fullmatch(r"[0-9A-Za-z-]{1,64}", partuuid):
        raise ConfigError(f"{where}.partuuid: {partuuid!r} is not a partition UUID")
    get_enum(drive, "cache_type", where, ("Unsafe", "Writeback"), "Unsafe")
    get_enum(drive, "io_engine", where, ("Sync", "Async"), "Sync")
    _ignored_limiter(drive.get("rate_limiter"), f"{where}.rate_limiter")
    if base is not None:
        config = dataclasses.replace(base, path=Path(path), read_only=read_only)
    else:
        config = DriveConfig(Path(path), read_only=read_only, format=ImageFormat.RAW, id=drive_id)
    return config, root, partuuid if root else ""


def net_from_firecracker(
    value: Any, base: NetConfig | None, where: str = "network-interface"
) -> NetConfig:
    net = obj(value, where)
    check_keys(net, where, NET_KEYS, {"iface_id", "host_dev_name"})
    iface_id = check_id(net["iface_id"], f"{where}.iface_id")
    tap = get(net, "host_dev_name", str, where, "")
    mac = get(net, "guest_mac", str, where, "") or None
    if net.get("mtu") is not None:
        get_int(net, "mtu", where, 0, 68, 65535)
        raise ConfigError(f"{where}.mtu: kvmlite's virtio-net does not advertise an MTU yet")
    for key in ("rx_rate_limiter", "tx_rate_limiter"):
        _ignored_limiter(net.get(key), f"{where}.{key}")
    mac = mac.lower() if mac else None
    if base is not None and base.kind is NetKind.TAP:
        return dataclasses.replace(base, ifname=tap, mac=mac)
    return NetConfig(NetKind.TAP, mac=mac, ifname=tap, id=iface_id)


def entropy_from_firecracker(value: Any) -> RngConfig:
    where = "entropy"
    entropy = obj(value, where)
    check_keys(entropy, where, {"rate_limiter"})
    rate, _ = rate_limiter(entropy.get("rate_limiter"), f"{where}.rate_limiter")
    return RngConfig(rate)


def serial_from_firecracker(value: Any) -> CharConfig:
    """``PUT /serial``: the console to a file (or named pipe), else stdout as before."""
    where = "serial"
    serial = obj(value, where)
    check_keys(serial, where, {"serial_out_path", "rate_limiter"})
    if serial.get("rate_limiter") is not None:
        token_bucket(serial["rate_limiter"], f"{where}.rate_limiter")
        log.warning("serial.rate_limiter: kvmlite does not rate-limit the console; ignored")
    path = get(serial, "serial_out_path", str, where, "")
    return CharConfig(CharKind.FILE, Path(path)) if path else CharConfig(CharKind.STDIO)


# -- the whole document --------------------------------------------------------------


def from_firecracker(doc: Any, base: VmConfig | None = None) -> VmConfig:
    """A Firecracker config document -> VmConfig (see the module docstring)."""
    doc = obj(doc, "config")
    check_keys(doc, "config", CONFIG_KEYS)
    for key in UNSUPPORTED:
        if doc.get(key) is not None:
            raise ConfigError(f"{key}: not supported by kvmlite yet")
    base = base or firecracker_defaults()
    machine = base.machine
    if doc.get("machine-config") is not None:
        machine = machine_from_firecracker(doc["machine-config"], base.machine)
    boot = BootSource()
    if doc.get("boot-source") is not None:
        boot = boot_from_firecracker(doc["boot-source"])
    drives, root = _drives(doc.get("drives"), base)
    nets = _nets(doc.get("network-interfaces"), base)
    rng = entropy_from_firecracker(doc["entropy"]) if doc.get("entropy") is not None else None
    console = base.console
    if doc.get("serial") is not None:
        console = serial_from_firecracker(doc["serial"])
    if root:
        boot = dataclasses.replace(boot, cmdline=f"{boot.cmdline} {root}".strip())
    return dataclasses.replace(
        base, machine=machine, boot=boot, drives=drives, nets=nets, rng=rng, console=console
    )


def _array(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected an array, got {json_type(value)}")
    return value


def _drives(value: Any, base: VmConfig) -> tuple[tuple[DriveConfig, ...], str]:
    """The drives, the root drive first, and the ``root=`` arguments it needs."""
    by_id = {d.id: d for d in base.drives if d.id}
    drives: list[DriveConfig] = []
    root_arg = ""
    for i, item in enumerate(_array(value, "drives")):
        where = f"drives[{i}]"
        drive_id = check_id(obj(item, where).get("drive_id"), f"{where}.drive_id")
        config, root, partuuid = drive_from_firecracker(item, by_id.get(drive_id), where)
        if root:
            if root_arg:
                raise ConfigError(f"{where}: a root block device already exists")
            dev = f"PARTUUID={partuuid}" if partuuid else "/dev/vda"
            root_arg = f"root={dev} {'ro' if config.read_only else 'rw'}"
            drives.insert(0, config)
        else:
            drives.append(config)
    return tuple(drives), root_arg


def _nets(value: Any, base: VmConfig) -> tuple[NetConfig, ...]:
    by_id = {n.id: n for n in base.nets if n.id}
    nets = []
    for i, item in enumerate(_array(value, "network-interfaces")):
        where = f"network-interfaces[{i}]"
        iface_id = check_id(obj(item, where).get("iface_id"), f"{where}.iface_id")
        nets.append(net_from_firecracker(item, by_id.get(iface_id), where))
    return tuple(nets)


def drive_id(drive: DriveConfig, index: int) -> str:
    """The id Firecracker's API knows a drive by (``kvmlite run -d`` drives have none)."""
    return drive.id or f"drive{index}"


def net_id(net: NetConfig, index: int) -> str:
    return net.id or f"net{index}"


def to_firecracker(config: VmConfig) -> dict[str, Any]:
    """VmConfig -> a ``FullVmConfiguration`` document (only tap NICs can be expressed)."""
    cmdline, root = config.boot.cmdline, None
    match = _ROOT_SUFFIX.search(cmdline)
    if match and config.drives:
        cmdline, root = cmdline[: match.start()], match.group(1)
    doc: dict[str, Any] = {}
    if config.boot.kernel is not None:
        boot: dict[str, Any] = {"kernel_image_path": str(config.boot.kernel), "boot_args": cmdline}
        if config.boot.initrd is not None:
            boot["initrd_path"] = str(config.boot.initrd)
        doc["boot-source"] = boot
    drives = []
    for i, d in enumerate(config.drives):
        item: dict[str, Any] = {
            "drive_id": drive_id(d, i),
            "path_on_host": str(d.path),
            "is_root_device": i == 0 and root is not None,
            "is_read_only": d.read_only,
        }
        if i == 0 and root is not None and root.startswith("PARTUUID="):
            item["partuuid"] = root.removeprefix("PARTUUID=")
        drives.append(item)
    doc["drives"] = drives
    doc["machine-config"] = {
        "vcpu_count": config.machine.cpus,
        "mem_size_mib": config.machine.memory // MIB,
        "smt": False,
        "track_dirty_pages": config.machine.track_dirty_pages,
        "huge_pages": "None",
    }
    nets = []
    for i, n in enumerate(config.nets):
        if n.kind is NetKind.TAP and n.ifname:
            net: dict[str, Any] = {"iface_id": net_id(n, i), "host_dev_name": n.ifname}
            if n.mac:
                net["guest_mac"] = n.mac
            nets.append(net)
    doc["network-interfaces"] = nets
    if config.rng is not None:
        rate = config.rng.rate_limit
        bucket = {"bandwidth": {"size": rate, "refill_time": 1000}} if rate else {}
        doc["entropy"] = {"rate_limiter": bucket} if bucket else {}
    return doc
