"""Opening tap queues and running up/down scripts, with errors a user can act on.

Follows the kernel's Documentation/networking/tuntap.rst and
``include/uapi/linux/if_tun.h``: every queue of a tap is one open of
``/dev/net/tun`` followed by ``TUNSETIFF`` with the interface's name and
``IFF_TAP | IFF_NO_PI`` (plus ``IFF_VNET_HDR``, and ``IFF_MULTI_QUEUE`` for
more than one queue). A name that does not exist yet creates the interface
(CAP_NET_ADMIN needed); an existing persistent tap is attached, which an
unprivileged user may do if the tap is owned by them (``ip tuntap add NAME
mode tap user $USER``).

The kernel answers every kind of mismatch with a bare errno (``EINVAL`` for
"exists but is a tun/veth/..." and for "multi-queue flag differs",
``EBUSY`` for "a single-queue tap already has its one queue attached",
``EPERM`` for "no CAP_NET_ADMIN / not the owner"), so after a failure the
interface is looked at (SIOCETHTOOL ETHTOOL_GDRVINFO: driver "tun", bus
"tap") to say which it was.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import re
import socket
import struct
import subprocess
import threading

from kvmlite.errors import ConfigError

log = logging.getLogger("kvmlite.backends.net")

#: Where the tun/tap clone device lives (a module attribute so tests can move it).
TUN_PATH = "/dev/net/tun"
#: Seconds an up- or down-script may run before it is killed.
SCRIPT_TIMEOUT = 30.0

# if_tun.h
TUNSETIFF = 0x400454CA  # _IOW('T', 202, int)
TUNSETOFFLOAD = 0x400454D0  # _IOW('T', 208, unsigned int)
TUNSETVNETHDRSZ = 0x400454D8  # _IOW('T', 216, int)
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_MULTI_QUEUE = 0x0100
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_UFO = 0x10

# linux/if.h, linux/sockios.h, linux/ethtool.h
IFNAMSIZ = 16
IFREQ = struct.Struct("16sH22x")  # ifr_name, ifr_flags, rest of the 40-byte union
SIOCETHTOOL = 0x8946
ETHTOOL_GDRVINFO = 0x00000003
DRVINFO_SIZE = 196  # cmd + driver[32] version[32] fw[32] bus_info[32] erom[32] + 12 + 5 u32

#: What the kernel's dev_valid_name() takes, narrowed to what is safe to pass
#: to a script as an argument: no '/', ':', '%' (a template), white space or
#: a leading '-' (the script would take it for an option).
_NAME_RE = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.\-]*")


def check_ifname(ifname: str) -> bytes:
    """The name as bytes for ifr_name, or a ConfigError saying what is wrong with it."""
    raw = ifname.encode("utf-8", "replace")
    if not _NAME_RE.fullmatch(ifname) or ifname in (".", ".."):
        raise ConfigError(
            f"tap: interface name {ifname!r} is not valid:"
            " use letters, digits, '_', '.' or '-' (not first)"
        )
    if len(raw) >= IFNAMSIZ:
        raise ConfigError(
            f"tap: interface name {ifname!r} is {len(raw)} bytes long;"
            f" Linux allows at most {IFNAMSIZ - 1}"
        )
    return raw


def driver_info(ifname: str) -> tuple[str, str] | None:
    """(driver, bus_info) of an interface in this thread's namespace, None if it does not exist."""
    buf = ctypes.create_string_buffer(DRVINFO_SIZE)
    struct.pack_into("I", buf, 0, ETHTOOL_GDRVINFO)
    req = struct.pack("16sP", ifname.encode()[: IFNAMSIZ - 1], ctypes.addressof(buf))
    req += bytes(40 - len(req))
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        try:
            fcntl.ioctl(s.fileno(), SIOCETHTOOL, req)
        except OSError as e:
            if e.errno == errno.ENODEV:
                return None
            return ("unknown", "")  # exists, but its driver does not answer ethtool
    raw = buf.raw

    def field(off: int) -> str:
        return raw[off : off + 32].split(b"\0", 1)[0].decode("ascii", "replace")

    return field(4), field(4 + 3 * 32)


