"""The QEMU-compatible shim (tools/kvm-unit-tests/qemu) and the result parser, without KVM."""

import importlib.machinery
import importlib.util
import os
import subprocess
import sys

import pytest

from kvmlite.testing.kvm_unit_tests import SHIM, Verdict, parse_results, table


def load_shim():
    loader = importlib.machinery.SourceFileLoader("kut_qemu_shim", str(SHIM))
    spec = importlib.util.spec_from_loader("kut_qemu_shim", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


shim = load_shim()


def run_shim(*args):
    return subprocess.run([sys.executable, str(SHIM), *args], capture_output=True, text=True)


def test_probes_answer_like_qemu():
    # scripts/arch-run.bash: `--help | grep -q QEMU`, `-h | head -1` parsed as a version
    out = run_shim("--help").stdout
    first = out.splitlines()[0].split()
    assert "QEMU" in out and first[:3] == ["QEMU", "emulator", "version"]
    assert first[3].split(".")[0].isdigit()
    # x86/run: -device '?' must list "pc-testdev" in quotes, and not pci-testdev
    devices = run_shim("-device", "?").stdout
    assert '"pc-testdev"' in devices and "pci-testdev" not in devices
    # scripts/vmm.bash qemu_parse_premature_failure
    missing = run_shim("-kernel", "_NO_FILE_4Uhere_", "-smp", "1")
    assert missing.returncode == 1
    assert "could not load kernel '_NO_FILE_4Uhere_'" in missing.stderr


def test_translate_x86_run_command_line(tmp_path):
    kernel = tmp_path / "apic.flat"
    kernel.write_bytes(b"x")
    argv = [
        "--no-reboot", "-nodefaults", "-global", "kvm-pit.lost_tick_policy=discard",
        "-device", "pc-testdev", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x4",
        "-display", "none", "-serial", "stdio", "-machine", "accel=kvm", "-kernel", str(kernel),
        "-smp", "2", "-cpu", "qemu64,+x2apic,+tsc-deadline,host-phys-bits", "-m", "2g",
        "-append", "-v 1", "-initrd", "/tmp/env",
    ]  # fmt: skip
    args, initrd, cpus, mem = shim.translate(argv)
    assert args == [
        "run", "-k", str(kernel), "-a", "-v 1", "-c", "2", "-m", "2048M",
        "--cpu-features=+x2apic,+tsc_deadline_timer", "--test-devices",
    ]  # fmt: skip
    assert (initrd, cpus, mem) == ("/tmp/env", 2, 2048)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["-device", "hyperv-testdev"], "hyperv-testdev"),
        (["-M", "q35,kernel-irqchip=split"], "q35"),
        (["-machine", "accel=tcg"], "accel=tcg"),
        (["-accel", "tcg"], "KVM only"),
        (["-incoming", "unix:/x"], "-incoming"),
        (["-machine", "vmport=on"], "vmport"),
        (["-frobnicate", "1"], "-frobnicate"),
        (["-smp"], "needs an argument"),
        (["-m", "lots"], "not a size"),
    ],
)
def test_unsupported_options_refused(argv, message):
    with pytest.raises(shim.Unsupported, match=message):
        shim.translate(argv)


def test_sizes_and_smp():
    assert [shim.memory_mib(s) for s in ("128", "256M", "4g", "2560", "size=1G")] == [
        128, 256, 4096, 2560, 1024,
    ]  # fmt: skip
    assert shim.smp_count("4") == 4 and shim.smp_count("cpus=3,maxcpus=8") == 3


def test_environment_file_gets_nr_cpus_and_memsize(tmp_path):
    env = tmp_path / "env"
    env.write_text("TARGET=qemu\nMEMSIZE=64")
    path = shim.environment_file(str(env), 3, 256)
    try:
        text = open(path).read()
    finally:
        os.unlink(path)
    assert text == "TARGET=qemu\nMEMSIZE=64\nNR_CPUS=3\n"


def test_parse_results_and_table():
    out = (
        "\x1b[32mPASS\x1b[0m smptest (1 tests)\n"
        "\x1b[31mFAIL\x1b[0m x2apic (timeout; duration=60s)\n"
        "\x1b[33mSKIP\x1b[0m tsc (0 tests)\n"
        "FAIL emulator (12 tests, 2 unexpected failures)\n"
        "garbage line\n"
    )
    r = parse_results(out)
    assert r == {
        "smptest": Verdict("PASS", "1 tests"),
        "x2apic": Verdict("TIMEOUT", "timeout; duration=60s"),
        "tsc": Verdict("SKIP", "0 tests"),
        "emulator": Verdict("FAIL", "12 tests, 2 unexpected failures"),
    }
    text = table({"smptest": Verdict("PASS"), "tsc": Verdict("PASS")}, r, {"smptest": 1.234})
    assert "| smptest | PASS | PASS | 1.2 |" in text
    assert "| tsc | PASS | SKIP **(counts)** |" in text
    assert "QEMU passes 2 tests; kvmlite passes 1 of those" in text
