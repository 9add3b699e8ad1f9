"""``kvmlite firecracker`` (console script ``kvmlite-firecracker``): a drop-in for
the ``firecracker`` binary.

It takes Firecracker's own command line (``firecracker --help``, v1.x):
``--api-sock PATH`` (default /run/firecracker.socket) serves the REST API
(kvmlite/api/rest.py) and waits to be configured; the VM boots on
``PUT /actions {"action_type": "InstanceStart"}``. ``--config-file FILE``
configures the VM from Firecracker's JSON (kvmlite/config/firecracker.py)
and boots at once; ``--no-api`` (which needs ``--config-file``) serves no
socket. Like Firecracker, the guest's serial console is on stdout (and
stdin). The process ends when the VM does; SIGTERM or SIGINT end it too; the
socket is removed either way.

Accepted and without effect in kvmlite (it has no seccomp filters, no jailer
timing, no MMDS): ``--seccomp-filter``, ``--no-seccomp``, ``--start-time-us``,
``--start-time-cpu-us``, ``--parent-cpu-time-us``, ``--mmds-size-limit``,
``--metadata``, ``--boot-timer`` (logged once). ``--enable-pci`` puts virtio
on PCI instead of MMIO.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import re
import signal
import sys
from pathlib import Path
from typing import Any

from kvmlite import __version__
from kvmlite.config.firecracker import FIRECRACKER_API_VERSION
from kvmlite.errors import ConfigError, KvmliteError

log = logging.getLogger(__name__)

DEFAULT_API_SOCK = "/run/firecracker.socket"
DEFAULT_ID = "anonymous-instance"
_INSTANCE_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api-sock", default=DEFAULT_API_SOCK, metavar="PATH", help="API socket path")
    p.add_argument("--config-file", type=Path, metavar="FILE", help="VM configuration (JSON)")
    p.add_argument("--no-api", action="store_true", help="serve no API (needs --config-file)")
    p.add_argument("--id", default=DEFAULT_ID, help="instance id (letters, digits, -)")
    p.add_argument("--boot-timer", action="store_true", help="accepted; no effect in kvmlite")
    p.add_argument("--level", help="log level: Error, Warning, Info, Debug, Trace, Off")
    p.add_argument("--log-path", metavar="PATH", help="log to this file or named pipe")
    p.add_argument("--show-level", action="store_true", help="log lines name their level")
    p.add_argument("--show-log-origin", action="store_true", help="log lines name file:line")
    p.add_argument("--module", help="log only this module's messages")
    p.add_argument("--metrics-path", metavar="PATH", help="metrics file or named pipe")
    p.add_argument(
        "--http-api-max-payload-size", type=int, default=51200, metavar="BYTES", help="body limit"
    )
    p.add_argument("--enable-pci", action="store_true", help="virtio over PCI instead of MMIO")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    for flag in ("--seccomp-filter", "--start-time-us", "--start-time-cpu-us",
                 "--parent-cpu-time-us", "--mmds-size-limit", "--metadata"):  # fmt: skip
        p.add_argument(flag, help=argparse.SUPPRESS)
    p.add_argument("--no-seccomp", action="store_true", help=argparse.SUPPRESS)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "firecracker",
        help="a drop-in for the firecracker binary (its command line and REST API)",
        description="Accept Firecracker's command line and serve its REST API (docs/api.md).",
    )
    add_arguments(p)


def version_text() -> str:
    # One line whose second word is the version: what Kata Containers parses.
    return f"Firecracker v{FIRECRACKER_API_VERSION} (kvmlite {__version__})"


def _on_term(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def terminate_as_interrupt() -> None:
    """SIGTERM raises KeyboardInterrupt, so that the socket is removed on the way out
    (call it before the socket exists)."""
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        signal.signal(signal.SIGTERM, _on_term)


def wait_for_exit(vmm: Any) -> Any:
    """Wait until the VM ends; SIGINT/SIGTERM quit it. Returns the MachineExit."""
    from kvmlite.vmm.actions import Quit  # noqa: PLC0415

    terminate_as_interrupt()
    result = None
    while result is None:
        try:
            result = vmm.wait(0.5)
        except KeyboardInterrupt:
            vmm.submit(Quit("terminated by a signal"))
    return result


def open_api(vmm: Any, path: str, settings: Any, *, require_kernel: bool, max_body: int) -> Any:
    from kvmlite.api.rest import RestApi  # noqa: PLC0415
    from kvmlite.api.server import ApiServer  # noqa: PLC0415

    api = RestApi(vmm, settings=settings, require_kernel=require_kernel)
    server = ApiServer(path, api.handle, max_body=max_body)
    server.start()
    return server


def read_config_file(path: Path, base: Any) -> tuple[Any, dict[str, Any]]:
    """(VmConfig, the document) from a Firecracker config file."""
    from kvmlite.config.firecracker import from_firecracker  # noqa: PLC0415

    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read the config file {path}: {e.strerror}") from None
    except ValueError as e:
        raise ConfigError(f"config file {path} is not JSON: {e}") from None
    try:
        return from_firecracker(doc, base), doc
    except ConfigError as e:
        raise ConfigError(f"config file {path}: {e}") from None


def main(args: argparse.Namespace) -> int:
    if args.version:
        print(version_text())
        return 0
    from kvmlite.api.process import ProcessSettings, level_from_cli  # noqa: PLC0415
    from kvmlite.config import Transport  # noqa: PLC0415
    from kvmlite.config.firecracker import firecracker_defaults  # noqa: PLC0415
    from kvmlite.vmm.actions import Start  # noqa: PLC0415
    from kvmlite.vmm.vmm import Vmm  # noqa: PLC0415

    if args.no_api and args.config_file is None:
        raise ConfigError("--no-api needs --config-file (nothing could configure the VM)")
    if not _INSTANCE_ID.fullmatch(args.id):
        raise ConfigError(f"--id {args.id!r}: use 1 to 64 letters, digits and -")
    if args.http_api_max_payload_size < 1:
        raise ConfigError("--http-api-max-payload-size must be positive")
    if args.boot_timer:
        log.info("--boot-timer: kvmlite has no boot timer device; ignored")
    base = firecracker_defaults()
    if args.enable_pci:
        base = dataclasses.replace(
            base, machine=dataclasses.replace(base.machine, virtio_transport=Transport.PCI)
        )
    settings = ProcessSettings(args.id)
    config, doc = base, dict[str, Any]()
    if args.config_file is not None:
        config, doc = read_config_file(args.config_file, base)
    try:
        if args.log_path or args.level:
            logger: dict[str, Any] = {
                "level": level_from_cli(args.level or "Warning"),
                "show_level": args.show_level,
                "show_log_origin": args.show_log_origin,
            }
            if args.log_path:
                logger["log_path"] = args.log_path
            if args.module:
                logger["module"] = args.module
            settings.configure_logger(logger)
        elif doc.get("logger") is not None:
            settings.configure_logger(doc["logger"])
        if args.metrics_path:
            settings.configure_metrics({"metrics_path": args.metrics_path})
        elif doc.get("metrics") is not None:
            settings.configure_metrics(doc["metrics"])
        terminate_as_interrupt()
        vmm = Vmm(config, id=args.id)
        server = None
        try:
            if not args.no_api:
                server = open_api(
                    vmm,
                    args.api_sock,
                    settings,
                    require_kernel=True,
                    max_body=args.http_api_max_payload_size,
                )
            try:
                if args.config_file is not None:
                    vmm.submit(Start(), timeout=None)
                result = wait_for_exit(vmm)
            except KeyboardInterrupt:  # SIGTERM/SIGINT before the VM ran: a clean end
                return 0
        finally:
            if server is not None:
                server.close()
            vmm.close()
            if settings.metrics_configured:
                with contextlib.suppress(KvmliteError):
                    settings.flush_metrics("Paused")
    finally:
        settings.close()
    if result.message and result.status != 0:
        print(f"kvmlite: {result.reason.value}: {result.message}", file=sys.stderr)
    status: int = result.status
    return status


def console_main() -> int:
    """The ``kvmlite-firecracker`` console script."""
    parser = argparse.ArgumentParser(
        prog="kvmlite-firecracker", description="kvmlite as a drop-in for firecracker"
    )
    add_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="kvmlite: %(message)s")
    try:
        return main(args)
    except KvmliteError as e:
        print(f"kvmlite: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(console_main())
