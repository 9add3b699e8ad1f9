"""Firecracker JSON <-> kvmlite's config resources (kvmlite/config/firecracker.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmlite.config import MIB, ImageFormat, NetKind, Transport
from kvmlite.config.firecracker import firecracker_defaults, from_firecracker, to_firecracker
from kvmlite.errors import ConfigError

DOC = {
    "boot-source": {"kernel_image_path": "/k/vmlinux", "boot_args": "console=ttyS0 quiet"},
    "drives": [
        {"drive_id": "data", "path_on_host": "/d/data.img", "is_root_device": False,
         "is_read_only": True},
        {"drive_id": "rootfs", "path_on_host": "/d/root.ext4", "is_root_device": True,
         "is_read_only": False, "cache_type": "Writeback", "io_engine": "Sync"},
    ],
    "machine-config": {"vcpu_count": 2, "mem_size_mib": 1024, "smt": False},
    "network-interfaces": [
        {"iface_id": "eth0", "guest_mac": "AA:FC:00:00:00:01", "host_dev_name": "tap0"}
    ],
    "entropy": {"rate_limiter": {"bandwidth": {"size": 1000, "refill_time": 100}}},
}  # fmt: skip


def test_document_maps_onto_resources() -> None:
    config = from_firecracker(DOC)
    assert config.machine.cpus == 2 and config.machine.memory == 1024 * MIB
    assert config.machine.virtio_transport is Transport.MMIO  # Firecracker's default guests
    assert [d.id for d in config.drives] == ["rootfs", "data"]  # the root drive is /dev/vda
    assert config.drives[0].format is ImageFormat.RAW  # never probed
    assert config.drives[1].read_only
    assert config.boot.kernel == Path("/k/vmlinux")
    assert config.boot.cmdline == "console=ttyS0 quiet root=/dev/vda rw"
    (net,) = config.nets
    assert (net.kind, net.ifname, net.mac, net.id) == (
        NetKind.TAP, "tap0", "aa:fc:00:00:00:01", "eth0",
    )  # fmt: skip
    assert config.rng is not None and config.rng.rate_limit == 10000


def test_round_trip() -> None:
    config = from_firecracker(DOC)
    doc = to_firecracker(config)
    assert doc["boot-source"]["boot_args"] == "console=ttyS0 quiet"
    assert doc["drives"][0] == {
        "drive_id": "rootfs", "path_on_host": "/d/root.ext4",
        "is_root_device": True, "is_read_only": False,
    }  # fmt: skip
    assert from_firecracker(doc) == config
    assert from_firecracker(json.loads(json.dumps(doc))) == config


def test_partuuid_and_read_only_root() -> None:
    doc = {"drives": [{"drive_id": "r", "path_on_host": "/r", "is_root_device": True,
                       "is_read_only": True, "partuuid": "0eaa91a0-01"}]}  # fmt: skip
    config = from_firecracker(doc)
    assert config.boot.cmdline == "root=PARTUUID=0eaa91a0-01 ro"
    assert to_firecracker(config)["drives"][0]["partuuid"] == "0eaa91a0-01"


def test_defaults_are_firecrackers() -> None:
    mc = to_firecracker(firecracker_defaults())["machine-config"]
    assert (mc["vcpu_count"], mc["mem_size_mib"]) == (1, 128)


def test_base_keeps_what_firecracker_cannot_say() -> None:
    base = from_firecracker(DOC)
    import dataclasses

    base = dataclasses.replace(
        base, drives=(dataclasses.replace(base.drives[0], direct=True), base.drives[1])
    )
    again = from_firecracker(to_firecracker(base), base)
    assert again.drives[0].direct


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"bogus": 1}, "unknown field 'bogus'"),
        ({"machine-config": {"vcpu_count": 1}}, "missing field 'mem_size_mib'"),
        ({"machine-config": {"vcpu_count": "1", "mem_size_mib": 64}}, "vcpu_count: expected an"),
        ({"machine-config": {"vcpu_count": True, "mem_size_mib": 64}}, "vcpu_count: expected an"),
        ({"machine-config": {"vcpu_count": 33, "mem_size_mib": 64}}, "out of range"),
        ({"machine-config": {"vcpu_count": 1, "mem_size_mib": 64, "smt": True}}, "smt"),
        ({"machine-config": {"vcpu_count": 1, "mem_size_mib": 63}}, "multiple of 2 MiB"),
        ({"boot-source": {"boot_args": "x"}}, "missing field 'kernel_image_path'"),
        ({"boot-source": {"kernel_image_path": 5}}, "kernel_image_path: expected a string"),
        ({"drives": {}}, "drives: expected an array"),
        ({"drives": [{"drive_id": "a b", "path_on_host": "/x", "is_root_device": False}]},
         "drive_id"),
        ({"drives": [{"drive_id": "a", "is_root_device": False}]}, "path_on_host"),
        ({"drives": [{"drive_id": "a", "path_on_host": "/x", "is_root_device": False,
                      "socket": "/s"}]}, "vhost-user"),
        ({"drives": [{"drive_id": "a", "path_on_host": "/x", "is_root_device": False,
                      "cache_type": "Fast"}]}, "cache_type"),
        ({"drives": [{"drive_id": "a", "path_on_host": "/x", "is_root_device": True},
                     {"drive_id": "b", "path_on_host": "/y", "is_root_device": True}]},
         "root block device already exists"),
        ({"network-interfaces": [{"iface_id": "e", "host_dev_name": "tap0", "mtu": 1500}]}, "mtu"),
        ({"network-interfaces": [{"iface_id": "e"}]}, "host_dev_name"),
        ({"network-interfaces": [{"iface_id": "e", "host_dev_name": "t",
                                  "guest_mac": "01:00:00:00:00:00"}]},
         "mac"),
        ({"entropy": {"rate_limiter": {"bandwidth": {"size": 1}}}}, "refill_time"),
        ({"vsock": {"guest_cid": 3, "uds_path": "/v"}}, "vsock: not supported"),
        ([], "expected an object"),
    ],
)  # fmt: skip
def test_bad_documents_name_the_field(doc: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_firecracker(doc)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**65), 2**65) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
KEYS = st.sampled_from(sorted(["boot-source", "drives", "machine-config", "network-interfaces",
                               "entropy", "serial", "logger"]))  # fmt: skip


@given(st.dictionaries(KEYS, JSON, max_size=4))
def test_fuzz_only_config_errors(doc: dict[str, object]) -> None:
    try:
        config = from_firecracker(doc)
    except ConfigError:
        return
    assert from_firecracker(to_firecracker(config), config) == config
