"""default_guest()/check_guest() plumbing, host quirks and the __main__ entry point."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

import kvmlite.guestimage as gi
from kvmlite.errors import ImageError
from kvmlite.guestimage import __main__ as gi_main
from kvmlite.guestimage import hostquirks
from kvmlite.guestimage.cache import content_key, default_cache_dir
from kvmlite.guestimage.kernel import KernelImages
from kvmlite.guestimage.programs import GUEST_SOURCES, compile_static


def test_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "kvmlite"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # invalid per the spec: ignored
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "kvmlite"


def test_content_key_is_length_prefixed() -> None:
    assert content_key([b"ab", b"c"]) != content_key([b"a", b"bc"])
    assert content_key([b"x"]) == content_key([b"x"])


def test_host_quirk_options_are_explained() -> None:
    opts = [o for o, _ in hostquirks.PVM_HOST_OPTIONS]
    assert hostquirks.PVM_HOST_CMDLINE == " ".join(opts)
    for needed in ("noxsave", "nofsgsbase", "nopcid", "noinvpcid", "pvm_quirks"):
        assert needed in opts
    clear = next(o for o in opts if o.startswith("clearcpuid="))
    assert {"smap", "rdtscp", "114", "erms", "fsrm"} <= set(clear.split("=")[1].split(","))
    assert all(why for _, why in hostquirks.PVM_HOST_OPTIONS)


def test_guest_cmdline() -> None:
    assert gi.guest_cmdline(host_quirks=False) == "console=ttyS0 panic=-1"
    quirky = gi.guest_cmdline("quiet", host_quirks=True)
    assert quirky == f"console=ttyS0 panic=-1 {hostquirks.PVM_HOST_CMDLINE} quiet"


def test_pvm_detection_follows_the_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(hostquirks, "PVM_MODULE", tmp_path / "kvm_pvm")
    assert not hostquirks.pvm_host_detected()
    assert gi.guest_cmdline() == gi.BASE_CMDLINE
    (tmp_path / "kvm_pvm").mkdir()
    assert hostquirks.pvm_host_detected()
    assert hostquirks.PVM_HOST_CMDLINE in gi.guest_cmdline()


def _fake_kernel(tmp_path: Path) -> KernelImages:
    (tmp_path / "vmlinux").write_bytes(b"v")
    (tmp_path / "bzImage").write_bytes(b"b")
    return KernelImages(tmp_path / "vmlinux", tmp_path / "bzImage", "6.1.0-test")


def test_default_and_check_guest(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(gi, "build_kernel", lambda cache, progress: _fake_kernel(tmp_path))
    g = gi.default_guest(progress=False, cache_dir=tmp_path / "c")
    assert g.vmlinux == tmp_path / "vmlinux" and g.kernel_version == "6.1.0-test"
    assert g.initrd == tmp_path / "c" / "initramfs" / "busybox.cpio" and g.initrd.is_file()
    assert g.cmdline.startswith(gi.BASE_CMDLINE)
    c = gi.check_guest(progress=False, cache_dir=tmp_path / "c")
    assert c.initrd.name == "check_init.cpio" and c.initrd.is_file()
    programs = list((tmp_path / "c" / "programs").iterdir())
    assert len(programs) == 1 and programs[0].read_bytes()[:4] == b"\x7fELF"


def test_compile_static_reports_compiler_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.c"
    bad.write_text("int main(void) { return undefined_thing; }\n")
    with pytest.raises(ImageError, match="undefined_thing"):
        compile_static(bad, tmp_path)
    good = compile_static(GUEST_SOURCES / "check_init.c", tmp_path)
    assert compile_static(GUEST_SOURCES / "check_init.c", tmp_path) == good  # cached


def test_main_prints_shell_assignments(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = gi.DefaultGuest(tmp_path / "vm linux", tmp_path / "bz", tmp_path / "i", "a b", "6.1")
    monkeypatch.setattr(gi_main, "default_guest", lambda progress: fake)
    assert gi_main.main(["-q"]) == 0
    rows = dict(shlex.split(line)[0].split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert rows["VMLINUX"] == str(tmp_path / "vm linux") and rows["CMDLINE"] == "a b"


def test_main_reports_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(progress: bool) -> gi.DefaultGuest:
        raise ImageError("kernel source missing: apt-get install linux-source-6.1")

    monkeypatch.setattr(gi_main, "default_guest", boom)
    assert gi_main.main([]) == 1
    assert "apt-get install linux-source-6.1" in capsys.readouterr().err
