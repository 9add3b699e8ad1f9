"""Wiring virtio-net NICs into the machine: backends, the I/O loop, back-pressure.

Theory of operation
-------------------
Each ``-n`` spec opens its backends (``open_net``: one per queue pair)
and a ``VirtioNet`` over them, on the transport the user chose. Every
backend's ``fileno()`` stays the same fd for the backend's life (an internal
epoll fd for sockets and taps), so the I/O loop watches it once:

* readable -> ``backend.service()`` (accept a peer, flush output, notice
  hang-ups), then ``device.handle_rx(pair)`` under the device lock. When the
  guest has no receive buffers ``handle_rx`` returns False and the backend
  stops reading (``set_reading(False)``), so frames wait in the tap's or the
  socket's kernel queue, not in our memory (back-pressure).
* the device calls ``rx_ready_handler(pair)`` when the guest added buffers
  again; it turns reading back on, which makes the fd readable again.

Both happen under ``machine.dev_lock``, so "stop reading" can never
overtake "buffers are back". A backend whose peer is gone for good (passt
exited, the socket's server went away) is logged once and no longer
watched; the guest keeps running with its link down.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from kvmlite.backends.net.base import NetBackend
from kvmlite.config.net import NetKind, default_mac

if TYPE_CHECKING:
    from kvmlite.devices.virtio.net import VirtioNet
    from kvmlite.vmm.machine import Machine
    from kvmlite.vmm.virtio import VirtioWiring

__all__ = ["add_networks", "default_mac"]

log = logging.getLogger(__name__)


def add_networks(machine: Machine, wiring: VirtioWiring) -> None:
    """Add one virtio-net per ``config.nets`` entry (kind "none" adds nothing)."""
    from kvmlite.backends.net.open import open_net  # noqa: PLC0415
    from kvmlite.devices.virtio.net import VirtioNet  # noqa: PLC0415

    for n, spec in enumerate(machine.config.active_nets):
        name = spec.id or f"net{n}"
        backends = open_net(spec, name=name)
        for backend in backends:
            machine.closers.append(backend.close)
        device = VirtioNet(backends, mac=spec.mac or default_mac(n), name=name)
        device.rx_ready_handler = functools.partial(_resume_reading, backends)
        for pair, backend in enumerate(backends):
            fd = backend.fileno()
            assert fd is not None, f"{name}: a backend without an fd cannot be watched"
            machine.loop.add_reader(fd, _reader(machine, wiring, device, pair, backend))
            machine.closers.append(functools.partial(machine.loop.remove_reader, fd))
        wiring.add(name, device)
        if spec.kind is NetKind.USER:
            # Where the user looks for it: the guest's side of the forwards.
            for rule in spec.hostfwd:
                log.info("%s: host port forward %s", name, rule)


def _resume_reading(backends: list[NetBackend], pair: int) -> None:
    """The guest posted receive buffers on ``pair`` again (called under the device lock)."""
    backends[pair].set_reading(True)


def _reader(
    machine: Machine, wiring: VirtioWiring, device: VirtioNet, pair: int, backend: NetBackend
) -> Callable[[], None]:
    fd = backend.fileno()
    assert fd is not None

    def on_readable() -> None:
        backend.service()
        if not backend.closed:
            with wiring.lock:
                if not device.handle_rx(pair):
                    backend.set_reading(False)
        if backend.closed:  # noticed by service() or by reading the EOF
            machine.loop.remove_reader(fd)
            log.error(
                "%s: the network backend is gone (%s); the guest stays up without it",
                device.name,
                getattr(backend, "exit_reason", None) or "peer closed the connection",
            )
            with wiring.lock:
                device.set_link(False)

    return on_readable
