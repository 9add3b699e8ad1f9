"""Fixtures: a Vmm that has not started, its REST API, and that API on a unix socket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmlite.api.rest import RestApi
from kvmlite.api.server import ApiServer
from kvmlite.config.firecracker import firecracker_defaults
from kvmlite.vmm.vmm import Vmm


@pytest.fixture
def vmm() -> Iterator[Vmm]:
    v = Vmm(firecracker_defaults(), id="test-vm")
    yield v
    v.close()


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
