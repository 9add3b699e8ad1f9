"""Fixtures: a vhost-user back-end serving a device on a thread, stopped after the test;
``netns``, a network namespace deleted after the test (kvmlite.testing.netns)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kvmlite.backends.block import open_image
from kvmlite.backends.block.engines import open_engine
from kvmlite.devices.virtio import ThreadPoolIoExecutor, VirtioBlock
from kvmlite.testing.netns import netns_scope
from kvmlite.vhost_user.backend import VhostUserBackend

DISK_SIZE = 1 << 20

netns = pytest.fixture(netns_scope, name="netns")


class Served:
    def __init__(self, backend: VhostUserBackend) -> None:
        self.backend = backend
        self.path = backend.path
        self.thread = threading.Thread(target=backend.serve_forever, daemon=True)
        self.thread.start()


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    started: list[tuple[Served, Callable[[], None]]] = []

    def start(device, path: str, watch=(), cleanup=lambda: None, wire=None) -> Served:  # noqa: ANN001
        backend = VhostUserBackend(device, path, watch=watch)
        if wire is not None:  # before the loop's thread starts
            wire(backend)
        s = Served(backend)
        started.append((s, cleanup))
        return s

    yield start
    for s, cleanup in started:
        s.backend.stop()
        s.thread.join(10)
        assert not s.thread.is_alive(), "back-end loop did not stop"
        s.backend.close()
        cleanup()


@pytest.fixture
def blk_engine(request: pytest.FixtureRequest) -> str:
    """The I/O engine of the ``blk`` fixture (parametrize it indirectly to change it)."""
    return getattr(request, "param", "threads")


@pytest.fixture
def blk(tmp_path: Path, serve: Callable[..., Served], blk_engine: str) -> tuple[Served, Path]:
    image = tmp_path / "disk.raw"
    image.write_bytes(bytes(DISK_SIZE))
    backend = open_image(str(image))
    executor = ThreadPoolIoExecutor(2) if blk_engine == "threads" else open_engine(blk_engine)
    dev = VirtioBlock(backend, serial="vhost-test", executor=executor)
    assert executor.completion_fd is not None

    def cleanup() -> None:
        executor.close()
        backend.close()

    served = serve(
        dev,
        str(tmp_path / "blk.sock"),
        watch=[(executor.completion_fd, executor.run_completions)],
        cleanup=cleanup,
    )
    return served, image
