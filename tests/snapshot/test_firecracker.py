"""Firecracker's snapshot request bodies -> actions (kvmlite/snapshot/firecracker.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmlite.errors import ConfigError
from kvmlite.snapshot import SnapshotPaths
from kvmlite.snapshot.firecracker import create_action, load_action

PATHS = SnapshotPaths(Path("/s/vm.snap"), Path("/s/vm.mem"))


def test_create() -> None:
    body = {"snapshot_type": "Full", "snapshot_path": "/s/vm.snap", "mem_file_path": "/s/vm.mem"}
    assert create_action(body).where == PATHS
    del body["snapshot_type"]  # Full is the default
    assert create_action(body).where == PATHS


def test_load() -> None:
    body = {
        "snapshot_path": "/s/vm.snap",
        "mem_backend": {"backend_type": "File", "backend_path": "/s/vm.mem"},
        "resume_vm": True,
    }
    action = load_action(body)
    assert action.where == PATHS and action.resume
    old = load_action({"snapshot_path": "/s/vm.snap", "mem_file_path": "/s/vm.mem"})
    assert old.where == PATHS and not old.resume


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"snapshot_type": "Diff", "snapshot_path": "a", "mem_file_path": "b"}, "diff"),
        ({"snapshot_type": "Half", "snapshot_path": "a", "mem_file_path": "b"}, "Full or Diff"),
        ({"snapshot_path": "a"}, "mem_file_path"),
        ({"snapshot_path": "a", "mem_file_path": "a"}, "differ"),
        ({"snapshot_path": 5, "mem_file_path": "b"}, "snapshot_path"),
        ({"snapshot_path": "a", "mem_file_path": "b", "x": 1}, "unknown field 'x'"),
        ([], "object"),
    ],
)
def test_create_refuses(body: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        create_action(body)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"snapshot_path": "a"}, "exactly one"),
        ({"snapshot_path": "a", "mem_file_path": "b", "mem_backend": {}}, "exactly one"),
        (
            {"snapshot_path": "a", "mem_backend": {"backend_type": "Uffd", "backend_path": "u"}},
            "Uffd",
        ),
        ({"snapshot_path": "a", "mem_backend": {"backend_type": "File"}}, "backend_path"),
        ({"snapshot_path": "a", "mem_file_path": "b", "track_dirty_pages": True}, "dirty"),
        ({"snapshot_path": "a", "mem_file_path": "b", "resume_vm": "yes"}, "true or false"),
        ({"snapshot_path": "a", "mem_file_path": "b", "network_overrides": [{}]}, "network"),
        ({"mem_file_path": "b"}, "snapshot_path"),
    ],
)
def test_load_refuses(body: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_action(body)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
KEYS = st.sampled_from(
    [
        "snapshot_type",
        "snapshot_path",
        "mem_file_path",
        "mem_backend",
        "resume_vm",
        "track_dirty_pages",
        "backend_type",
        "backend_path",
    ]
)


@given(st.dictionaries(KEYS, JSON | st.sampled_from(["Full", "Diff", "File", "/p"]), max_size=6))
def test_fuzz_only_config_errors(body: dict) -> None:
    for parse in (create_action, load_action):
        try:
            parse(body)
        except ConfigError:
            pass
