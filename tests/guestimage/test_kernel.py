"""Kernel recipe: config fragment checking, patches, cache keying, errors."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from kvmlite.errors import ImageError
from kvmlite.guestimage import kernel
from kvmlite.guestimage.kernel import (
    CONFIG_FRAGMENT,
    PATCH_DIR,
    SOURCE_TARBALL,
    KernelImages,
    build_kernel,
    missing_options,
    parse_config,
)


def test_parse_config() -> None:
    text = '# comment\n\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="x y"\nCONFIG_N=-1\n'
    assert parse_config(text) == {"CONFIG_A": "y", "CONFIG_B": None, "CONFIG_C": '"x y"',
                                  "CONFIG_N": "-1"}  # fmt: skip


@pytest.mark.parametrize("line", ["CONFIG_A", "A=y", "CONFIG_A y", "garbage"])
def test_parse_config_rejects_non_assignments(line: str) -> None:
    with pytest.raises(ImageError, match="line 2"):
        parse_config(f"CONFIG_OK=y\n{line}\n")


def test_missing_options_names_each_dropped_option() -> None:
    fragment = "CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\n# CONFIG_D is not set\nCONFIG_E=8\n"
    config = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_E=64\n"
    assert missing_options(fragment, config) == [
        "CONFIG_B=y (got: not set)",
        "# CONFIG_C is not set (got: CONFIG_C=y)",
        "CONFIG_E=8 (got: 64)",
    ]
    assert missing_options(fragment, fragment) == []


def test_fragment_asks_for_what_the_default_guest_needs() -> None:
    want = parse_config(CONFIG_FRAGMENT.read_text())
    for sym in (
        "64BIT SMP PVH ACPI PCI PCI_MSI EXT4_FS BLOCK VIRTIO_PCI VIRTIO_MMIO "
        "VIRTIO_MMIO_CMDLINE_DEVICES VIRTIO_BLK VIRTIO_NET VIRTIO_CONSOLE HW_RANDOM_VIRTIO "
        "DEVTMPFS DEVTMPFS_MOUNT BLK_DEV_INITRD SERIAL_8250 SERIAL_8250_CONSOLE KERNEL_LZ4 "
        "CRYPTO_MANAGER_DISABLE_TESTS NET INET UNIX PACKET TTY UNIX98_PTYS POSIX_TIMERS "
        "MULTIUSER FUTEX EPOLL SHMEM TMPFS BINFMT_ELF BINFMT_SCRIPT PRINTK EARLY_PRINTK "
        "PROC_FS SYSFS RTC_DRV_CMOS"
    ).split():
        assert want.get(f"CONFIG_{sym}") == "y", sym
    for (
        sym
    ) in "MODULES RANDOMIZE_BASE VIRTIO_PCI_LEGACY CPU_MITIGATIONS IPV6 VT LEGACY_PTYS".split():
        assert f"CONFIG_{sym}" in want and want[f"CONFIG_{sym}"] is None, sym
    assert want["CONFIG_PANIC_TIMEOUT"] == "-1"
    assert not [k for k, v in want.items() if k.startswith("CONFIG_RD_") and v is not None]


def _patches() -> list[Path]:
    return sorted(PATCH_DIR.glob("*.patch"))


def test_patches_have_an_explaining_header_and_are_small() -> None:
    patches = _patches()
    assert len(patches) >= 4
    for p in patches:
        text = p.read_text()
        header = text.split("\n--- a/", 1)[0]
        assert len(header.splitlines()) >= 3, f"{p.name}: explain why in a header"
        added = [ln for ln in text.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
        assert 0 < len(added) <= 40, f"{p.name}: keep kernel patches tiny"


def test_quirk_patches_only_act_under_their_boot_option() -> None:
    # Harmless on a real KVM host: every behaviour change sits behind a flag.
    for p in _patches():
        text = p.read_text()
        if "pvm_quirks.h" in text and "early_param" not in text:
            assert re.search(r"^\+.*\bif \(.*pvm_quirks", text, re.M), p.name


@pytest.mark.slow
def test_patches_apply_to_the_pristine_debian_source(tmp_path: Path) -> None:
    if not SOURCE_TARBALL.is_file():
        pytest.fail(f"{SOURCE_TARBALL} missing: apt-get install linux-source-6.1")
    touched = sorted(
        {m for p in _patches() for m in re.findall(r"^--- a/(\S+)", p.read_text(), re.M)}
    )
    top = "linux-source-6.1"
    listing = subprocess.run(["tar", "-tJf", str(SOURCE_TARBALL), f"{top}/Makefile"],
                             capture_output=True, check=True)  # fmt: skip
    assert listing.stdout.strip() == f"{top}/Makefile".encode()
    members = [f"{top}/{t}" for t in touched if not t.endswith("pvm_quirks.h")]
    subprocess.run(["tar", "-xJf", str(SOURCE_TARBALL), "-C", str(tmp_path), *members],
                   check=True)  # fmt: skip
    for p in _patches():
        subprocess.run(["patch", "-p1", "-N", "--batch", "-i", str(p)], cwd=tmp_path / top,
                       check=True, capture_output=True)  # fmt: skip
    assert (tmp_path / top / "arch/x86/include/asm/pvm_quirks.h").is_file()


def test_missing_source_package_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="apt-get install linux-source-6.1"):
        build_kernel(tmp_path, progress=False, tarball=tmp_path / "linux-source-6.1.tar.xz")


def test_a_finished_build_is_returned_without_running_make(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tarball = tmp_path / "linux-source-6.1.tar.xz"
    tarball.write_bytes(b"not really a tarball")
    key = kernel._cache_key(tarball, CONFIG_FRAGMENT.read_bytes(), _patches())
    out = tmp_path / "cache" / "kernel" / key
    out.mkdir(parents=True)
    for name, data in (("vmlinux", "elf"), ("bzImage", "bz"), ("version", "6.1.999\n")):
        (out / name).write_text(data)

    def no_make(*args: object, **kwargs: object) -> None:
        raise AssertionError("make must not run for a cached kernel")

    monkeypatch.setattr(kernel._Builder, "run", no_make)
    got = build_kernel(tmp_path / "cache", progress=False, tarball=tarball)
    assert got == KernelImages(out / "vmlinux", out / "bzImage", "6.1.999")
    # Any change to an input makes a new key.
    other = kernel._cache_key(tarball, CONFIG_FRAGMENT.read_bytes() + b"\n", _patches())
    assert other != key
    tarball.write_bytes(b"a different size")
    assert kernel._cache_key(tarball, CONFIG_FRAGMENT.read_bytes(), _patches()) != key


def _write_patch(path: Path, old: str, new: str) -> Path:
    path.write_text(f"why: a header\n\n--- a/f.c\n+++ b/f.c\n@@ -1 +1 @@\n-{old}\n+{new}\n")
    return path


def test_changing_the_patch_set_reverts_the_old_one(tmp_path: Path) -> None:
    b = kernel._Builder(tmp_path, progress=False)
    b.src.mkdir()
    (b.src / "f.c").write_text("int x;\n")
    one = _write_patch(tmp_path / "0001-a.patch", "int x;", "int y;")
    b.sync_patches([one])
    assert (b.src / "f.c").read_text() == "int y;\n"
    b.sync_patches([one])  # same set: nothing to do (a second apply would fail)
    two = _write_patch(tmp_path / "0001-b.patch", "int x;", "int z;")
    b.sync_patches([two])
    assert (b.src / "f.c").read_text() == "int z;\n"
    b.sync_patches([])
    assert (b.src / "f.c").read_text() == "int x;\n"
    bad = _write_patch(tmp_path / "0002-bad.patch", "no such line", "x")
    with pytest.raises(ImageError, match="0002-bad.patch"):
        b.sync_patches([one, bad])
    # The good patch went in and is recorded; the bad one left nothing behind.
    assert (b.src / "f.c").read_text() == "int y;\n"
    assert not list(b.src.glob("*.rej")) and not list(b.src.glob("*.orig"))
    b.sync_patches([])
    assert (b.src / "f.c").read_text() == "int x;\n"
