"""``kvmlite firecracker``'s command line, without booting anything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from api.client import request
from api.guest import wait_for_api


def fc(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kvmlite.cli", "firecracker", *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_version_is_one_line_kata_can_parse() -> None:
    out = fc("--version")
    assert out.returncode == 0
    first, version, *_ = out.stdout.split(" ")
    assert first == "Firecracker" and version == "v1.17.0-dev"


def test_no_api_needs_a_config_file() -> None:
    out = fc("--no-api")
    assert out.returncode == 1 and "--no-api needs --config-file" in out.stderr


def test_bad_config_files_are_named(tmp_path: Path) -> None:
    cfg = tmp_path / "vm.json"
    cfg.write_text("{not json")
    out = fc("--no-api", "--config-file", str(cfg))
    assert out.returncode == 1 and "is not JSON" in out.stderr
    cfg.write_text(json.dumps({"machine-config": {"vcpu_count": 1, "mem_size_mib": 64, "y": 2}}))
    out = fc("--no-api", "--config-file", str(cfg))
    assert out.returncode == 1 and "unknown field 'y'" in out.stderr
    out = fc("--no-api", "--config-file", str(tmp_path / "missing.json"))
    assert out.returncode == 1 and "cannot read the config file" in out.stderr


def test_bad_id_is_refused() -> None:
    out = fc("--id", "no spaces", "--api-sock", "/nonexistent/dir/s")
    assert out.returncode == 1 and "--id" in out.stderr


def test_socket_in_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    out = fc("--api-sock", str(tmp_path / "no" / "such" / "s.sock"))
    assert out.returncode == 1 and "cannot create the API socket" in out.stderr


def test_waits_for_configuration_and_removes_its_socket(tmp_path: Path) -> None:
    sock = tmp_path / "fc.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvmlite.cli", "firecracker", "--api-sock", str(sock)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for_api(sock, proc)
        assert request(sock, "GET", "/")[1]["state"] == "Not started"
        assert request(sock, "GET", "/machine-config")[1]["mem_size_mib"] == 128
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    assert not sock.exists()
