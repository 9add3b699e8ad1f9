"""RestApi's handlers on a Vmm that has not started (no /dev/kvm needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.spec import validate
from kvmlite.api.rest import RestApi
from kvmlite.config import MIB
from kvmlite.config.firecracker import firecracker_defaults
from kvmlite.vmm.vmm import Vmm


def call(api: RestApi, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    return api.handle(method, path, raw)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"\x7fELF" + bytes(60))
    disk = tmp_path / "rootfs.ext4"
    disk.write_bytes(bytes(1 << 20))
    return {"kernel": str(kernel), "disk": str(disk)}


def test_get_endpoints_match_the_definition(api: RestApi) -> None:
    status, info = call(api, "GET", "/")
    assert status == 200 and info["state"] == "Not started" and info["id"] == "test-vm"
    validate("InstanceInfo", info)
    status, version = call(api, "GET", "/version")
    assert status == 200
    validate("FirecrackerVersion", version)
    status, mc = call(api, "GET", "/machine-config")
    assert status == 200 and (mc["vcpu_count"], mc["mem_size_mib"]) == (1, 128)
    validate("MachineConfiguration", mc)
    status, full = call(api, "GET", "/vm/config")
    assert status == 200
    validate("FullVmConfiguration", full)


def test_pre_boot_configuration(api: RestApi, vmm: Vmm, files: dict[str, str]) -> None:
    assert call(api, "PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 256}) == (
        204,
        None,
    )
    assert call(api, "PATCH", "/machine-config", {"vcpu_count": 1}) == (204, None)
    body = {"kernel_image_path": files["kernel"], "boot_args": "console=ttyS0"}
    assert call(api, "PUT", "/boot-source", body) == (204, None)
    drive = {"drive_id": "rootfs", "path_on_host": files["disk"], "is_root_device": True,
             "is_read_only": False}  # fmt: skip
    assert call(api, "PUT", "/drives/rootfs", drive) == (204, None)
    net = {"iface_id": "eth0", "host_dev_name": "tap7", "guest_mac": "06:00:AC:10:00:02"}
    assert call(api, "PUT", "/network-interfaces/eth0", net) == (204, None)
    assert call(api, "PUT", "/entropy", {}) == (204, None)
    assert call(api, "PUT", "/serial", {"serial_out_path": "/tmp/x.log"}) == (204, None)
    config = vmm.config
    assert (config.machine.cpus, config.machine.memory) == (1, 256 * MIB)
    assert config.boot.cmdline == "console=ttyS0 root=/dev/vda rw"
    assert config.drives[0].id == "rootfs" and config.nets[0].ifname == "tap7"
    assert config.rng is not None and str(config.console) == "file:/tmp/x.log"
    status, full = call(api, "GET", "/vm/config")
    validate("FullVmConfiguration", full)
    assert full["drives"][0]["is_root_device"] is True
    assert full["boot-source"]["boot_args"] == "console=ttyS0"
    # PUT again replaces the drive in place
    drive["is_read_only"] = True
    assert call(api, "PUT", "/drives/rootfs", drive) == (204, None)
    assert len(vmm.config.drives) == 1 and vmm.config.drives[0].read_only


@pytest.mark.parametrize(
    ("method", "path", "body", "message"),
    [
        ("GET", "/nope", None, "Invalid request method and/or path: GET /nope."),
        ("DELETE", "/", None, "Invalid request method"),
        ("GET", "/boot-source", None, "Invalid request method"),
        ("PUT", "/machine-config", None, "Empty PUT request."),
        ("PUT", "/machine-config", b"{nope", "not valid JSON"),
        ("PUT", "/machine-config", b"[1]", "expected an object"),
        ("PUT", "/machine-config", b"[" * 100000, "not valid JSON"),
        ("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 64, "x": 1},
         "unknown field 'x'"),
        ("PUT", "/machine-config", {"vcpu_count": 1.5, "mem_size_mib": 64}, "expected an integer"),
        ("PATCH", "/machine-config", {"vcpu_count": 0}, "out of range"),
        ("PUT", "/boot-source", {"kernel_image_path": "/does/not/exist"}, "does not exist"),
        ("PUT", "/drives/a", {"drive_id": "b", "is_root_device": False}, "does not match"),
        ("PUT", "/drives/", {"drive_id": "", "is_root_device": False}, "drive_id"),
        ("PUT", "/drives/a", {"drive_id": "a", "is_root_device": False, "path_on_host": "/nope"},
         "does not exist"),
        ("PATCH", "/drives/a", {"drive_id": "a"}, "not supported before starting"),
        ("PATCH", "/network-interfaces/e", {"iface_id": "e"}, "not supported before starting"),
        ("PATCH", "/vm", {"state": "Paused"}, "has not been started"),
        ("PATCH", "/vm", {"state": "Frozen"}, "not one of Paused, Resumed"),
        ("PUT", "/actions", {"action_type": "InstanceStart"}, "without kernel configuration"),
        ("PUT", "/actions", {"action_type": "Reboot"}, "not one of"),
        ("PUT", "/actions", {}, "missing field 'action_type'"),
        ("PUT", "/actions", {"action_type": "FlushMetrics"}, "metrics system is not initialized"),
        ("PUT", "/actions", {"action_type": "SendCtrlAltDel"}, "has not been started"),
        ("PUT", "/logger", {"level": "Loud"}, "level"),
        ("PUT", "/metrics", {}, "missing field 'metrics_path'"),
    ],
)  # fmt: skip
def test_bad_requests_are_400_and_change_nothing(
    api: RestApi, vmm: Vmm, method: str, path: str, body: Any, message: str
) -> None:
    before = vmm.config
    status, answer = call(api, method, path, body)
    assert status == 400
    validate("Error", answer)
    assert message in answer["fault_message"]
    assert vmm.config == before


def test_logger_and_metrics(api: RestApi, tmp_path: Path) -> None:
    log, metrics = tmp_path / "fc.log", tmp_path / "fc.metrics"
    body = {"log_path": str(log), "level": "debug", "show_level": True}
    assert call(api, "PUT", "/logger", body) == (204, None)
    assert call(api, "PUT", "/metrics", {"metrics_path": str(metrics)}) == (204, None)
    status, answer = call(api, "PUT", "/metrics", {"metrics_path": str(metrics)})
    assert status == 400 and "already initialized" in answer["fault_message"]
    assert call(api, "PUT", "/actions", {"action_type": "FlushMetrics"}) == (204, None)
    line = json.loads(metrics.read_text().splitlines()[-1])
    assert line["vmm"]["state"] == "Not started" and "utc_timestamp_ms" in line
    api.settings.close()


METHODS = st.sampled_from(["GET", "PUT", "PATCH", "DELETE", "POST"])
PATHS = st.sampled_from(
    ["/", "/version", "/vm/config", "/machine-config", "/boot-source", "/drives/a",
     "/drives/", "/network-interfaces/eth0", "/entropy", "/serial", "/logger", "/metrics",
     "/actions", "/vm", "/snapshot/create", "/x/../vm"]
)  # fmt: skip
BODIES = st.one_of(
    st.binary(max_size=64),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["vcpu_count", "mem_size_mib", "drive_id", "state",
                                           "action_type", "iface_id", "x"]), inner, max_size=4),
        max_leaves=8,
    ).map(lambda v: json.dumps(v).encode()),
)  # fmt: skip


@settings(max_examples=150)
@given(method=METHODS, path=PATHS, body=BODIES)
def test_fuzz_never_a_server_error(method: str, path: str, body: bytes) -> None:
    vmm = Vmm(firecracker_defaults(), id="fuzz")
    try:
        api = RestApi(vmm)
        before = vmm.config
        status, answer = api.handle(method, path, body)
        assert status in (200, 204, 400)
        if status == 400:
            validate("Error", answer)
            assert vmm.config == before
    finally:
        vmm.close()
