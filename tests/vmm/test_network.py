"""virtio-net in the VMM: ``-n`` on the command line, NICs on the bus, a backend that dies.

The Linux driver's view (frames both ways on every transport) is in
test_linux_virtio.py; here the machine is a tiny guest that only spins, and
the judges are the built machine, the exit status and the log.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from kvmlite.config import NetConfig, VmConfig
from kvmlite.config.net import default_mac
from kvmlite.devices.pci.root import PciRoot
from kvmlite.devices.virtio.net import VirtioNet
from kvmlite.errors import ConfigError
from kvmlite.testing import bytearray_memory
from kvmlite.testing.configs import guest_config
from kvmlite.testing.guests import GUEST_DIR, build_guest
from kvmlite.testing.mock_driver import attach_drivers
from kvmlite.vmm.builder import build_vm
from kvmlite.vmm.machine import ExitReason

from .tinyguests import kvmlite_run

needs_kvm = pytest.mark.skipif(
    not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs a usable /dev/kvm"
)


@pytest.fixture(scope="module")
def spin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_guest(GUEST_DIR / "spin.c", tmp_path_factory.mktemp("spin"), kind="pvh")


def test_default_macs_are_distinct_and_a_clash_is_refused(tmp_path: Path) -> None:
    assert default_mac(0) == "52:54:00:12:34:56"
    assert default_mac(1) == "52:54:00:12:34:57"
    nets = ["none", "tap,mac=52:54:00:12:34:57", "tap"]  # "none" is not a NIC
    with pytest.raises(ConfigError, match="same MAC"):
        # the second NIC's default MAC is the one the first was given
        VmConfig(nets=tuple(NetConfig.parse(n) for n in nets))
    VmConfig(nets=tuple(NetConfig.parse(n) for n in ["none", "tap", "tap"]))


@needs_kvm
def test_two_nics_on_the_pci_bus(spin: Path, tmp_path: Path) -> None:
    servers = []
    for i in range(2):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(tmp_path / f"n{i}.sock"))
        s.listen(1)
        servers.append(s)
    nets = [NetConfig.parse(f"socket,connect={tmp_path / f'n{i}.sock'}") for i in range(2)]
    machine = build_vm(guest_config(spin, nets=tuple(nets)))
    try:
        macs = [machine.devices.get(f"net{i}", VirtioNet).mac.hex(":") for i in range(2)]
        assert macs == [default_mac(0), default_mac(1)]
        functions = [
            t for _, t in machine.devices.get("pci", PciRoot).devices() if hasattr(t, "device")
        ]
        assert [t.device.name for t in functions] == ["net0", "net1"]
    finally:
        machine.close()
        for s in servers:
            s.close()


@needs_kvm
def test_a_backend_that_goes_away_leaves_the_guest_running(
    spin: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "peer.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    config = guest_config(spin, nets=(NetConfig.parse(f"socket,connect={path}"),))
    machine = build_vm(config)
    runner = threading.Thread(target=lambda: setattr(machine, "outcome", machine.run()))
    caplog.set_level(logging.ERROR, logger="kvmlite.vmm.network")
    runner.start()
    try:
        # A driver activates the NIC (no receive buffers yet): an idle NIC reads
        # nothing, so only a NIC in use notices its peer leaving.
        device = machine.devices.get("net0", VirtioNet)
        with machine.dev_lock:
            attach_drivers(device, bytearray_memory(1 << 20), features=device.avail_features)
        conn, _ = server.accept()
        conn.close()  # the peer (passt, a switch) is gone for good
        deadline = time.monotonic() + 20
        while "network backend is gone" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "net0: the network backend is gone" in caplog.text
        assert runner.is_alive()  # the guest keeps running ...
        assert machine.devices.get("net0", VirtioNet).link_up is False  # ... with its link down
        machine.request_exit(ExitReason.QUIT, message="test done")
        runner.join(10)
        assert machine.outcome.reason is ExitReason.QUIT
    finally:
        if runner.is_alive():
            machine.request_exit(ExitReason.ERROR)
            runner.join(10)
        machine.close()
        server.close()


@needs_kvm
def test_cli_errors_for_networks(spin: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nobody-listens.sock"
    r = kvmlite_run("-k", spin, "-m", "32", "-n", f"socket,connect={missing}")
    assert r.returncode == 1
    assert "cannot connect" in r.stderr and "start the peer" in r.stderr
    r = kvmlite_run("-k", spin, "-m", "32", "-n", "slirp")
    assert r.returncode == 1
    assert "the kind must be one of user, tap, socket, none" in r.stderr
