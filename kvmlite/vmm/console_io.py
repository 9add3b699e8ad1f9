"""Host character backends to the guest's UARTs and virtio-console ports.

Output goes straight from the device to the backend (a closed reader is
logged once and the guest keeps running). Input is pulled by the I/O loop
only while the device has room for it, so nothing typed is lost and a fast
source cannot grow memory without bound.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from kvmlite.backends.char.base import CharBackend
from kvmlite.eventloop import EventLoop
from kvmlite.vmm.locking import Lock

if TYPE_CHECKING:
    from kvmlite.backends.char.pump import InputPump
    from kvmlite.devices.legacy.serial import Serial16550
    from kvmlite.devices.virtio.console import VirtioConsole
    from kvmlite.vmm.machine import Machine
    from kvmlite.vmm.virtio import VirtioWiring

log = logging.getLogger(__name__)


def tolerant(write: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """A console write that survives its reader going away (a closed pipe).

    The guest keeps running; its output is dropped after one log line.
    """
    failed = False

    def tolerant_write(data: bytes) -> None:
        nonlocal failed
        if failed:
            return
        try:
            write(data)
        except OSError as e:
            failed = True
            log.warning("console output stopped: %s; the guest keeps running", e)

    return tolerant_write


class _LockedSink:
    """An input sink (UART) whose calls take the device's lock."""

    def __init__(self, device: Serial16550, lock: Lock) -> None:
        self.device = device
        self.lock = lock

    def enqueue_input(self, data: bytes) -> int:
        with self.lock:
            return self.device.enqueue_input(data)

    def wants_input(self) -> bool:
        with self.lock:
            return self.device.wants_input()


class ConsoleInput:
    """Console input -> the UART's receive FIFO, without losing a byte.

    The backend's fd is watched only while the pump has room; the UART's
    ``on_rx_room`` (the guest read RBR, on a vCPU thread) schedules the next
    offer on the I/O loop. A console that epoll cannot watch (a regular
    file or /dev/null as stdin) gives no input.
    """

    def __init__(self, loop: EventLoop, console: CharBackend) -> None:
        self.loop = loop
        self.console = console
        self.pump: InputPump | None = None
        self.watching = False

    def attach(self, serial: Serial16550, lock: Lock) -> None:
        from kvmlite.backends.char.pump import InputPump

        self.pump = InputPump(self.console, _LockedSink(serial, lock))
        self._update_watch()

    def rx_room(self) -> None:
        """Called by the UART on a vCPU thread when its FIFO drains."""
        if self.pump is not None and self.pump.pending:
            self.loop.call_soon(self._offer)

    def _offer(self) -> None:
        assert self.pump is not None
        self.pump.offer()
        self._update_watch()

    def _on_readable(self) -> None:
        assert self.pump is not None
        self.pump.on_readable()
        self._update_watch()

    def _update_watch(self) -> None:
        assert self.pump is not None
        fd = self.console.fileno()
        if fd is None:
            return
        want = self.pump.wants_read()
        if want and not self.watching:
            try:
                self.loop.add_reader(fd, self._on_readable)
            except PermissionError:  # not pollable: a regular file, /dev/null
                log.debug("console input fd %d cannot be polled; no console input", fd)
                return
            self.watching = True
        elif not want and self.watching:
            self.loop.remove_reader(fd)
            self.watching = False


def wire_virtio_console_input(
    machine: Machine, wiring: VirtioWiring, console: VirtioConsole, backends: list[CharBackend]
) -> None:
    """Each port's backend fd -> handle_input, paused while the guest has no buffers."""
    loop = machine.loop

    def watch(port_id: int) -> None:
        fd = backends[port_id].fileno()
        if fd is None:
            return

        def on_readable() -> None:
            with wiring.lock:
                more = console.handle_input(port_id)
            if not more:
                loop.remove_reader(fd)  # back-pressure until input_ready_handler

        try:
            loop.add_reader(fd, on_readable)
        except (PermissionError, FileExistsError):
            pass  # not pollable, or already watched

    # Called under the device lock when the guest supplies receive buffers.
    console.input_ready_handler = lambda port_id: loop.call_soon(lambda: watch(port_id))
    for port_id in range(len(backends)):
        watch(port_id)
