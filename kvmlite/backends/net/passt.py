"""User-mode networking: a passt process on the other end of a socketpair.

passt (passt(1), https://passt.top) gives a guest network access without
privileges: it answers the guest's ARP, DHCP, NDP and DHCPv6 itself and
turns the guest's TCP, UDP and ICMP echo traffic into ordinary sockets on
the host. Its guest side speaks the framing of QEMU's ``-netdev stream``
(a 4-byte big-endian length, then the Ethernet frame), so this backend is a
``StreamSocketBackend`` on one end of a socketpair whose other end passt
gets with ``--fd`` (passt(1), "-F, --fd").

Theory of operation
-------------------
``start()`` runs ``passt --foreground --fd N --pid /proc/self/fd/W --log-file
/proc/self/fd/2`` with:

* the peer end of a unix stream socketpair as fd N;
* the write end of a pipe as W: passt writes its pid there "once
  initialisation is done" (passt(1), "-P, --pid"), after it parsed its
  options, found its template interface and bound the forwarded ports. A pid
  on the pipe means ready; EOF means it exited (its error is in the log).
  passt opens the pid file after it dropped root for user nobody, so the
  pipe is made writable by others (it is reachable only through this
  process tree's /proc/PID/fd, which needs ptrace rights anyway);
* stdout and stderr on an anonymous temporary file (so a chatty passt can
  never block on a full pipe nobody reads), which is also its log file:
  ``--log-file`` keeps it off syslog, which it otherwise tries first, and
  bounds the log at ``--log-size`` (1 MiB by default).

passt runs in a session of its own, so a Ctrl-C on kvmlite's terminal stops
kvmlite, which then stops passt, instead of both at once. If kvmlite dies,
its end of the socket closes and passt exits by itself (``--fd`` implies
``--one-off``: "quit ... once the client closes the socket"); a parent-death
signal would not do, as the kernel clears it when passt changes its user.

When passt exits under a running guest, the socket reads EOF: the backend
reaps passt, logs one error with its exit status and its last log line, and
marks itself ``closed`` (the VMM then stops watching it); the guest sees a
network that went quiet, everything else keeps running. ``close()`` closes
the socket, sends SIGTERM, and SIGKILL if passt has not gone after
``STOP_TIMEOUT`` seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from typing import IO

from kvmlite.backends.net.hostfwd import HostFwd, passt_args
from kvmlite.backends.net.socket_stream import StreamSocketBackend
from kvmlite.errors import ConfigError

log = logging.getLogger("kvmlite.backends.net")

#: Seconds passt may take to come up (it binds ports and reads the host's routes).
READY_TIMEOUT = 10.0
#: Seconds between SIGTERM and SIGKILL at close().
STOP_TIMEOUT = 2.0
#: Seconds to wait for passt's exit status once its socket reported EOF.
REAP_TIMEOUT = 1.0
#: How much of the end of the log is read for error messages.
LOG_TAIL_BYTES = 8192

INSTALL_HINT = "install it: apt-get install passt (Debian 12 and later: package passt)"

# Options start() sets itself; a second one would confuse passt or this backend.
_RESERVED = {
    "-f": "--foreground",
    "-F": "--fd",
    "-s": "--socket",
    "-P": "--pid",
    "-l": "--log-file",
    "-1": "--one-off",
}
# Lines that say nothing: passt's failed syslog attempts and its log file header.
_NOISE = re.compile(r"^Failed to send \d+ bytes to syslog$|^pas(?:st|ta) .*version.*\(\d+\)$")
_LOG_PREFIX = re.compile(r"^\d+\.\d+: +(?:[A-Za-z]+: +)?")


def _check_extra_args(extra_args: Sequence[str]) -> None:
    for arg in extra_args:
        name = arg.split("=", 1)[0]
        for short, long in _RESERVED.items():
            if name == long or arg.startswith(short) and not arg.startswith("--"):
                raise ConfigError(
                    f"passt option {arg!r} cannot be given: kvmlite runs passt with"
                    f" {short}/{long} itself (in the foreground, on a socket it opened)"
                )


def _find_binary(passt: str) -> str:
    found = shutil.which(passt)
    if found is None:
        where = "is not an executable file" if os.sep in passt else "was not found on PATH"
        raise ConfigError(
            f"user-mode networking needs passt, and {passt!r} {where}; {INSTALL_HINT}"
        )
    return found


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def read_log_tail(logfile: IO[bytes], lines: int = 5) -> list[str]:
    """The last messages in passt's log, without timestamps, syslog noise or repeats.

    passt writes some messages twice (to stderr and, timestamped, to the log
    file, here the same file); after the timestamp is cut they repeat.
    """
    try:
        size = os.fstat(logfile.fileno()).st_size
        raw = os.pread(logfile.fileno(), LOG_TAIL_BYTES, max(0, size - LOG_TAIL_BYTES))
    except (OSError, ValueError):
        return []
    out: list[str] = []
    text = raw.decode("utf-8", "replace")
    # A usage error prints the offending option, then the whole usage text.
    text = text.split("Usage: ", 1)[0]
    for line in text.splitlines():
        line = _LOG_PREFIX.sub("", line.strip())
        if not line or _NOISE.match(line) or (out and out[-1] == line):
            continue
        out.append(line)
    return out[-lines:]


def _hint(messages: list[str]) -> str:
    text = "\n".join(messages)
    if "Failed to bind" in text:
        return (
            "a forwarded host port is already in use, or is below 1024 and passt (which runs"
            " as user nobody when started as root) may not bind it"
            " (sysctl net.ipv4.ip_unprivileged_port_start)"
        )
    if "External interface not usable" in text:
        return (
            "passt copies the guest's address and gateway from the host interface with the"
            " default route, and this host has none; add a default route, or name an"
            " interface that has an address and a gateway for passt: passt arguments"
            " -i IFACE -g GATEWAY (and -a ADDRESS -n PREFIX for another guest address)"
        )
    return "see passt(1)"


def _readiness_pipe() -> tuple[int, int]:
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        # passt opens "/proc/self/fd/W" after dropping root for user nobody.
        os.fchmod(w, 0o622)
    except OSError:
        os.close(r)
        os.close(w)
        raise
    return r, w


def _wait_ready(r: int, timeout: float) -> str | None:
    """passt's pid once it wrote it; "" if it exited first; None if it timed out."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([r], [], [], left)[0]:
            return None
        chunk = os.read(r, 64)
        if not chunk:  # every copy of the write end closed: passt exited
            return ""
        data += chunk
    return data.decode("ascii", "replace").strip()


