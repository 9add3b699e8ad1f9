"""``kvmlite serve``: a virtio device over vhost-user (kvmlite/serve/)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    from kvmlite import serve  # noqa: PLC0415

    serve.register(subparsers)


def main(args: argparse.Namespace) -> int:
    from kvmlite import serve  # noqa: PLC0415

    return serve.run(args)