def _explain_failure(e: OSError, name: str, multi_queue: bool) -> ConfigError:
    shown = name or "a new tap"
    if e.errno == errno.EPERM:
        return ConfigError(
            f"tap: not allowed to open {shown}: creating a tap (or attaching one owned by"
            " another user) needs CAP_NET_ADMIN; run as root, or create a persistent tap"
            " owned by you once with `sudo ip tuntap add NAME mode tap user $USER`"
            " and use ifname=NAME"
        )
    info = driver_info(name) if name else None
    if info is not None and info != ("tun", "tap"):
        if info == ("tun", "tun"):
            what = "is a tun (layer 3) device"
        elif info[0] == "unknown":
            what = f"is something else (`ip -d link show {name}` says what)"
        else:
            what = f"is a {info[0]} device"
        return ConfigError(
            f"tap: interface {name} exists and {what}, not a tap; choose another ifname"
        )
    if e.errno == errno.EBUSY:
        return ConfigError(
            f"tap: interface {name} is busy: another program (another VM?) has it open,"
            " and it is a single-queue tap; stop that program or choose another ifname"
        )
    if e.errno == errno.EINVAL and info is not None:
        mode = "without multi_queue" if multi_queue else "with multi_queue"
        want = "queues>1 needs" if multi_queue else "queues=1 needs"
        return ConfigError(
            f"tap: tap {name} exists with other flags (probably created {mode}):"
            f" {want} a tap created {'with' if multi_queue else 'without'} it"
            f" (`ip tuntap add {name} mode tap{' multi_queue' if multi_queue else ''}`),"
            " or choose another ifname"
        )
    return ConfigError(f"tap: cannot open {shown}: {e.strerror} (errno {e.errno})")


def open_queue(name: str, *, vnet_hdr: bool, multi_queue: bool) -> tuple[int, str]:
    """One non-blocking, close-on-exec fd attached to tap ``name`` ("" = kernel picks tapN)."""
    try:
        fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(
            f"tap: {TUN_PATH} does not exist: load the tun module (`modprobe tun`)"
            " or, in a container, pass the device in (--device /dev/net/tun)"
        ) from None
    except PermissionError:
        raise ConfigError(
            f"tap: no permission to open {TUN_PATH}: run as root, or give your user access"
            f" to it (it is usually mode 0666; check `ls -l {TUN_PATH}`)"
        ) from None
    except OSError as e:
        raise ConfigError(f"tap: cannot open {TUN_PATH}: {e.strerror}") from None
    flags = IFF_TAP | IFF_NO_PI
    if vnet_hdr:
        flags |= IFF_VNET_HDR
    if multi_queue:
        flags |= IFF_MULTI_QUEUE
    try:
        out = fcntl.ioctl(fd, TUNSETIFF, IFREQ.pack(name.encode(), flags))
        if vnet_hdr:
            # The 12-byte virtio_net_hdr_v1 (num_buffers included) VirtioNet uses.
            fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", 12))
        # A reattached persistent tap keeps the offloads of its last user: none
        # until the guest accepts some (set_offloads).
        fcntl.ioctl(fd, TUNSETOFFLOAD, 0)
    except OSError as e:
        os.close(fd)
        raise _explain_failure(e, name, multi_queue) from None
    actual = IFREQ.unpack(out)[0].split(b"\0", 1)[0].decode()
    return fd, actual


def run_script(script: str, ifname: str, what: str) -> None:
    """Run ``script IFNAME`` and wait; a ConfigError on failure (with its stderr)."""
    try:
        res = subprocess.run(
            [script, ifname],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=SCRIPT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"tap: {what} {script} {ifname} did not finish within {SCRIPT_TIMEOUT:g} s"
            " and was killed"
        ) from None
    except OSError as e:
        raise ConfigError(
            f"tap: cannot run {what} {script}: {e.strerror}; give a path to an executable file"
        ) from None
    if res.returncode != 0:
        err = res.stderr.decode("utf-8", "replace").strip()
        status = (
            f"exit status {res.returncode}" if res.returncode > 0 else f"signal {-res.returncode}"
        )
        raise ConfigError(
            f"tap: {what} `{script} {ifname}` failed ({status})"
            + (f": {err[-2000:]}" if err else "")
        )


class TapGroup:
    """What the queues of one tap share: the down-script runs when the last one closes."""

    def __init__(self, ifname: str, downscript: str | None, queues: int) -> None:
        self.ifname = ifname
        self.downscript = downscript
        self.open_queues = queues
        self.lock = threading.Lock()

    def queue_closing(self) -> None:
        """Called by each queue before it closes its fd (the interface still exists)."""
        with self.lock:
            self.open_queues -= 1
            if self.open_queues or self.downscript is None:
                return
        try:
            run_script(self.downscript, self.ifname, "downscript")
        except ConfigError as e:
            log.warning("%s", e)  # at shutdown there is nobody left to refuse
