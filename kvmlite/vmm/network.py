"""Wiring virtio-net NICs into the machine: backends, the I/O loop, back-pressure.

Theory of operation
-------------------
Each ``-n`` spec opens its backends (``NetSpec.open``: one per queue pair)
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

import logging
from typing import Any

from kvmlite.backends.net.base import NetBackend

log = logging.getLogger(__name__)

#: QEMU's default MAC prefix (52:54:00: locally administered); NIC n gets ...:56+n.
DEFAULT_MAC = 0x525400123456


def default_mac(index: int) -> str:
    """The MAC address of NIC ``index`` when the user gave none."""
    value = DEFAULT_MAC + index
    return ":".join(f"{b:02x}" for b in value.to_bytes(6, "big"))


def add_networks(machine: Any, config: Any, wiring: Any, add: Any) -> None:
    """Add one virtio-net per ``config.nets`` entry (kind "none" adds nothing)."""
    from kvmlite.devices.virtio.net import VirtioNet

    for n, spec in enumerate(s for s in config.nets if s.kind != "none"):
        name = f"net{n}"
        backends = spec.open(name=name)
        for backend in backends:
            machine.closers.append(backend.close)
        device = VirtioNet(backends, mac=spec.mac or default_mac(n), name=name)
        device.rx_ready_handler = lambda pair, bs=backends: bs[pair].set_reading(True)
        for pair, backend in enumerate(backends):
            fd = backend.fileno()
            assert fd is not None, f"{name}: a backend without an fd cannot be watched"
            machine.loop.add_reader(fd, _reader(machine, wiring, device, pair, backend))
            machine.closers.append(lambda fd=fd: machine.loop.remove_reader(fd))
        machine.devices[name] = add(device)
        if spec.kind == "user":
            # Where the user looks for it: the guest's side of the forwards.
            for rule in spec.hostfwd:
                log.info("%s: host port forward %s", name, rule)


def _reader(machine: Any, wiring: Any, device: Any, pair: int, backend: NetBackend) -> Any:
    def on_readable() -> None:
        backend.service()
        if not backend.closed:
            with wiring.lock:
                if not device.handle_rx(pair):
                    backend.set_reading(False)
        if backend.closed:  # noticed by service() or by reading the EOF
            machine.loop.remove_reader(backend.fileno())
            log.error(
                "%s: the network backend is gone (%s); the guest stays up without it",
                device.name,
                getattr(backend, "exit_reason", None) or "peer closed the connection",
            )
            with wiring.lock:
                device.set_link(False)

    return on_readable
