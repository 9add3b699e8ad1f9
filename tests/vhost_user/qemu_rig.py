"""The QEMU rig for the networking tests: a busybox guest under ``-accel tcg``, its NIC
served by ``kvmlite serve net`` over vhost-user, or by QEMU's own netdevs for reference.

QEMU (q35, TCG) boots kvmlite's default kernel and busybox initramfs (about
2 s); the guest's virtio-net driver is Linux's own.  With ``vhost_user_nic``
the NIC's rings live in a shared memfd (``memory-backend-memfd,share=on``,
as vhost-user requires) and are served by a ``kvmlite serve net`` process;
``qemu_nic`` gives QEMU's own ``-netdev`` (tap, stream) for the same guest,
which is how the rig itself is checked and what the benchmark compares with.

``GuestShell`` types commands on the serial console and reads each one's
output between two markers: ``echo @@B<n>; CMD; echo @@E<n> RC=$?``.  The
markers' echo of the typed line is followed by ``;`` or `` RC=$?``, the
output by a line end, so a match can only be the output.

The initramfs is the default busybox one with a second cpio archive
appended (the kernel unpacks concatenated archives in turn,
Documentation/driver-api/early-userspace/buffer-format.rst):
``/bin/net_blast`` (guest/net_blast.c), a TCP source and sink with 64 KiB writes.
(The default initramfs's udhcpc script applies a lease and prints it as
``DHCP: ip=... router=...``.)
"""

from __future__ import annotations

import io
import itertools
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from kvmlite.guestimage import BASE_CMDLINE, SHELL_PROMPT, default_guest
from kvmlite.guestimage.cpio import NewcWriter
from kvmlite.guestimage.programs import compile_static
from kvmlite.testing.expect import Expect
from kvmlite.testing.netns import NetNs
from kvmlite.testing.poll import unix_listening

QEMU = "qemu-system-x86_64"
MEMORY_MB = 128
NET_BLAST_SOURCE = Path(__file__).parent / "guest" / "net_blast.c"
#: The NIC interrupts through INTx, not MSI-X.  QEMU 7.2 (Debian 12) under TCG segfaults
#: when the guest's driver sets DRIVER_OK on a vhost-user virtio-net-pci with MSI-X
#: (gdb: virtio_set_status -> vhost_net_start -> msix_set_vector_notifiers -> crash, in
#: QEMU's guest-notifier unmasking, before any ring is used); with INTx it runs.  QEMU's
#: own netdevs get the same option, so the benchmark compares like with like.
NIC_OPTIONS = "vectors=0"


@dataclass(frozen=True)
class NetGuest:
    """The kernel and the busybox initramfs with the network extras."""

    vmlinux: Path
    initrd: Path


def net_extras_cpio() -> bytes:
    blast = compile_static(NET_BLAST_SOURCE).read_bytes()
    buf = io.BytesIO()
    with NewcWriter(buf) as w:
        # bin/ is already there from the first archive; the kernel keeps it.
        w.directory("bin")
        w.file("bin/net_blast", blast, 0o755)
    return buf.getvalue()


def build_net_guest(workdir: Path) -> NetGuest:
    if shutil.which(QEMU) is None:
        pytest.fail(f"{QEMU} missing: apt-get install qemu-system-x86")
    base = default_guest(progress=False)
    initrd = workdir / "net-guest.cpio"
    initrd.write_bytes(base.initrd.read_bytes() + net_extras_cpio())
    return NetGuest(base.vmlinux, initrd)


@pytest.fixture(scope="session")
def net_guest(tmp_path_factory: pytest.TempPathFactory) -> NetGuest:
    return build_net_guest(tmp_path_factory.mktemp("netguest"))


@pytest.fixture
def procs() -> Iterator[list]:
    """Processes (Popen or Expect) a test started, stopped after it in reverse order."""
    started: list = []
    yield started
    stop_all(started)


def stop_all(started: list) -> None:
    for p in reversed(started):
        if isinstance(p, Expect):
            p.close()
        elif p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


def start_backend(
    procs: list, argv: Sequence[str], sock: Path, seconds: float = 20
) -> subprocess.Popen:
    """Start a vhost-user back-end ``argv`` that listens on ``sock``; its output goes to SOCK
    with the suffix .log.  Returns once the socket exists (an AssertionError with the log
    if the back-end exits or ``seconds`` pass first)."""
    log = sock.with_suffix(".log")
    with open(log, "w") as fh:  # a file: an unread pipe could fill and stall the back-end
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=fh, stdout=fh)
    procs.append(proc)
    deadline = time.monotonic() + seconds
    while not unix_listening(sock, proc.pid):  # the path exists before listen()
        assert proc.poll() is None, f"{argv[0]} exited {proc.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no socket after {seconds} s:\n{log.read_text()}"
        time.sleep(0.05)
    return proc


def serve(procs: list, sock: Path, *args: str, netns: NetNs | None = None) -> subprocess.Popen:
    """Start ``kvmlite serve ARGS -v --socket SOCK`` (inside ``netns`` if given): see
    ``start_backend``."""
    argv = [sys.executable, "-m", "kvmlite.serve", *args, "-v", "--socket", str(sock)]
    return start_backend(procs, netns.argv(argv) if netns is not None else argv, sock)


