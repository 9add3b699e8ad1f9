"""A running VM's management endpoints: its runtime directory and QMP monitors.

``Management(vmm, qmp=[...])`` is what ``kvmlite run`` wraps around a VM:
it makes the runtime directory (kvmlite/api/rundir.py), binds the QMP
monitors (every ``--qmp`` address, and ``<rundir>/qmp.sock`` when none is
given, so that ``kvmlite ps`` and ``kvmlite pause ID`` find every VM),
records the sockets (``extra_sockets``: the REST API's ``api`` socket) and
the state (from the VMM's STOP/RESUME/SHUTDOWN events) in vm.json, and
removes it all at the end. Binding happens in ``open()``, before the guest
starts, so a bad address is an error with nothing started; ``serve()``
starts answering once the VM runs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from kvmlite.api.address import SocketAddress
from kvmlite.api.qmp_commands import QMP_STATUS
from kvmlite.api.qmp_server import QmpServer
from kvmlite.api.rundir import RunDir

if TYPE_CHECKING:
    from kvmlite.vmm.vmm import VmEvent, Vmm

log = logging.getLogger(__name__)

_STATE_AFTER = {"STOP": "paused", "RESUME": "running", "SHUTDOWN": "shutdown"}


class Management:
    def __init__(
        self,
        vmm: Vmm,
        qmp: list[SocketAddress] | None = None,
        *,
        extra_sockets: dict[str, Path] | None = None,
        base: Path | None = None,
    ) -> None:
        self.vmm = vmm
        self._qmp = list(qmp or [])
        self._extra = dict(extra_sockets or {})
        self._base = base
        self.rundir: RunDir | None = None
        self.servers: list[QmpServer] = []

    def open(self) -> None:
        try:
            self.rundir = RunDir.create(self.vmm.id, self._base)
            addresses = self._qmp or [SocketAddress(path=self.rundir.qmp_socket)]
            for address in addresses:
                self.servers.append(QmpServer(self.vmm, address))
            sockets = {"qmp": str(self.servers[0].address)}
            sockets.update({name: str(path) for name, path in self._extra.items()})
            self.rundir.write(sockets=sockets)
        except BaseException:
            self.close()
            raise

    def serve(self) -> None:
        """Start the monitors and record the state (call once the VM has started)."""
        self.vmm.subscribe(self._on_event)
        if self.rundir is not None:
            self.rundir.write(state=QMP_STATUS[self.vmm.state])
        for server in self.servers:
            server.start()

    def _on_event(self, event: VmEvent) -> None:
        state = _STATE_AFTER.get(event.name)
        if state is not None and self.rundir is not None:
            try:
                self.rundir.write(state=state)
            except OSError as e:
                log.warning("cannot update %s: %s", self.rundir.path, e)

    def close(self) -> None:
        self.vmm.unsubscribe(self._on_event)
        for server in self.servers:
            server.close()
        self.servers.clear()
        if self.rundir is not None:
            self.rundir.remove()
            self.rundir = None

    def __enter__(self) -> Management:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
