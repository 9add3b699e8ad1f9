"""``kvmlite img``: each sub-command judged by qemu-img (info, check, compare, map)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvmlite import imgtool
from kvmlite.backends.block.qcow2 import Qcow2Backend

MiB = 1 << 20


def img(*args: str) -> int:
    return imgtool.main(list(args))


def qimg(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=check)


def qinfo(path: Path) -> dict:
    return json.loads(qimg("info", "--output=json", str(path)).stdout)


def assert_qemu_clean(path: Path) -> None:
    r = qimg("check", str(path), check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_create_qcow2_and_raw(tmp_path: Path) -> None:
    q = tmp_path / "a.qcow2"
    assert img("create", "-f", "qcow2", "-o", "cluster_size=4k,compat=0.10", str(q), "1G") == 0
    info = qinfo(q)
    assert info["virtual-size"] == 1 << 30 and info["cluster-size"] == 4096
    assert info["format-specific"]["data"]["compat"] == "0.10"
    assert_qemu_clean(q)
    r = tmp_path / "a.raw"
    assert img("create", "-f", "raw", str(r), "10M") == 0
    assert r.stat().st_size == 10 * MiB and r.stat().st_blocks == 0


def test_create_with_backing_takes_its_size(tmp_path: Path) -> None:
    base = tmp_path / "base.raw"
    base.write_bytes(b"\x01" * 3 * MiB)
    top = tmp_path / "top.qcow2"
    assert img("create", "-f", "qcow2", "-b", "base.raw", "-F", "raw", str(top)) == 0
    info = qinfo(top)
    assert info["virtual-size"] == 3 * MiB
    assert info["backing-filename"] == "base.raw"
    assert info["backing-filename-format"] == "raw"


def test_create_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert img("create", "-f", "qcow2", "-o", "cluster_size=3000", str(tmp_path / "x"), "1M") == 1
    assert "cluster size" in capsys.readouterr().err
    assert img("create", "-f", "qcow2", str(tmp_path / "y")) == 1
    assert "size" in capsys.readouterr().err
    assert img("info", str(tmp_path / "missing")) == 1
    assert "not found" in capsys.readouterr().err


def test_info_json_matches_qemu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    q = tmp_path / "a.qcow2"
    qimg("create", "-f", "qcow2", "-o", "refcount_bits=8,lazy_refcounts=on", str(q), "64M")
    qimg("snapshot", "-c", "s1", str(q))
    assert img("info", "--output=json", str(q)) == 0
    mine = json.loads(capsys.readouterr().out)
    ref = qinfo(q)
    for key in ("virtual-size", "cluster-size", "format", "dirty-flag"):
        assert mine[key] == ref[key], key
    assert mine["format-specific"]["data"] == {
        k: v
        for k, v in ref["format-specific"]["data"].items()
        if k in mine["format-specific"]["data"]
    }
    assert [s["name"] for s in mine["snapshots"]] == [s["name"] for s in ref["snapshots"]]
    assert img("info", str(q)) == 0
    human = capsys.readouterr().out
    assert "virtual size: 64 MiB (67108864 bytes)" in human and "s1" in human


def test_check_exit_codes_and_repair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    q = tmp_path / "a.qcow2"
    qimg("create", "-f", "qcow2", str(q), "16M")
    subprocess.run(["qemu-io", "-c", "write -P 1 0 1M", str(q)], capture_output=True, check=True)
    assert img("check", str(q)) == 0
    assert "No errors were found" in capsys.readouterr().out
    with Qcow2Backend(str(q)) as b:  # leaks: references nobody holds
        b.refcounts.update(0, 1)
        b.refcounts.update(1, 1)
    assert img("check", "--output=json", str(q)) == 3
    assert json.loads(capsys.readouterr().out)["leaks"] == 2
    assert qimg("check", str(q), check=False).returncode == 3  # qemu agrees
    assert img("check", "-r", "leaks", str(q)) == 0
    assert_qemu_clean(q)
    with Qcow2Backend(str(q)) as b:  # corruption: a used data cluster at refcount 0
        host = b.extents(0, 4096).__next__().host_offset
        assert host is not None
        b.refcounts.update(host // b.cs, -1)
    assert img("check", str(q)) == 2
    assert qimg("check", str(q), check=False).returncode == 2
    assert img("check", "-r", "all", str(q)) == 0
    assert_qemu_clean(q)
    raw = tmp_path / "r.raw"
    raw.write_bytes(bytes(4096))
    assert img("check", str(raw)) == 63


@pytest.mark.parametrize("compress", [False, True])
def test_convert_roundtrip(tmp_path: Path, compress: bool) -> None:
    src = tmp_path / "src.raw"
    data = bytearray(8 * MiB)
    data[MiB : 2 * MiB] = os.urandom(MiB)
    data[5 * MiB : 5 * MiB + 4096] = b"text" * 1024
    src.write_bytes(bytes(data))
    q = tmp_path / "c.qcow2"
    args = ["convert", "-O", "qcow2", "-o", "cluster_size=16k"]
    assert img(*args, *(["-c"] if compress else []), str(src), str(q)) == 0
    assert_qemu_clean(q)
    qimg("compare", "-f", "qcow2", "-F", "raw", str(q), str(src))
    report = json.loads(qimg("check", "--output=json", str(q)).stdout)
    assert (report.get("compressed-clusters", 0) > 0) == compress
    # zero regions were not allocated
    assert report["allocated-clusters"] < (8 * MiB) // 16384 // 2
    back = tmp_path / "back.raw"
    assert img("convert", "-f", "qcow2", "-O", "raw", str(q), str(back)) == 0
    assert back.read_bytes() == bytes(data)


def test_convert_progress_bar(tmp_path: Path) -> None:
    src = tmp_path / "s.raw"
    src.write_bytes(os.urandom(2 * MiB))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "kvmlite.imgtool",
            "convert",
            "-p",
            "-O",
            "qcow2",
            str(src),
            str(tmp_path / "d.qcow2"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "100%" in r.stderr


def _qemu_map(path: Path) -> list[tuple[int, int, bool, bool, int]]:
    return _normalise(json.loads(qimg("map", "--output=json", str(path)).stdout))


def _normalise(extents: list[dict]) -> list[tuple[int, int, bool, bool, int]]:
    """Per-512-byte-sector view so that different extent splitting compares equal."""
    out: list[tuple[int, int, bool, bool, int]] = []
    for e in extents:
        key = (e["data"], e["zero"], e["depth"])
        if out and out[-1][2:] == key and out[-1][0] + out[-1][1] == e["start"]:
            out[-1] = (out[-1][0], out[-1][1] + e["length"], *key)
        else:
            out.append((e["start"], e["length"], *key))
    return out


def test_map_matches_qemu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / "base.qcow2"
    qimg("create", "-f", "qcow2", str(base), "8M")
    subprocess.run(
        ["qemu-io", "-c", "write -P 1 0 2M", "-c", "write -z 4M 1M", str(base)],
        capture_output=True,
        check=True,
    )
    top = tmp_path / "top.qcow2"
    qimg("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", str(top))
    subprocess.run(
        ["qemu-io", "-c", "write -P 2 1M 64k", "-c", "write -z 64k 64k", str(top)],
        capture_output=True,
        check=True,
    )
    assert img("map", "--output=json", str(top)) == 0
    mine = _normalise(json.loads(capsys.readouterr().out))
    assert mine == _qemu_map(top)
    assert img("map", str(top)) == 0
    assert "0x100000        0x10000" in capsys.readouterr().out


def test_resize_grow_and_shrink(tmp_path: Path) -> None:
    q = tmp_path / "a.qcow2"
    qimg("create", "-f", "qcow2", "-o", "cluster_size=512", str(q), "1M")
    subprocess.run(["qemu-io", "-c", "write -P 7 0 1M", str(q)], capture_output=True, check=True)
    assert img("resize", str(q), "+200M") == 0  # L1 must move: 512-byte clusters
    assert qinfo(q)["virtual-size"] == 201 * MiB
    assert_qemu_clean(q)
    with Qcow2Backend(str(q)) as b:
        assert b.read(0, MiB) == b"\x07" * MiB
        b.write(200 * MiB, b"\x08" * 4096)
    assert_qemu_clean(q)
    assert img("resize", str(q), "512k") == 1  # needs --shrink
    assert img("resize", "--shrink", str(q), "512k") == 0
    assert qinfo(q)["virtual-size"] == 512 * 1024
    assert_qemu_clean(q)
    r = tmp_path / "a.raw"
    r.write_bytes(bytes(4096))
    assert img("resize", "-f", "raw", str(r), "1M") == 0 and r.stat().st_size == MiB


def test_commit(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    qimg("create", "-f", "qcow2", str(base), "4M")
    subprocess.run(["qemu-io", "-c", "write -P 1 0 4M", str(base)], capture_output=True, check=True)
    top = tmp_path / "top.qcow2"
    qimg("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", str(top))
    subprocess.run(
        ["qemu-io", "-c", "write -P 2 1M 100k", "-c", "write -z 3M 64k", str(top)],
        capture_output=True,
        check=True,
    )
    expect = tmp_path / "expect.raw"
    qimg("convert", "-O", "raw", str(top), str(expect))
    assert img("commit", str(top)) == 0
    assert_qemu_clean(base)
    assert_qemu_clean(top)
    qimg("compare", "-f", "qcow2", "-F", "raw", str(base), str(expect))
    qimg("compare", "-f", "qcow2", "-F", "raw", str(top), str(expect))
    assert {e[4] for e in _qemu_map(top)} == {1}  # the overlay is empty again


def test_rebase_safe_and_unsafe(tmp_path: Path) -> None:
    b1, b2 = tmp_path / "b1.raw", tmp_path / "b2.raw"
    b1.write_bytes(b"\x01" * 2 * MiB)
    b2.write_bytes(b"\x01" * MiB + b"\x02" * MiB)
    top = tmp_path / "top.qcow2"
    qimg("create", "-f", "qcow2", "-b", "b1.raw", "-F", "raw", str(top))
    subprocess.run(["qemu-io", "-c", "write -P 9 0 4k", str(top)], capture_output=True, check=True)
    expect = tmp_path / "expect.raw"
    qimg("convert", "-O", "raw", str(top), str(expect))
    assert img("rebase", "-b", "b2.raw", "-F", "raw", str(top)) == 0
    assert qinfo(top)["backing-filename"] == "b2.raw"
    assert_qemu_clean(top)
    qimg("compare", "-f", "qcow2", "-F", "raw", str(top), str(expect))
    assert img("rebase", "-u", "-b", "b1.raw", "-F", "raw", str(top)) == 0
    assert qinfo(top)["backing-filename"] == "b1.raw"
    assert img("rebase", "-b", "", str(top)) == 0  # flatten
    assert "backing-filename" not in qinfo(top)
    qimg("compare", "-f", "qcow2", "-F", "raw", str(top), str(expect))


def test_register_adds_img_to_a_parser() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    register_into = parser.add_subparsers(dest="command")
    imgtool.register(register_into)
    args = parser.parse_args(["img", "info", "--output=json", "x.qcow2"])
    assert args.command == "img" and args.img_command == "info" and args.output == "json"


@pytest.mark.parametrize("opts", ["compression_type=zstd,cluster_size=512", "cluster_size=2M"])
def test_convert_compressed_odd_size(tmp_path: Path, opts: str) -> None:
    src = tmp_path / "s.raw"
    src.write_bytes(b"abc" * 1_000_000)  # 3,000,000 bytes: not a whole sector
    q = tmp_path / "z.qcow2"
    assert img("convert", "-c", "-O", "qcow2", "-o", opts, str(src), str(q)) == 0
    assert_qemu_clean(q)
    qimg("compare", "-f", "qcow2", "-F", "raw", str(q), str(src))
    report = json.loads(qimg("check", "--output=json", str(q)).stdout)
    assert report["compressed-clusters"] >= 1
    assert q.stat().st_size < 3_000_000 or "2M" in opts
    assert img("compare", "-F", "raw", str(q), str(src)) == 0  # kvmlite reads it back


def test_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = tmp_path / "a.qcow2"
    qimg("create", "-f", "qcow2", str(a), "4M")
    subprocess.run(["qemu-io", "-c", "write -P 5 1M 4k", str(a)], capture_output=True, check=True)
    b = tmp_path / "b.raw"
    b.write_bytes(bytes(1 << 20) + b"\x05" * 4096 + bytes(3 * MiB - 4096))
    assert img("compare", "-F", "raw", str(a), str(b)) == 0
    assert "identical" in capsys.readouterr().out
    with open(b, "r+b") as f:
        f.seek(3 * MiB + 17)
        f.write(b"\x01")
    assert img("compare", "-F", "raw", str(a), str(b)) == 1
    assert f"Content mismatch at offset {3 * MiB + 17}!" in capsys.readouterr().out
    assert qimg("compare", "-F", "raw", str(a), str(b), check=False).returncode == 1
    longer = tmp_path / "c.raw"
    longer.write_bytes(b.read_bytes() + bytes(MiB))
    assert img("compare", "-f", "raw", "-F", "raw", str(b), str(longer)) == 0
    assert img("compare", "-s", "-f", "raw", "-F", "raw", str(b), str(longer)) == 1
    assert img("compare", str(a), str(tmp_path / "missing")) == 2


def test_failed_convert_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "bad.qcow2"
    qimg("create", "-f", "qcow2", str(src), "1M")
    subprocess.run(
        ["qemu-io", "-c", "write -c -P 3 0 64k", str(src)], capture_output=True, check=True
    )
    with Qcow2Backend(str(src), read_only=True) as q:
        e = next(q.extents())
        assert e.compressed
        host = q._entry(0) & ((1 << 62 - (q.cluster_bits - 8)) - 1)
    with open(src, "r+b") as f:  # damage the compressed stream
        f.seek(host)
        f.write(b"\xff" * 32)
    dst = tmp_path / "out.qcow2"
    assert img("convert", "-O", "qcow2", str(src), str(dst)) == 1
    assert "compressed cluster is damaged" in capsys.readouterr().err
    assert not dst.exists()


def test_empty_disk_then_grow(tmp_path: Path) -> None:
    q = tmp_path / "e.qcow2"
    assert img("create", "-f", "qcow2", str(q), "0") == 0
    assert_qemu_clean(q)
    assert img("resize", str(q), "+1M") == 0
    assert_qemu_clean(q)
    with Qcow2Backend(str(q)) as b:
        b.write(4096, b"\x09" * 4096)
    assert_qemu_clean(q)
    assert qimg("info", "--output=json", str(q)).stdout.count('"virtual-size": 1048576') == 1


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
@pytest.mark.parametrize("spec", ["+8E", "+7E", "9E", "+99999999999999999999999E"])
def test_resize_beyond_any_limit_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str, spec: str
) -> None:
    p = tmp_path / f"d.{fmt}"
    assert img("create", "-f", fmt, str(p), "1M") == 0
    capsys.readouterr()
    assert img("resize", str(p), spec) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "cannot resize to" in err and str(p) in err
    assert img("info", str(p)) == 0 and "1 MiB" in capsys.readouterr().out


@pytest.mark.parametrize("output", ["human", "json"])
def test_info_backing_chain_refuses_a_loop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], output: str
) -> None:
    a, b = tmp_path / "a.qcow2", tmp_path / "b.qcow2"
    qimg("create", "-f", "qcow2", str(b), "1M")
    qimg("create", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", str(a))
    qimg("rebase", "-u", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", str(b))  # a -> b -> a
    capsys.readouterr()
    assert img("info", "--backing-chain", "--output", output, str(a)) == 1
    captured = capsys.readouterr()
    assert "loops back to" in captured.err and captured.out == ""
    # qemu-img, the judge, refuses it too
    assert qimg("info", "--backing-chain", str(a), check=False).returncode != 0


def test_info_backing_chain_refuses_a_chain_too_deep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kvmlite.backends.block.qcow2.image import MAX_CHAIN

    prev = None
    for i in range(MAX_CHAIN + 1):
        p = tmp_path / f"{i}.qcow2"
        back = ["-b", prev.name, "-F", "qcow2"] if prev else []
        qimg("create", "-f", "qcow2", *back, str(p), "1M")
        prev = p
    capsys.readouterr()
    assert img("info", "--backing-chain", str(prev)) == 1
    assert "deeper than" in capsys.readouterr().err
