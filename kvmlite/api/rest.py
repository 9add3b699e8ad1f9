"""The Firecracker-compatible REST API: requests in, actions out.

The contract is Firecracker's API definition (firecracker-1.17.0-dev.yaml;
docs/api.md lists what kvmlite answers). ``RestApi.handle(method, path,
body)`` returns ``(status, json)``; it never touches the machine or a device
(DESIGN.md rule 5): every request becomes an action submitted to the ``Vmm``
(``Describe``, ``Configure``, ``Start``, ``Pause``, ``Resume``,
``SendCtrlAltDel``), which runs it on the VMM's loop thread and answers.

Errors are Firecracker's shape, ``400 {"fault_message": "..."}``: a bad body
(not JSON, unknown fields, wrong types), an unknown path or method, a
request the VM's state forbids (pre-boot resources once it runs, runtime
ones before). A refused request changes nothing. Pre-boot ``PUT``s check
the host's files at once, as Firecracker does, so a missing kernel or drive
is reported by the request that named it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Callable
from typing import Any

from kvmlite import __version__
from kvmlite.api.process import ProcessSettings
from kvmlite.config import VmConfig
from kvmlite.config.boot import check_readable_file
from kvmlite.config.firecracker import (
    FIRECRACKER_API_VERSION,
    MACHINE_KEYS,
    PARTIAL_DRIVE_KEYS,
    PARTIAL_NET_KEYS,
    check_id,
    from_firecracker,
    rate_limiter,
    serial_from_firecracker,
    to_firecracker,
)
from kvmlite.config.jsonfields import check_keys, get, get_enum, obj
from kvmlite.errors import ConfigError, KvmliteError
from kvmlite.vmm.actions import (
    ActionRefused,
    Configure,
    Describe,
    Pause,
    Resume,
    SendCtrlAltDel,
    Start,
)
from kvmlite.vmm.machine import RunState

log = logging.getLogger(__name__)

#: RunState -> InstanceInfo.state (the definition knows three; a VM that has
#: ended reports "Paused" for the moment before the process exits).
INSTANCE_STATE = {
    RunState.NOT_STARTED: "Not started",
    RunState.RUNNING: "Running",
    RunState.PAUSED: "Paused",
    RunState.STOPPED: "Paused",
}
START_TIMEOUT = 600.0

Route = Callable[[str, Any], tuple[int, Any]]


class BadRequest(KvmliteError):
    pass


def fault(message: str) -> dict[str, str]:
    return {"fault_message": message}


class RestApi:
    """``require_kernel``: refuse InstanceStart without a boot source (Firecracker's
    rule; ``kvmlite run --api-sock`` has booted already, with kvmlite's defaults)."""

    def __init__(
        self,
        vmm: Any,
        *,
        settings: ProcessSettings | None = None,
        require_kernel: bool = True,
        app_name: str = "kvmlite",
    ) -> None:
        self.vmm = vmm
        self.settings = settings or ProcessSettings(vmm.id)
        self.require_kernel = require_kernel
        self.app_name = app_name
        item = r"/([^/]*)"
        self._routes: list[tuple[str, re.Pattern[str], Route, bool]] = [
            ("GET", re.compile(r"/"), self.get_instance, False),
            ("GET", re.compile(r"/version"), self.get_version, False),
            ("GET", re.compile(r"/vm/config"), self.get_vm_config, False),
            ("GET", re.compile(r"/machine-config"), self.get_machine_config, False),
            ("PUT", re.compile(r"/machine-config"), self.put_machine_config, True),
            ("PATCH", re.compile(r"/machine-config"), self.patch_machine_config, True),
            ("PUT", re.compile(r"/boot-source"), self.put_boot_source, True),
            ("PUT", re.compile(r"/drives" + item), self.put_drive, True),
            ("PATCH", re.compile(r"/drives" + item), self.patch_drive, True),
            ("PUT", re.compile(r"/network-interfaces" + item), self.put_net, True),
            ("PATCH", re.compile(r"/network-interfaces" + item), self.patch_net, True),
            ("PUT", re.compile(r"/entropy"), self.put_entropy, True),
            ("PUT", re.compile(r"/serial"), self.put_serial, True),
            ("PUT", re.compile(r"/logger"), self.put_logger, True),
            ("PUT", re.compile(r"/metrics"), self.put_metrics, True),
            ("PUT", re.compile(r"/actions"), self.put_action, True),
            ("PATCH", re.compile(r"/vm"), self.patch_vm, True),
            ("PUT", re.compile(r"/snapshot/create"), self.put_snapshot_create, True),
            ("PUT", re.compile(r"/snapshot/load"), self.put_snapshot_load, True),
        ]

    # -- dispatch ----------------------------------------------------------------------

    def handle(self, method: str, target: str, body: bytes) -> tuple[int, Any]:
        path = target.split("?", 1)[0]
        try:
            route, arg, wants_body = self._route(method, path)
            self.settings.count(f"{method.lower()}_{path.strip('/').split('/')[0] or 'root'}")
            doc = self._body(method, body) if wants_body else None
            return route(arg, doc)
        except KvmliteError as e:
            return 400, fault(str(e))
        except TimeoutError as e:
            return 400, fault(f"{e}; try again")
        except Exception as e:  # a bug: say so, keep serving
            log.exception("API request %s %s failed", method, path)
            return 500, fault(f"internal error: {type(e).__name__}: {e}")

    def _route(self, method: str, path: str) -> tuple[Route, str, bool]:
        for m, pattern, route, wants_body in self._routes:
            match = pattern.fullmatch(path)
            if match and m == method:
                return route, match.group(1) if match.groups() else "", wants_body
        raise BadRequest(f"Invalid request method and/or path: {method} {path[:200]}.")

    @staticmethod
    def _body(method: str, body: bytes) -> dict[str, Any]:
        if not body.strip():
            raise BadRequest(f"Empty {method} request.")
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError) as e:
            raise BadRequest(f"the request body is not valid JSON: {e}") from None
        return obj(doc, "the request body")

    # -- helpers -----------------------------------------------------------------------

    def _describe(self) -> Any:
        return self.vmm.submit(Describe())

    def _configure(self, update: Callable[[VmConfig], VmConfig]) -> tuple[int, Any]:
        self.vmm.submit(Configure(update))
        return 204, None

    def _require_started(self) -> Any:
        desc = self._describe()
        if desc.state is RunState.NOT_STARTED:
            raise BadRequest(
                "The requested operation is not supported before starting the microVM."
            )
        return desc

    # -- instance information ----------------------------------------------------------

    def get_instance(self, _: str, __: Any) -> tuple[int, Any]:
        desc = self._describe()
        return 200, {
            "id": desc.id,
            "state": INSTANCE_STATE[desc.state],
            "vmm_version": FIRECRACKER_API_VERSION,
            "app_name": f"{self.app_name} {__version__}",
        }

    def get_version(self, _: str, __: Any) -> tuple[int, Any]:
        return 200, {"firecracker_version": FIRECRACKER_API_VERSION}

    def get_vm_config(self, _: str, __: Any) -> tuple[int, Any]:
        return 200, to_firecracker(self._describe().config)

    def get_machine_config(self, _: str, __: Any) -> tuple[int, Any]:
        return 200, to_firecracker(self._describe().config)["machine-config"]

    # -- pre-boot resources ------------------------------------------------------------

    def put_machine_config(self, _: str, body: dict[str, Any]) -> tuple[int, Any]:
        return self._configure(lambda c: _replace_resource(c, "machine-config", body))

    def patch_machine_config(self, _: str, body: dict[str, Any]) -> tuple[int, Any]:
        check_keys(body, "machine-config", MACHINE_KEYS)

        def update(config: VmConfig) -> VmConfig:
            current = to_firecracker(config)["machine-config"]
            merged = {**current, **{k: v for k, v in body.items() if v is not None}}
            return _replace_resource(config, "machine-config", merged)

        return self._configure(update)

    def put_boot_source(self, _: str, body: dict[str, Any]) -> tuple[int, Any]:
        def update(config: VmConfig) -> VmConfig:
            new = _replace_resource(config, "boot-source", body)
            new.boot.check_host(new.machine.memory)
            return new

        return self._configure(update)

    def put_drive(self, drive_id: str, body: dict[str, Any]) -> tuple[int, Any]:
        check_id(drive_id, "the path's drive_id")
        if body.get("drive_id") != drive_id:
            raise BadRequest("The id from the path does not match the id from the body!")

        def update(config: VmConfig) -> VmConfig:
            new = _put_item(config, "drives", "drive_id", drive_id, body)
            drive = next(d for d in new.drives if d.id == drive_id)
            check_readable_file("drive", drive.path)
            if not drive.read_only and not os.access(drive.path, os.W_OK):
                raise ConfigError(f"drive {drive.path} is not writable: set is_read_only")
            return new

        return self._configure(update)

    def put_net(self, iface_id: str, body: dict[str, Any]) -> tuple[int, Any]:
        check_id(iface_id, "the path's iface_id")
        if body.get("iface_id") != iface_id:
            raise BadRequest("The id from the path does not match the id from the body!")
        return self._configure(
            lambda c: _put_item(c, "network-interfaces", "iface_id", iface_id, body)
        )

    def put_entropy(self, _: str, body: dict[str, Any]) -> tuple[int, Any]:
        return self._configure(lambda c: _replace_resource(c, "entropy", body))

    def put_serial(self, _: str, body: dict[str, Any]) -> tuple[int, Any]:
        console = serial_from_firecracker(body)
        return self._configure(lambda c: dataclasses.replace(c, console=console))

    def put_logger(self, _: str, body: dict[str, Any]) -> tuple[int, Any]:
        self.settings.configure_logger(body)
        return 204, None

    def put_metrics(self, _: str, body: dict[str, Any]) -> tuple[int, Any]:
        self.settings.configure_metrics(body)
        return 204, None

    # -- runtime -----------------------------------------------------------------------

    def patch_drive(self, drive_id: str, body: dict[str, Any]) -> tuple[int, Any]:
        where = "drive"
        check_keys(body, where, PARTIAL_DRIVE_KEYS, {"drive_id"})
        if body["drive_id"] != drive_id:
            raise BadRequest("The id from the path does not match the id from the body!")
        path = get(body, "path_on_host", str, where, "")
        rate_limiter(body.get("rate_limiter"), f"{where}.rate_limiter")
        desc = self._require_started()
        drives = {d["drive_id"]: d for d in to_firecracker(desc.config)["drives"]}
        if drive_id not in drives:
            raise BadRequest(f"drive {drive_id!r} does not exist")
        if path and path != drives[drive_id]["path_on_host"]:
            raise BadRequest(
                f"drive {drive_id!r}: kvmlite cannot change a drive's backing file while the VM "
                "runs yet (no media-change action)"
            )
        return 204, None

    def patch_net(self, iface_id: str, body: dict[str, Any]) -> tuple[int, Any]:
        where = "network-interface"
        check_keys(body, where, PARTIAL_NET_KEYS, {"iface_id"})
        if body["iface_id"] != iface_id:
            raise BadRequest("The id from the path does not match the id from the body!")
        for key in ("rx_rate_limiter", "tx_rate_limiter"):
            rate_limiter(body.get(key), f"{where}.{key}")
        desc = self._require_started()
        nets = {n["iface_id"] for n in to_firecracker(desc.config)["network-interfaces"]}
        if iface_id not in nets:
            raise BadRequest(f"network interface {iface_id!r} does not exist")
        return 204, None

    def put_action(self, _: str, body: dict[str, Any]) -> tuple[int, Any]:
        where = "action"
        check_keys(body, where, {"action_type"}, {"action_type"})
        kinds = ("FlushMetrics", "InstanceStart", "SendCtrlAltDel")
        kind = get_enum(body, "action_type", where, kinds, "")
        if kind == "InstanceStart":
            if self.require_kernel and self._describe().config.boot.kernel is None:
                raise BadRequest("Cannot start microvm without kernel configuration.")
            self.vmm.submit(Start(), timeout=START_TIMEOUT)
        elif kind == "SendCtrlAltDel":
            self.vmm.submit(SendCtrlAltDel())
        else:
            self.settings.flush_metrics(INSTANCE_STATE[self._describe().state])
        return 204, None

    def patch_vm(self, _: str, body: dict[str, Any]) -> tuple[int, Any]:
        where = "vm"
        check_keys(body, where, {"state"}, {"state"})
        target = get_enum(body, "state", where, ("Paused", "Resumed"), "")
        action = Pause() if target == "Paused" else Resume()
        try:
            self.vmm.submit(action)
        except ActionRefused:
            # Like Firecracker, pausing a paused VM (resuming a running one) is no error.
            done = RunState.PAUSED if target == "Paused" else RunState.RUNNING
            if self._describe().state is not done:
                raise
        return 204, None

    # -- snapshots (kvmlite/snapshot/firecracker.py maps the bodies) ---------------------

    def put_snapshot_create(self, _: str, body: dict[str, Any]) -> tuple[int, Any]:
        from kvmlite.snapshot.firecracker import create_action  # noqa: PLC0415

        self.vmm.submit(create_action(body), timeout=None)
        return 204, None

    def put_snapshot_load(self, _: str, body: dict[str, Any]) -> tuple[int, Any]:
        from kvmlite.snapshot.firecracker import load_action  # noqa: PLC0415

        self.vmm.submit(load_action(body), timeout=None)
        return 204, None


def _replace_resource(config: VmConfig, key: str, body: dict[str, Any]) -> VmConfig:
    doc = to_firecracker(config)
    doc[key] = body
    return from_firecracker(doc, base=config)


def _put_item(
    config: VmConfig, key: str, id_key: str, item_id: str, body: dict[str, Any]
) -> VmConfig:
    """Create or replace (in place, keeping the order) the item ``item_id`` of ``key``."""
    doc = to_firecracker(config)
    items = doc.get(key, [])
    for i, item in enumerate(items):
        if item[id_key] == item_id:
            items[i] = body
            break
    else:
        items.append(body)
    doc[key] = items
    return from_firecracker(doc, base=config)
