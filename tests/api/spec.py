"""Firecracker's API definition, which the REST tests judge kvmlite by.

It is read from ../shared/specs relative to the repository root (it is not
copied into the repository); tests that need it skip, saying why, if it is
absent.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEC_NAME = "firecracker-1.17.0-dev.yaml"


def _spec_path() -> Path:
    """../shared/specs beside the repository; in a git worktree (``.git`` is a file
    naming ``<main>/.git/worktrees/<name>``), beside the main checkout too."""
    candidates = [ROOT.parent / "shared" / "specs" / SPEC_NAME]
    dot_git = ROOT / ".git"
    if dot_git.is_file() and dot_git.read_text().startswith("gitdir:"):
        main = Path(dot_git.read_text().split(":", 1)[1].strip()).parents[2]
        candidates.append(main.parent / "shared" / "specs" / SPEC_NAME)
    return next((p for p in candidates if p.is_file()), candidates[0])


SPEC_PATH = _spec_path()


@functools.cache
def spec() -> dict[str, Any]:
    if not SPEC_PATH.is_file():
        pytest.skip(f"Firecracker's API definition {SPEC_PATH} is absent")
    import yaml

    return yaml.safe_load(SPEC_PATH.read_text())


def validate(definition: str, value: Any) -> None:
    """``value`` matches ``#/definitions/<definition>`` (JSON Schema draft 4, as swagger 2.0)."""
    import jsonschema_rs  # comes with schemathesis

    schema = {"definitions": spec()["definitions"], "$ref": f"#/definitions/{definition}"}
    jsonschema_rs.Draft4Validator(schema).validate(value)
