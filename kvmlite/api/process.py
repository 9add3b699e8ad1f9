"""Firecracker's process-wide settings: the logger and the metrics sink.

These belong to the VMM process, not to the VM, so they are not in
``VmConfig``. Definitions ``Logger`` and ``Metrics`` of Firecracker's API
(``PUT /logger``, ``PUT /metrics``, ``--log-path``, ``--level``,
``--metrics-path``, the config file's ``logger`` and ``metrics``).

The logger adds a handler for kvmlite's ``logging`` tree writing to
``log_path`` (a file or a named pipe) at ``level``. Metrics are JSON lines
written to ``metrics_path`` on ``FlushMetrics`` (and on exit); kvmlite's
metrics are few (the API's request counts and the VM's state), in
Firecracker's line-per-flush shape with ``utc_timestamp_ms``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

from kvmlite.config.jsonfields import check_keys, get, obj
from kvmlite.errors import ConfigError

LEVELS = {
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,
    "off": logging.CRITICAL + 10,
}
LOGGER_KEYS = {"level", "log_path", "show_level", "show_log_origin", "module"}
METRICS_KEYS = {"metrics_path", "emit_id", "properties"}


def _open_sink(path: str, what: str) -> int:
    """Open a file or named pipe for appending without blocking on a pipe with no reader."""
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o644)
    except OSError as e:
        raise ConfigError(f"cannot open the {what} {path}: {e.strerror}") from None


class ProcessSettings:
    """Thread-safe: API threads and the CLI call these."""

    def __init__(self, vm_id: str = "") -> None:
        self.vm_id = vm_id
        self._lock = threading.Lock()
        self._log_handler: logging.Handler | None = None
        self._metrics_fd: int | None = None
        self._metrics_extra: dict[str, Any] = {}
        self.counters: dict[str, int] = {}

    def count(self, name: str) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + 1

    # -- logger ----------------------------------------------------------------------

    def configure_logger(self, value: Any) -> None:
        where = "logger"
        cfg = obj(value, where)
        check_keys(cfg, where, LOGGER_KEYS)
        level_text = get(cfg, "level", str, where, "Info")
        if level_text.lower() not in LEVELS:
            raise ConfigError(
                f"{where}.level: {level_text!r} is not one of "
                "Error, Warning, Info, Debug, Trace, Off"
            )
        show_level = get(cfg, "show_level", bool, where, False)
        show_origin = get(cfg, "show_log_origin", bool, where, False)
        module = get(cfg, "module", str, where, "")
        path = get(cfg, "log_path", str, where, "")
        level = LEVELS[level_text.lower()]
        handler: logging.Handler
        if path:
            fd = _open_sink(path, "log")
            handler = logging.StreamHandler(os.fdopen(fd, "a", buffering=1))
        else:
            handler = logging.StreamHandler()
        fmt = "%(asctime)s [kvmlite:" + (self.vm_id or "anonymous-instance") + "]"
        if show_level:
            fmt += " %(levelname)s"
        if show_origin:
            fmt += " %(pathname)s:%(lineno)d"
        handler.setFormatter(logging.Formatter(fmt + " %(message)s"))
        handler.setLevel(level)
        if module:
            handler.addFilter(logging.Filter(module.replace("::", ".")))
        root = logging.getLogger("kvmlite")
        with self._lock:
            if self._log_handler is not None:
                root.removeHandler(self._log_handler)
                self._log_handler.close()
            self._log_handler = handler
        root.addHandler(handler)
        root.setLevel(min(root.getEffectiveLevel(), level))

    # -- metrics ---------------------------------------------------------------------

    def configure_metrics(self, value: Any) -> None:
        where = "metrics"
        cfg = obj(value, where)
        check_keys(cfg, where, METRICS_KEYS, {"metrics_path"})
        path = get(cfg, "metrics_path", str, where, "")
        emit_id = get(cfg, "emit_id", bool, where, False)
        props = get(cfg, "properties", dict, where, {})
        for key, item in props.items():
            if not isinstance(item, str):
                raise ConfigError(f"{where}.properties.{key}: expected a string")
        with self._lock:
            if self._metrics_fd is not None:
                raise ConfigError("the metrics system is already initialized")
            self._metrics_fd = _open_sink(path, "metrics file")
            self._metrics_extra = {"properties": props} if props else {}
            if emit_id:
                self._metrics_extra["id"] = self.vm_id

    @property
    def metrics_configured(self) -> bool:
        return self._metrics_fd is not None

    def flush_metrics(self, state: str) -> None:
        with self._lock:
            if self._metrics_fd is None:
                raise ConfigError("the metrics system is not initialized (PUT /metrics first)")
            line = {
                "utc_timestamp_ms": int(time.time() * 1000),
                **self._metrics_extra,
                "api_server": dict(self.counters),
                "vmm": {"state": state},
            }
            try:
                os.write(self._metrics_fd, (json.dumps(line) + "\n").encode())
            except BlockingIOError:
                pass  # a full pipe: Firecracker too drops the line rather than block
            except OSError as e:
                raise ConfigError(f"cannot write metrics: {e.strerror}") from None

    def close(self) -> None:
        with self._lock:
            if self._metrics_fd is not None:
                os.close(self._metrics_fd)
                self._metrics_fd = None
            if self._log_handler is not None:
                logging.getLogger("kvmlite").removeHandler(self._log_handler)
                self._log_handler.close()
                self._log_handler = None


def level_from_cli(text: str) -> str:
    """``--level``: Firecracker's level names, any case."""
    if text.lower() not in LEVELS:
        raise ConfigError(f"--level {text!r}: use Error, Warning, Info, Debug, Trace or Off")
    return text
