from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmlite.config import (
    DEFAULT_CMDLINE,
    AioEngine,
    BootSource,
    DriveConfig,
    ImageFormat,
    MachineConfig,
    VmConfig,
    parse_size,
)
from kvmlite.config.machine import MAX_VCPUS
from kvmlite.errors import ConfigError
from kvmlite.vmm.hostquirks import resolve


@pytest.mark.parametrize(
    "text,value",
    [
        ("64", 64 << 20),
        ("64M", 64 << 20),
        ("1G", 1 << 30),
        ("512k", 512 << 10),
        ("2GiB", 2 << 30),
        ("1T", 1 << 40),
    ],
)
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "x", "-1", "1.5G", "12Q", "G"])
def test_parse_size_rejects(text):
    with pytest.raises(ConfigError, match="bad size"):
        parse_size(text)


@pytest.mark.parametrize(
    "mem,msg",
    [(8 << 20, "too small"), (2 << 40, "too large"), ((64 << 20) + 4096, "multiple of 2 MiB")],
)
def test_memory_out_of_range(mem, msg):
    with pytest.raises(ConfigError, match=msg):
        MachineConfig(memory=mem)


@pytest.mark.parametrize("cpus", [0, -1, MAX_VCPUS + 1])
def test_cpus_out_of_range(cpus):
    with pytest.raises(ConfigError, match="vCPUs is out of range"):
        MachineConfig(cpus=cpus)


def test_kernel_checks(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        BootSource(tmp_path / "nope").check_host(64 << 20)
    with pytest.raises(ConfigError, match="not a regular file"):
        BootSource(tmp_path).check_host(64 << 20)


def test_initrd_too_large(tmp_path: Path):
    k = tmp_path / "k"
    k.write_bytes(b"x")
    big = tmp_path / "initrd"
    with open(big, "wb") as f:
        f.truncate(64 << 20)
    with pytest.raises(ConfigError, match="does not fit"):
        BootSource(k, big).check_host(64 << 20)


def test_disk_spec():
    d = DriveConfig.parse("/x.img,ro,direct,serial=abc,format=qcow2")
    assert (d.path, d.read_only, d.direct, d.serial, d.format) == (
        Path("/x.img"),
        True,
        True,
        "abc",
        ImageFormat.QCOW2,
    )
    assert DriveConfig.parse("/x,queues=4").queues == 4
    assert DriveConfig.parse("/x").aio is None
    for aio in AioEngine:
        assert DriveConfig.parse(f"/x,aio={aio.value}").aio is aio
    for bad in [
        "/x,aio=",
        "/x,aio=posix",
        "/x,aio",
        "",
        "/x,rw",
        "/x,serial=" + "a" * 21,
        "/x,format=vmdk",
        "/x,queues=0",
        "/x,queues=a",
    ]:
        with pytest.raises(ConfigError):
            DriveConfig.parse(bad)


def test_cmdline_defaults():
    assert VmConfig().full_cmdline() == DEFAULT_CMDLINE
    hvc0 = VmConfig(boot=BootSource(cmdline="console=hvc0 quiet"))
    assert hvc0.full_cmdline("q=1") == "console=hvc0 quiet q=1"
    assert VmConfig(boot=BootSource(cmdline="quiet")).full_cmdline() == DEFAULT_CMDLINE + " quiet"


def test_host_quirks_switch(tmp_path: Path):
    assert not resolve("auto", tmp_path / "absent").enabled
    assert not resolve("off", tmp_path).enabled
    on = resolve("auto", tmp_path)  # tmp_path exists: looks like a PVM host
    assert on.enabled and "noxsave" in on.cmdline and on.advertise_xsaveerptr
    assert resolve("on", tmp_path / "absent").enabled


def test_host_tsc_khz(tmp_path: Path):
    from kvmlite.vmm.hostquirks import host_tsc_khz

    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\ncpu MHz\t\t: 2445.412\n")
    assert host_tsc_khz(f) == 2445412
    f.write_text("processor\t: 0\n")
    assert host_tsc_khz(f) is None
    assert host_tsc_khz(tmp_path / "absent") is None


def full_config(tmp_path: Path) -> VmConfig:
    from kvmlite.config import CharConfig, NetConfig, RngConfig, Transport, VirtioConsoleConfig

    return VmConfig(
        machine=MachineConfig(memory=128 << 20, cpus=3, virtio_transport=Transport.MMIO),
        boot=BootSource(tmp_path / "k", tmp_path / "i", "quiet"),
        console=CharConfig.parse("file:/tmp/c.log,append=on"),
        serial=(CharConfig.parse("pty"),),
        drives=(DriveConfig.parse("/x.img,ro,format=qcow2,aio=native", id="root"),),
        nets=(NetConfig.parse("tap,ifname=t0,queues=2,mac=52:54:00:00:00:01"),),
        rng=RngConfig(1000),
        virtio_console=VirtioConsoleConfig(CharConfig.parse("null"), (("log", CharConfig()),)),
    )


def test_json_round_trip(tmp_path: Path) -> None:
    config = full_config(tmp_path)
    assert VmConfig.from_json(config.to_json()) == config
    assert VmConfig.from_json(VmConfig().to_json()) == VmConfig()


def test_config_is_frozen(tmp_path: Path) -> None:
    import dataclasses

    config = full_config(tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.machine.cpus = 4  # type: ignore[misc]
    assert isinstance(config.drives, tuple)


@pytest.mark.parametrize(
    "text,words",
    [
        ("{", "not JSON"),
        ("[]", "expected an object"),
        ('{"machine": 1}', "expected an object"),
        ("{}", "missing field"),
    ],
)
def test_from_json_rejects_malformed(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        VmConfig.from_json(text)


def test_from_json_rejects_bad_values(tmp_path: Path) -> None:
    import json

    doc = json.loads(full_config(tmp_path).to_json())
    doc["machine"]["cpus"] = 0
    with pytest.raises(ConfigError, match="vCPUs"):
        VmConfig.from_json(json.dumps(doc))
    doc["machine"]["cpus"] = "2"
    with pytest.raises(ConfigError, match="expected int"):
        VmConfig.from_json(json.dumps(doc))
    doc["machine"]["cpus"] = 2
    doc["console"]["kind"] = "telnet"
    with pytest.raises(ConfigError, match="telnet"):
        VmConfig.from_json(json.dumps(doc))


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda kids: (
            st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_from_json_any_document_is_a_config_or_a_config_error(doc: object) -> None:
    import json

    try:
        VmConfig.from_json(json.dumps(doc))
    except ConfigError:
        pass


def test_from_json_refuses_unknown_fields() -> None:
    import json

    doc = json.loads(VmConfig().to_json())
    doc["machine"]["vcpus"] = 2
    with pytest.raises(ConfigError, match=r"unknown field MachineConfig\.vcpus"):
        VmConfig.from_json(json.dumps(doc))


def test_drive_aio_survives_json():
    from kvmlite.state import dumps, loads

    d = DriveConfig.parse("/x.img,aio=io_uring,direct")
    back = loads(DriveConfig, dumps(d))
    assert back == d and back.aio is AioEngine.IO_URING
    assert b"io_uring" in dumps(d)
