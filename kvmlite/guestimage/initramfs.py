"""Initramfs archives for kvmlite's guests, built in Python (no cpio tool).

Two kinds (the kernel side is Documentation/filesystems/ramfs-rootfs-initramfs.rst):

- a busybox userland: Debian's busybox-static, a symlink per applet, and a
  shell-script /init that mounts proc, sysfs, devtmpfs, prints
  ``kvmlite guest ready`` and runs a shell with job control on the console;
  busybox ``acpid`` powers the guest off when the ACPI power button is pressed;
- a single-binary one, whose /init is one static test program; on an
  emulated KVM every fork+exec costs seconds, so slow tests do all their
  checks in that one process (TEST-HOST.md).

Both contain /dev/console (char 5:1): the kernel opens it for init's stdin,
stdout and stderr before init could mount devtmpfs. Archives are
uncompressed and deterministic; they are rewritten only when their bytes
change.
"""

from __future__ import annotations

import io
import subprocess
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from kvmlite.errors import ImageError
from kvmlite.guestimage.cache import atomic_write_bytes
from kvmlite.guestimage.cpio import NewcWriter

DEFAULT_BUSYBOX = Path("/bin/busybox")
READY_BANNER = "kvmlite guest ready"
SHELL_PROMPT = "kvmlite# "

# Mount points and the like that every guest gets.
_BASE_DIRS = ("dev", "proc", "sys", "tmp", "root", "etc")

BUSYBOX_INIT = f"""#!/bin/sh
# kvmlite's default guest /init (busybox).
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root TERM=vt100
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# CONFIG_DEVTMPFS_MOUNT only acts for a disk root, not for an initramfs.
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
# The ACPI power button (QMP system_powerdown) reaches userspace as KEY_POWER
# on /dev/input/event*; acpid runs /etc/acpi/PWRF/00000080 for it.
acpid -l /tmp/acpid.log
echo "{READY_BANNER}"
# cttyhack opens the real console device (ttyS0...) as the controlling
# terminal so job control works; /dev/console cannot be one. A shell that
# exits is restarted; 'poweroff -f' ends the VM.
while :; do
    setsid cttyhack env PS1='{SHELL_PROMPT}' /bin/sh
done
"""


#: udhcpc(8)'s event script (busybox networking/udhcp), so ``udhcpc -i eth0``
#: in the default guest configures the NIC (busybox ships no script of its
#: own): "bound"/"renew" carry the lease in the environment ($ip, $mask,
#: $router, $dns); resolv.conf gets the DNS servers.
UDHCPC_SCRIPT = b"""#!/bin/sh
case "$1" in
deconfig)
    ip addr flush dev "$interface"
    ip link set "$interface" up
    ;;
bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    for r in $router; do ip route add default via "$r" dev "$interface"; break; done
    : > /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    echo "DHCP: ip=$ip mask=${mask:-?} router=$router dns=$dns"
    ;;
esac
exit 0
"""


#: What busybox acpid runs for KEY_POWER (util-linux/acpid.c maps the key to the
#: action "PWRF/00000080", a path under its config directory /etc/acpi): the
#: default guest has no init daemon that ``poweroff`` could signal, hence -f.
ACPI_POWER_SCRIPT = b"""#!/bin/sh
echo "kvmlite guest: power button pressed, powering off" > /dev/console
sync
poweroff -f
"""


def _base_tree(w: NewcWriter) -> None:
    for d in _BASE_DIRS:
        w.directory(d)
    w.char_device("dev/console", 5, 1, 0o600)


def _busybox_applets(busybox: Path) -> list[str]:
    """Applet paths (``bin/sh``, ``usr/bin/env``...) from ``busybox --list-full``."""
    try:
        out = subprocess.run(
            [str(busybox), "--list-full"], capture_output=True, check=True, timeout=30
        ).stdout.decode()
    except (OSError, subprocess.SubprocessError) as e:
        raise ImageError(
            f"cannot run {busybox} --list-full ({e}); it must be a static busybox: "
            "apt-get install busybox-static"
        ) from None
    applets = [line.strip() for line in out.splitlines() if line.strip()]
    if "bin/sh" not in applets:
        raise ImageError(f"{busybox} has no 'sh' applet; install busybox-static")
    return applets


