"""The REST API driving a tiny guest on /dev/kvm: Firecracker's getting-started
sequence with curl, pause/resume without a gap, and the start-up sequences of
firecracker-go-sdk and Kata Containers' fc driver replayed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.guest import KVM, VmProcess, counter_numbers
from kvmlite.testing.guests import GUEST_DIR, build_guest
from kvmlite.testing.netns import NetNs, netns_scope

pytestmark = pytest.mark.skipif(not KVM, reason="needs a usable /dev/kvm")
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def counter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("counter")
    return build_guest(HERE / "guests" / "counter_dec.c", out, kind="pvh", kit_dir=GUEST_DIR)


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    path = tmp_path / "rootfs.ext4"
    path.write_bytes(bytes(1 << 20))
    return path


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[list[VmProcess]]:
    started: list[VmProcess] = []
    yield started
    for p in started:
        p.stop()


def curl(sock: Path, method: str, path: str, body: object = None) -> tuple[int, object]:
    cmd = ["curl", "-sS", "--unix-socket", str(sock), "-X", method, f"http://localhost{path}",
           "-H", "Accept: application/json", "-w", "\n%{http_code}"]  # fmt: skip
    if body is not None:
        cmd += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    text, _, code = out.rpartition("\n")
    return int(code), json.loads(text) if text else None


def assert_no_gap(numbers: list[int]) -> None:
    assert numbers == list(range(len(numbers))), "the counter skipped or repeated a value"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_getting_started_with_curl(
    counter: Path, disk: Path, tmp_path: Path, vm: list[VmProcess]
) -> None:
    sock = tmp_path / "firecracker.socket"
    p = VmProcess(["firecracker", "--api-sock", str(sock), "--id", "getting-started"], sock)
    vm.append(p)
    p.wait_socket()
    assert curl(sock, "GET", "/")[1]["state"] == "Not started"  # type: ignore[index]
    boot = {"kernel_image_path": str(counter), "boot_args": "console=ttyS0 reboot=k panic=1"}
    assert curl(sock, "PUT", "/boot-source", boot) == (204, None)
    drive = {"drive_id": "rootfs", "path_on_host": str(disk), "is_root_device": True,
             "is_read_only": False}  # fmt: skip
    assert curl(sock, "PUT", "/drives/rootfs", drive) == (204, None)
    machine = {"vcpu_count": 1, "mem_size_mib": 64}
    assert curl(sock, "PUT", "/machine-config", machine) == (204, None)
    assert curl(sock, "PUT", "/actions", {"action_type": "InstanceStart"}) == (204, None)
    status, info = curl(sock, "GET", "/")
    assert status == 200 and info["state"] == "Running"  # type: ignore[index]
    p.wait_lines(3)
    assert curl(sock, "PATCH", "/vm", {"state": "Paused"}) == (204, None)
    assert curl(sock, "GET", "/")[1]["state"] == "Paused"  # type: ignore[index]
    assert curl(sock, "PATCH", "/vm", {"state": "Paused"}) == (204, None)  # idempotent
    assert curl(sock, "PATCH", "/vm", {"state": "Resumed"}) == (204, None)
    assert curl(sock, "GET", "/")[1]["state"] == "Running"  # type: ignore[index]
    # A second InstanceStart and pre-boot changes are refused; the guest keeps counting.
    status, answer = curl(sock, "PUT", "/actions", {"action_type": "InstanceStart"})
    assert status == 400 and "already running" in answer["fault_message"]  # type: ignore[index]
    status, answer = curl(sock, "PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 64})
    assert status == 400 and "already running" in answer["fault_message"]  # type: ignore[index]
    drive["path_on_host"] = str(tmp_path / "other.img")
    status, answer = curl(sock, "PATCH", "/drives/rootfs", {"drive_id": "rootfs",
                          "path_on_host": drive["path_on_host"]})  # fmt: skip
    assert status == 400 and "media-change" in answer["fault_message"]  # type: ignore[index]
    assert curl(sock, "PATCH", "/drives/rootfs", {"drive_id": "rootfs"}) == (204, None)
    full = curl(sock, "GET", "/vm/config")[1]
    assert full["drives"][0]["path_on_host"] == str(disk)  # type: ignore[index]
    seen = len(p.snapshot())
    assert_no_gap(counter_numbers(p.wait_lines(seen + 3)))
    assert p.stop() == 0
    assert not sock.exists()


def test_pause_resume_continues_where_it_stopped(
    counter: Path, tmp_path: Path, vm: list[VmProcess]
) -> None:
    sock = tmp_path / "api.sock"
    p = VmProcess(["run", "-k", str(counter), "-m", "64", "--console", "stdio",
                   "--api-sock", str(sock)], sock)  # fmt: skip
    vm.append(p)
    p.wait_socket()
    assert p.api("GET", "/")[1]["state"] == "Running"
    for _ in range(3):
        t0 = time.monotonic()
        p.wait_lines(len(p.snapshot()) + 3)
        three_lines = time.monotonic() - t0  # how long the running guest takes for 3 lines
        assert p.api("PATCH", "/vm", {"state": "Paused"}) == (204, None)
        at_pause, t0, trips = len(p.snapshot()), time.monotonic(), 0
        # Poll while paused for as long as 6 lines would take running: nothing comes
        # but perhaps the one line in flight.
        while trips < 20 or time.monotonic() - t0 < 2 * three_lines:
            assert p.api("GET", "/")[1]["state"] == "Paused"
            trips += 1
        assert len(p.snapshot()) - at_pause <= 1
        assert p.api("PATCH", "/vm", {"state": "Resumed"}) == (204, None)
    lines = p.wait_lines(len(p.snapshot()) + 3)
    assert_no_gap(counter_numbers(lines))
    assert p.stop() == 0
    assert not sock.exists()


netns = pytest.fixture(netns_scope, name="netns")


def test_firecracker_go_sdk_start_up_sequence(
    counter: Path, disk: Path, tmp_path: Path, vm: list[VmProcess], netns: NetNs
) -> None:
    """firecracker-go-sdk's defaultFcInitHandlerList (handlers.go): StartVMM (spawn with
    --api-sock and --id, then poll GET /machine-config until it answers),
    BootstrapLogging (PUT /logger, PUT /metrics), CreateMachine (PUT /machine-config),
    CreateBootSource, AttachDrives (PUT /drives/{id} each), CreateNetworkInterfaces
    (PUT /network-interfaces/{id}, a tap the caller made), then InstanceStart;
    Shutdown sends SendCtrlAltDel. Runs in a network namespace for its tap."""
    netns.add_tap("fc-tap0")
    netns.ip("link", "set", "fc-tap0", "up")  # NO-CARRIER until a VMM opens it
    sock = tmp_path / "sdk.sock"
    p = VmProcess(["firecracker", "--api-sock", str(sock), "--id", "sdk-vm"], sock,
                  prefix=netns.argv([]))  # fmt: skip
    vm.append(p)
    p.wait_socket()
    assert p.api("GET", "/machine-config")[0] == 200
    log, metrics = tmp_path / "log.fifo", tmp_path / "metrics.fifo"
    os.mkfifo(log)
    os.mkfifo(metrics)
    readers = [os.open(f, os.O_RDONLY | os.O_NONBLOCK) for f in (log, metrics)]
    try:
        body = {"log_path": str(log), "level": "Debug", "show_level": True,
                "show_log_origin": False}  # fmt: skip
        assert p.api("PUT", "/logger", body) == (204, None)
        assert p.api("PUT", "/metrics", {"metrics_path": str(metrics)}) == (204, None)
        body = {"vcpu_count": 1, "mem_size_mib": 64, "smt": False, "track_dirty_pages": False}
        assert p.api("PUT", "/machine-config", body) == (204, None)
        boot = {"kernel_image_path": str(counter), "boot_args": "console=ttyS0 reboot=k panic=1"}
        assert p.api("PUT", "/boot-source", boot) == (204, None)
        # go-sdk's DrivesBuilder names the root drive root_drive, the others 0, 1, ...;
        # NICs are 1, 2, ...
        drive = {"drive_id": "root_drive", "path_on_host": str(disk), "is_root_device": True,
                 "is_read_only": False}  # fmt: skip
        assert p.api("PUT", "/drives/root_drive", drive) == (204, None)
        nic = {"iface_id": "1", "host_dev_name": "fc-tap0", "guest_mac": "AA:FC:00:00:00:01"}
        assert p.api("PUT", "/network-interfaces/1", nic) == (204, None)
        assert "NO-CARRIER" in netns.ip("link", "show", "fc-tap0")
        assert p.api("PUT", "/actions", {"action_type": "InstanceStart"}) == (204, None)
        assert "NO-CARRIER" not in netns.ip("link", "show", "fc-tap0")  # kvmlite opened it
        assert p.api("PATCH", "/network-interfaces/1", {"iface_id": "1"}) == (204, None)
        assert p.api("GET", "/")[1] == {"id": "sdk-vm", "state": "Running",
                                        "vmm_version": "1.17.0-dev",
                                        "app_name": p.api("GET", "/")[1]["app_name"]}  # fmt: skip
        assert p.api("PUT", "/actions", {"action_type": "FlushMetrics"}) == (204, None)
        assert b"utc_timestamp_ms" in os.read(readers[1], 65536)
        p.wait_lines(2)
        assert p.api("PUT", "/actions", {"action_type": "SendCtrlAltDel"}) == (204, None)
        assert p.stop() == 0
    finally:
        for fd in readers:
            os.close(fd)


def test_kata_fc_driver_start_up_sequence(
    counter: Path, disk: Path, tmp_path: Path, vm: list[VmProcess]
) -> None:
    """Kata Containers' fc driver (virtcontainers/fc.go): it runs `firecracker --version`,
    writes a config file (boot-source, a read-only rootfs drive plus a pool of empty
    placeholder drives drive_0.., machine-config with smt false, logger and metrics
    on fifos it reads, vsock), starts `firecracker --api-sock S --config-file F`,
    polls GET / until the state is Running, and hot-plugs by PATCHing a placeholder
    drive's path_on_host. kvmlite has no vsock yet: that config is refused and
    named; without it the rest works up to the hot-plug, which is refused (no
    media change yet)."""
    out = subprocess.run(
        [sys.executable, "-m", "kvmlite.cli.firecracker", "--version"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.split(" ")[1].strip().lstrip("v").startswith("1.")
    log, metrics = tmp_path / "fc-log.fifo", tmp_path / "fc-metrics.fifo"
    os.mkfifo(log)
    os.mkfifo(metrics)
    readers = [os.open(f, os.O_RDONLY | os.O_NONBLOCK) for f in (log, metrics)]
    placeholders = []
    for i in range(3):
        (tmp_path / f"drive_{i}").touch()
        placeholders.append({"drive_id": f"drive_{i}", "path_on_host": str(tmp_path / f"drive_{i}"),
                             "is_root_device": False, "is_read_only": False})  # fmt: skip
    config = {
        "boot-source": {"kernel_image_path": str(counter), "boot_args": "console=ttyS0 pci=off"},
        "drives": [{"drive_id": "rootfs", "path_on_host": str(disk), "is_root_device": False,
                    "is_read_only": True}, *placeholders],
        "machine-config": {"smt": False, "mem_size_mib": 64, "vcpu_count": 1},
        "logger": {"level": "Error", "log_path": str(log)},
        "metrics": {"metrics_path": str(metrics)},
        "vsock": {"guest_cid": 3, "uds_path": str(tmp_path / "kata.hvsock"), "vsock_id": "root"},
    }  # fmt: skip
    cfg = tmp_path / "fcConfig.json"
    cfg.write_text(json.dumps(config))
    sock = tmp_path / "kata.sock"
    try:
        p = VmProcess(["firecracker", "--api-sock", str(sock), "--config-file", str(cfg)], sock)
        vm.append(p)
        assert p.proc.wait(60) == 1
        assert "vsock: not supported" in p.proc.stderr.read()  # type: ignore[union-attr]
        assert not sock.exists()
        del config["vsock"]
        cfg.write_text(json.dumps(config))
        p = VmProcess(["firecracker", "--api-sock", str(sock), "--config-file", str(cfg)], sock)
        vm.append(p)
        p.wait_socket()
        assert p.api("GET", "/")[1]["state"] == "Running"
        status, answer = p.api("PATCH", "/drives/drive_0", {"drive_id": "drive_0",
                               "path_on_host": str(disk)})  # fmt: skip
        assert status == 400 and "media-change" in answer["fault_message"]
        p.wait_lines(2)
        assert p.stop() == 0
    finally:
        for fd in readers:
            os.close(fd)


def test_no_api_config_file(counter: Path, tmp_path: Path, vm: list[VmProcess]) -> None:
    """flintlock's way: `firecracker --no-api --config-file F`."""
    cfg = tmp_path / "vm.json"
    cfg.write_text(json.dumps({
        "boot-source": {"kernel_image_path": str(counter)},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
    }))  # fmt: skip
    p = VmProcess(["firecracker", "--no-api", "--config-file", str(cfg)], None)
    vm.append(p)
    assert_no_gap(counter_numbers(p.wait_lines(3)))
    assert p.stop() == 0


def test_run_with_a_config_file(counter: Path, tmp_path: Path, vm: list[VmProcess]) -> None:
    """`kvmlite run --config vm.json` reads the same Firecracker JSON; GET /vm/config
    gives it back."""
    cfg = tmp_path / "vm.json"
    doc = {
        "boot-source": {"kernel_image_path": str(counter), "boot_args": "console=ttyS0"},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
    }
    cfg.write_text(json.dumps(doc))
    sock = tmp_path / "run.sock"
    p = VmProcess(["run", "--config", str(cfg), "--console", "stdio", "--api-sock", str(sock)],
                  sock)  # fmt: skip
    vm.append(p)
    p.wait_socket()
    full = p.api("GET", "/vm/config")[1]
    assert full["boot-source"] == doc["boot-source"]
    assert full["machine-config"]["mem_size_mib"] == 64
    assert_no_gap(counter_numbers(p.wait_lines(3)))
    assert p.stop() == 0
