"""Wiring a device's host-side backends into the vhost-user back-end's loop.

The device models do no I/O of their own (DESIGN.md rule 1): the VMM's loop
watches a backend's fd and calls the device's input entry point. These
helpers do the same for ``VhostUserBackend``, following the contracts in the
device docstrings (kvmlite/devices/virtio/net.py "Receive and
back-pressure", kvmlite/devices/virtio/console.py "Input and back-pressure")
and kvmlite/backends/net/base.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from kvmlite.backends.char.base import CharBackend
from kvmlite.backends.net.base import NetBackend
from kvmlite.devices.virtio.console import VirtioConsole
from kvmlite.devices.virtio.net import VirtioNet
from kvmlite.vhost_user.backend import VhostUserBackend

log = logging.getLogger("kvmlite.vhost_user")


def wire_net(server: VhostUserBackend, device: VirtioNet, backends: Sequence[NetBackend]) -> None:
    """Watch each queue pair's backend fd; receive with back-pressure.

    When pair ``i``'s fd is readable: ``service()`` then ``handle_rx(i)``;
    False (the guest has no receive buffers, or its ring is disabled) turns
    the backend's reading off until the device's ``rx_ready_handler``.
    """
    if len(backends) != device.pairs:
        raise ValueError(f"{device.name}: {device.pairs} queue pairs, {len(backends)} backends")

    def readable(pair: int, backend: NetBackend, fd: int) -> Callable[[], None]:
        def on_readable() -> None:
            try:
                backend.service()
                if backend.closed:
                    log.info("%s: queue pair %d backend closed", device.name, pair)
                    server.remove_watch(fd)
                    return
                if not device.handle_rx(pair):
                    backend.set_reading(False)
            except OSError as e:  # host trouble on one backend must not stop the loop
                log.error(
                    "%s: queue pair %d backend: %s; not watched any more", device.name, pair, e
                )
                server.remove_watch(fd)

        return on_readable

    for pair, backend in enumerate(backends):
        fd = backend.fileno()
        if fd is not None:
            server.add_watch(fd, readable(pair, backend, fd))

    def rx_ready(pair: int) -> None:
        backends[pair].set_reading(True)
        server.wake()  # in case this ran off the loop's thread

    device.rx_ready_handler = rx_ready


def wire_console(server: VhostUserBackend, device: VirtioConsole, backend: CharBackend) -> None:
    """Watch the console backend's fd; input flows to port 0 with back-pressure.

    While ``handle_input`` says the device's buffer is full the fd is not
    watched; the device's ``input_ready_handler`` watches it again.
    """
    fd = backend.fileno()
    if fd is None:
        return

    def on_readable() -> None:
        try:
            more = device.handle_input(0)
        except OSError as e:
            log.error("%s: console backend: %s; input stops", device.name, e)
            more = False
        if not more or backend.eof:
            server.remove_watch(fd)

    def input_ready(port: int) -> None:
        if port == 0 and not backend.eof:
            server.call_soon(lambda: server.add_watch(fd, on_readable))

    server.add_watch(fd, on_readable)
    device.input_ready_handler = input_ready