def _ensure_dirs(w: NewcWriter, path: PurePosixPath) -> None:
    for parent in reversed(path.parents[:-1]):  # parents[-1] is '.'
        if str(parent) not in w:
            w.directory(str(parent))


def busybox_initramfs_bytes(busybox: Path = DEFAULT_BUSYBOX) -> bytes:
    """The busybox initramfs as bytes (deterministic for a given busybox)."""
    if not busybox.is_file():
        raise ImageError(f"{busybox} not found: apt-get install busybox-static")
    data = busybox.read_bytes()
    if data[:4] != b"\x7fELF":
        raise ImageError(f"{busybox} is not an ELF binary")
    buf = io.BytesIO()
    with NewcWriter(buf) as w:
        _base_tree(w)
        for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin"):
            w.directory(d)
        w.file("bin/busybox", data, 0o755)
        for applet in _busybox_applets(busybox):
            path = PurePosixPath(applet)
            if path.is_absolute() or ".." in path.parts or str(path) == "bin/busybox":
                continue
            _ensure_dirs(w, path)
            if str(path) not in w:
                w.symlink(str(path), "/bin/busybox")
        w.directory("etc/udhcpc")
        w.file("etc/udhcpc/default.script", UDHCPC_SCRIPT, 0o755)
        w.directory("etc/acpi")
        w.directory("etc/acpi/PWRF")
        w.file("etc/acpi/PWRF/00000080", ACPI_POWER_SCRIPT, 0o755)
        w.file("init", BUSYBOX_INIT.encode(), 0o755)
    return buf.getvalue()


def build_busybox_initramfs(out: Path, busybox: Path = DEFAULT_BUSYBOX) -> Path:
    """Write the busybox initramfs to ``out`` (if its bytes changed); return ``out``."""
    _write_if_changed(out, busybox_initramfs_bytes(busybox))
    return out


def single_init_initramfs_bytes(
    init_binary: Path, extra_files: Mapping[str, Path | bytes] | None = None
) -> bytes:
    """An initramfs whose /init is ``init_binary``; ``extra_files`` maps guest
    paths (``etc/x`` or ``/etc/x``) to host files or bytes (mode 0755 for host
    files that are executable, else 0644)."""
    try:
        init = init_binary.read_bytes()
    except OSError as e:
        raise ImageError(f"cannot read the init program {init_binary}: {e.strerror}") from None
    buf = io.BytesIO()
    with NewcWriter(buf) as w:
        _base_tree(w)
        w.file("init", init, 0o755)
        for guest_path, content in sorted((extra_files or {}).items()):
            path = PurePosixPath(guest_path.lstrip("/"))
            if isinstance(content, bytes):
                data, mode = content, 0o644
            else:
                try:
                    data = content.read_bytes()
                except OSError as e:
                    raise ImageError(f"cannot read {content} for {guest_path}: {e}") from None
                mode = 0o755 if content.stat().st_mode & 0o111 else 0o644
            _ensure_dirs(w, path)
            w.file(str(path), data, mode)
    return buf.getvalue()


def build_single_init_initramfs(
    init_binary: Path, out: Path, extra_files: Mapping[str, Path | bytes] | None = None
) -> Path:
    """Write a single-program initramfs to ``out`` (if its bytes changed); return ``out``."""
    _write_if_changed(out, single_init_initramfs_bytes(init_binary, extra_files))
    return out


def _write_if_changed(out: Path, data: bytes) -> None:
    # Leaving an identical file alone keeps its mtime, so make-style callers
    # and the page cache both stay warm.
    try:
        if out.stat().st_size == len(data) and out.read_bytes() == data:
            return
    except OSError:
        pass
    atomic_write_bytes(out, data)
