"""The engines' kernel ABI (engines/abi.py) against gcc reading <linux/aio_abi.h>,
<linux/io_uring.h> and <asm/unistd_64.h>: every struct's size and member offsets, every
constant and syscall number. Needs gcc and linux-libc-dev."""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import pytest

from kvmlite.backends.block.engines import abi

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

#: ctypes class -> C type; members are named as in C except where RENAMED says.
STRUCTS = {
    abi.Iovec: "struct iovec",
    abi.Iocb: "struct iocb",
    abi.IoEvent: "struct io_event",
    abi.IoSqringOffsets: "struct io_sqring_offsets",
    abi.IoCqringOffsets: "struct io_cqring_offsets",
    abi.IoUringParams: "struct io_uring_params",
    abi.IoUringSqe: "struct io_uring_sqe",
    abi.IoUringCqe: "struct io_uring_cqe",
}
RENAMED = {"pad2": "__pad2"}
CONSTANTS = [
    n
    for n in dir(abi)
    if n.startswith(("IOCB_", "IORING_")) or (n.startswith("SYS_") and n[4:5].islower())
]


def _c_constant(name: str) -> str:
    return "__NR_" + name[4:] if name.startswith("SYS_") else name


@pytest.fixture(scope="module")
def c_values(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    lines = [
        "#include <stdio.h>",
        "#include <stddef.h>",
        "#include <sys/uio.h>",
        "#include <asm/unistd_64.h>",
        "#include <linux/aio_abi.h>",
        "#include <linux/io_uring.h>",
        "int main(void) {",
    ]
    for cls, c in STRUCTS.items():
        lines.append(f'printf("sizeof {cls.__name__} %zu\\n", sizeof({c}));')
        for f in cls._fields_:
            member = RENAMED.get(f[0], f[0])
            lines.append(f'printf("offset {cls.__name__}.{f[0]} %zu\\n", offsetof({c}, {member}));')
    for name in CONSTANTS:
        lines.append(f'printf("const {name} %llu\\n", (unsigned long long)({_c_constant(name)}));')
    lines.append("return 0; }")
    d = tmp_path_factory.mktemp("engine_abi")
    src, exe = d / "abi.c", d / "abi"
    src.write_text("\n".join(lines))
    subprocess.run(["gcc", "-o", str(exe), str(src)], check=True, capture_output=True, text=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {f"{k} {n}": int(v) for k, n, v in (line.split() for line in out.splitlines())}


@pytest.mark.parametrize("cls", list(STRUCTS), ids=lambda c: c.__name__)
def test_struct_layout_matches_c(cls: type[ctypes.Structure], c_values: dict[str, int]) -> None:
    assert ctypes.sizeof(cls) == c_values[f"sizeof {cls.__name__}"]
    wrong = {
        f[0]: (getattr(cls, f[0]).offset, c_values[f"offset {cls.__name__}.{f[0]}"])
        for f in cls._fields_
        if getattr(cls, f[0]).offset != c_values[f"offset {cls.__name__}.{f[0]}"]
    }
    assert not wrong, f"(ours, gcc's) offsets differ: {wrong}"


def test_the_sizes_the_kernel_documents() -> None:
    assert (ctypes.sizeof(abi.Iocb), ctypes.sizeof(abi.IoEvent)) == (64, 32)
    assert (ctypes.sizeof(abi.IoUringSqe), ctypes.sizeof(abi.IoUringCqe)) == (64, 16)
    assert ctypes.sizeof(abi.IoUringParams) == 120


@pytest.mark.parametrize("name", CONSTANTS)
def test_constant_matches_c(name: str, c_values: dict[str, int]) -> None:
    assert getattr(abi, name) == c_values[f"const {name}"]


def test_covers_every_constant_group() -> None:
    assert {"SYS_io_submit", "SYS_io_uring_enter", "IOCB_FLAG_RESFD"} <= set(CONSTANTS)
    assert {"IORING_OFF_SQES", "IORING_REGISTER_EVENTFD", "IORING_OP_WRITEV"} <= set(CONSTANTS)
