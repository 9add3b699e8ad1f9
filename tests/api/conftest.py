"""Fixtures for the management front-ends: a Vmm that has not started (with
Firecracker's defaults), its REST API on a unix socket, its QMP server."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmlite.api.address import SocketAddress
from kvmlite.api.qmp_server import QmpServer
from kvmlite.api.rest import RestApi
from kvmlite.api.server import ApiServer
from kvmlite.config.firecracker import firecracker_defaults
from kvmlite.vmm.vmm import Vmm


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory (unix socket paths are limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="kvl-", dir="/tmp") as d:
        yield Path(d)


@pytest.fixture
def vmm() -> Iterator[Vmm]:
    v = Vmm(firecracker_defaults(), id="test-vm")
    yield v
    v.close()


@pytest.fixture
def server(vmm: Vmm, short_tmp: Path) -> Iterator[QmpServer]:
    s = QmpServer(vmm, SocketAddress(path=short_tmp / "qmp.sock"), max_message=64 << 10)
    s.start()
    yield s
    s.close()


@pytest.fixture
def api(vmm: Vmm) -> RestApi:
    return RestApi(vmm)


@pytest.fixture
def api_sock(api: RestApi, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "api.sock"
    server = ApiServer(path, api.handle, request_timeout=2.0)
    server.start()
    yield path
    server.close()