def serve_net(
    procs: list, sock: Path, spec: str, netns: NetNs | None = None, *extra: str
) -> subprocess.Popen:
    """Start ``kvmlite serve net [EXTRA] SPEC`` (inside ``netns`` if given)."""
    return serve(procs, sock, "net", *extra, spec, netns=netns)


def vhost_user_device(sock: Path, device: str, index: int = 0) -> list[str]:
    """QEMU options for a vhost-user ``device`` (``vhost-user-blk-pci,queue-size=128``...)
    whose back-end listens on ``sock``."""
    return [
        "-chardev",
        f"socket,id=vu{index},path={sock}",
        "-device",
        f"{device},chardev=vu{index}",
    ]


def vhost_user_nic(sock: Path, mac: str, index: int = 0, queue_pairs: int = 1) -> list[str]:
    """QEMU options for a virtio-net-pci whose queues kvmlite serves over ``sock``."""
    mq = f",queues={queue_pairs}" if queue_pairs > 1 else ""
    return [
        "-chardev", f"socket,id=vu{index},path={sock}",
        "-netdev", f"vhost-user,id=n{index},chardev=vu{index}{mq}",
        "-device", f"virtio-net-pci,netdev=n{index},mac={mac},{NIC_OPTIONS}"
        + (",mq=on" if mq else ""),
    ]  # fmt: skip


def qemu_nic(netdev: str, mac: str, index: int = 0) -> list[str]:
    """QEMU options for a virtio-net-pci on QEMU's own ``-netdev`` (``tap,...``, ``stream,...``)."""
    return [
        "-netdev",
        f"{netdev},id=n{index}",
        "-device",
        f"virtio-net-pci,netdev=n{index},mac={mac},{NIC_OPTIONS}",
    ]


class Bootable(Protocol):
    """A kernel and an initramfs (NetGuest, kvmlite.guestimage's DefaultGuest)."""

    @property
    def vmlinux(self) -> Path: ...

    @property
    def initrd(self) -> Path: ...


def qemu_argv(
    guest: Bootable,
    devices: Sequence[str],
    cpus: int = 1,
    *,
    memory_mb: int = MEMORY_MB,
    append: str = "quiet",
) -> list[str]:
    """QEMU (q35, TCG) booting ``guest`` with ``devices``, its RAM a shared memfd (as
    vhost-user requires), the serial console on stdio, ``append`` after BASE_CMDLINE."""
    return [
        QEMU, "-accel", "tcg", "-M", "q35", "-m", str(memory_mb), "-smp", str(cpus),
        "-object", f"memory-backend-memfd,id=mem,size={memory_mb}M,share=on",
        "-numa", "node,memdev=mem",
        *devices,
        "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
        "-no-reboot", "-kernel", str(guest.vmlinux), "-initrd", str(guest.initrd),
        "-append", f"{BASE_CMDLINE} {append}".strip(),
    ]  # fmt: skip


class GuestShell:
    """The busybox shell on a guest's serial console."""

    def __init__(self, console: Expect) -> None:
        self.console = console
        self._n = itertools.count()

    def wait_ready(self, timeout: float = 120) -> None:
        self.console.expect(re.escape(SHELL_PROMPT), timeout)
        # Kernel messages on the console would land inside command output.
        self.sh("dmesg -n 1")

    def run(self, cmd: str, timeout: float = 60) -> tuple[int, str]:
        """Run ``cmd`` (one shell line; it may end in ``&``); its status and output."""
        n = next(self._n)
        sep = " " if cmd.rstrip().endswith("&") else "; "
        self.console.sendline(f"echo @@B{n}; {cmd}{sep}echo @@E{n} RC=$?")
        m = self.console.expect(
            rf"@@B{n}\r?\n((?s:.*?))@@E{n} RC=(\d+)\r?\n".encode(), timeout=timeout
        )
        # The prompt: the next line typed must not arrive while this one is still read.
        self.console.expect(re.escape(SHELL_PROMPT), timeout=timeout)
        return int(m.group(2)), m.group(1).decode(errors="replace").replace("\r\n", "\n")

    def sh(self, cmd: str, timeout: float = 60) -> str:
        """Run ``cmd``; its output; an AssertionError if it failed."""
        rc, out = self.run(cmd, timeout)
        assert rc == 0, f"guest: {cmd!r} exited {rc}:\n{out}"
        return out

    def poweroff(self, timeout: float = 30) -> None:
        self.console.sendline("poweroff -f")
        self.console.wait_eof(timeout)


def spawn(
    procs: list, guest: NetGuest, nic: Sequence[str], netns: NetNs | None = None, cpus: int = 1
) -> GuestShell:
    """Start QEMU with ``nic`` (inside ``netns`` if given: QEMU's own tap needs that);
    the shell is not ready before ``wait_ready()``."""
    argv = qemu_argv(guest, nic, cpus)
    console = Expect.spawn(netns.argv(argv) if netns is not None else argv)
    procs.append(console)
    return GuestShell(console)


def boot(
    procs: list, guest: NetGuest, nic: Sequence[str], netns: NetNs | None = None, cpus: int = 1
) -> GuestShell:
    """``spawn``, then wait for the guest's shell."""
    shell = spawn(procs, guest, nic, netns, cpus)
    shell.wait_ready()
    return shell