class PasstBackend(StreamSocketBackend):
    """A guest NIC's frames to and from a passt process this backend owns."""

    def __init__(
        self,
        sock: socket.socket,
        proc: subprocess.Popen[bytes],
        logfile: IO[bytes],
        *,
        name: str = "net-user",
    ) -> None:
        super().__init__(sock, name=name)
        self.proc = proc
        self._logfile = logfile

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        hostfwd: Sequence[HostFwd] = (),
        *,
        passt: str = "passt",
        extra_args: Sequence[str] = (),
        name: str = "net-user",
        command_prefix: Sequence[str] = (),
        ready_timeout: float = READY_TIMEOUT,
    ) -> PasstBackend:
        """Start passt and connect to it; ConfigError (with passt's own words) if it fails.

        ``extra_args`` go to passt as they are (addresses, DNS, ``-4``, ...).
        ``command_prefix`` runs passt through another program, e.g.
        ``("ip", "netns", "exec", "NS")`` for a network namespace; it must exec
        passt with the file descriptors it was given.
        """
        binary = _find_binary(passt)
        _check_extra_args(extra_args)
        fwd_args = passt_args(hostfwd)
        # Everything opened here is released if any step fails (out of fds,
        # passt refusing to start, ...); on success the backend owns it.
        with contextlib.ExitStack() as undo:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            undo.callback(ours.close)
            with theirs:
                logfile = undo.enter_context(tempfile.TemporaryFile(prefix="kvmlite-passt-"))
                # passt reopens the log file by path and writes its early errors to fd
                # 2 directly: append mode keeps the two from overwriting each other.
                fcntl.fcntl(logfile.fileno(), fcntl.F_SETFL, os.O_APPEND)
                r, w = _readiness_pipe()
                undo.callback(os.close, r)
                argv = [
                    *command_prefix,
                    binary,
                    "--foreground",
                    "--fd",
                    str(theirs.fileno()),
                    "--pid",
                    f"/proc/self/fd/{w}",
                    "--log-file",
                    "/proc/self/fd/2",
                    *fwd_args,
                    *extra_args,
                ]
                try:
                    proc = subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=logfile,
                        stderr=logfile,
                        pass_fds=(theirs.fileno(), w),
                        start_new_session=True,
                    )
                except OSError as e:
                    raise ConfigError(
                        f"{name}: cannot run {' '.join(argv[: len(command_prefix) + 1])}:"
                        f" {e.strerror}; {INSTALL_HINT}"
                    ) from None
                finally:
                    os.close(w)  # passt's copy is the only one left: EOF when it exits
            undo.callback(_stop, proc)
            pid = _wait_ready(r, ready_timeout)
            if not pid:
                came_up_late = pid is None
                code = _stop(proc)
                messages = read_log_tail(logfile)
                said = " / ".join(messages) or "nothing"
                if came_up_late:
                    raise ConfigError(
                        f"{name}: passt did not come up within {ready_timeout:g} s"
                        f" (it said: {said})"
                    )
                raise ConfigError(
                    f"{name}: passt failed to start ({_describe_exit(code)}): {said}; "
                    + _hint(messages)
                )
            backend = cls(ours, proc, logfile, name=name)
            undo.pop_all()
        os.close(r)
        log.info("%s: passt running (pid %s) %s", name, pid, " ".join(fwd_args + list(extra_args)))
        for line in read_log_tail(logfile, lines=20):
            log.debug("%s: passt: %s", name, line)
        return backend

    # -- life and death -------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 5) -> list[str]:
        """passt's last log messages (for error reports)."""
        return read_log_tail(self._logfile, lines)

    def _drop_peer(self, why: str) -> None:
        # passt went away under a running guest: one error, then behave as a
        # client whose peer left (closed; the VMM stops watching).
        if self._conn is None:
            return
        self._close_conn()  # passt exits on EOF if it merely closed its end
        self.closed = True
        code = _wait(self.proc, REAP_TIMEOUT)
        if code is None:  # it closed the socket yet lives on: of no use any more
            _stop(self.proc)
        last = self.log_tail(1)
        log.error(
            "%s: passt stopped (%s; %s)%s; the guest's user-mode network is down,"
            " the rest of the VM keeps running",
            self.name,
            _describe_exit(code),
            why,
            f"; its last message: {last[-1]}" if last else "",
        )

    def close(self) -> None:
        with self._lock:
            super().close()  # passt sees EOF and exits by itself, normally
            if self.proc.returncode is None:
                _stop(self.proc)
            if not self._logfile.closed:
                self._logfile.close()


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def _stop(proc: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT; reaps. The exit status; None if killed."""
    if proc.poll() is not None:
        return proc.returncode
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    code = _wait(proc, STOP_TIMEOUT)
    if code is None:
        log.warning("passt (pid %d) ignored SIGTERM for %g s; killing it", proc.pid, STOP_TIMEOUT)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
    return code
