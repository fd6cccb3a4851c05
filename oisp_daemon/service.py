"""`oisp-sensor run`: the daemon. The sensor (sensor.py) plus sessions, tails and the control plane.

Threads: the ring poller (capture), the main thread (the sensor's loop: pipeline, signals,
sd_notify; the watchdog ping comes from that loop, so a stuck pipeline stops it), one asyncio
thread for the control plane (Unix socket and D-Bus) and its worker threads. The main thread alone
changes capture state (probes, runtime.json, the pipeline's settings, the redaction policy):
a control operation that changes it is a command the main loop runs between records
(commands.py), and a reload, from SIGHUP or `oisp-ctl reload`, is such a command too. Signals
only set flags. What other threads read (status) is a snapshot the main thread publishes.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from . import __version__
from .capture import libraries
from .capture.loader import CaptureError
from .errors import Conflict, InvalidArgument, NotFound
from .config.load import ConfigError, load, system_files
from .control.authz import Authorizer
from .control.operations import Operations
from .control.polkit import Polkit
from .control.unix_socket import raise_fd_limit
from .export.tail import SubscriberHub
from .sessions.fanout import Fanout, RedactionPolicy
from .notify import notify
from .redact import RedactionConfigError
from .redact.custom import pattern_timeouts
from .sensor import Sensor, summary
from .sessions.manager import SessionManager
from .runtime_state import RuntimeState, prepare_directories

log = logging.getLogger(__name__)

# Keys read once at start: changing them needs a restart (said in the log on reload). Everything
# else (providers, binary_paths, redaction, sessions, watchdog) takes effect on reload.
RESTART_KEYS = ("capture", "paths", "control", "dbus", "tail")


class CaptureView(NamedTuple):
    """What other threads may read of capture state: replaced whole by the main thread."""

    binary_paths: Tuple[str, ...] = ()


class Daemon:
    def __init__(self, config_file: str) -> None:
        self.config_file = config_file
        self.config_files: List[str] = []
        self.config: Dict[str, Any] = {}
        self.started = time.monotonic()
        self.sensor: Optional[Sensor] = None
        self.sessions: SessionManager
        self.hub: SubscriberHub
        self.policy: RedactionPolicy
        self.fanout: Fanout
        self.runtime: RuntimeState
        self.ops: Optional[Operations] = None
        self.view = CaptureView()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._control_thread: Optional[threading.Thread] = None
        self._transports: List[Any] = []
        self._reload_requested = threading.Event()
        self._stop_requested = threading.Event()
        self._last_beat = 0.0
        self.last_reload: Dict[str, Any] = {}

    # -- commands: run on the main thread, whoever asks ---------------------------------------

    def _command(self, what: str, fn: Any) -> Any:
        assert self.sensor is not None
        return self.sensor.commands.call(fn, what)

    def reload(self) -> Optional[str]:
        """Re-read the configuration; on any error keep the running one. Returns the error."""
        return self._command("reload", self._reload)

    def add_binary_path(self, path: str) -> List[str]:
        return self._command(f"binary-paths add {path}", lambda: self._add_binary_path(path))

    def remove_binary_path(self, path: str) -> List[str]:
        return self._command(f"binary-paths remove {path}", lambda: self._remove_binary_path(path))

    def set_global_redaction(self, mode: str) -> None:
        self._command(f"redaction set {mode}", lambda: self._set_global_redaction(mode))

    # -- configuration ------------------------------------------------------------------------

    def _load_config(self) -> Dict[str, Any]:
        self.config_files = system_files(self.config_file)
        return load(self.config_files)

    def global_redaction(self) -> str:
        return self.policy.mode

    def custom_pattern_count(self) -> int:
        return len(self.policy.custom_patterns)

    def _policy_from(self, config: Dict[str, Any]) -> RedactionPolicy:
        mode = self.runtime.redaction or config["redaction"]["mode"]
        return RedactionPolicy(mode, config["redaction"]["custom_patterns"])

    def _set_global_redaction(self, mode: str) -> None:
        self.policy = RedactionPolicy(mode, self.policy.custom_patterns)
        self.fanout.policy = self.policy
        self.runtime.redaction = mode
        self.runtime.save()
        self.sessions.enforce_floor(mode)

    def _reload(self) -> Optional[str]:
        assert self.sensor is not None and self.sensor.pipeline is not None
        notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        error = None
        try:
            config = self._load_config()
            policy = self._policy_from(config)
        except (ConfigError, RedactionConfigError) as exc:
            error = str(exc)
            log.error("reload failed, keeping the running configuration:\n%s", error)
        else:
            for key in RESTART_KEYS:
                if config[key] != self.config[key]:
                    log.warning("%s changed: takes effect at the next restart", key)
                    config[key] = self.config[key]  # what runs is what status and reload compare to
            self.policy = policy
            self.fanout.policy = policy
            self.sensor.pipeline.provider_hosts = config["providers"]["hosts"]
            self.config = config
            self.sensor.sync_targets(self._wanted_paths())
            self.sessions.apply_config(config, policy.mode)
            log.info("configuration reloaded from %s", ", ".join(self.config_files) or "defaults")
        self.last_reload = {"ok": error is None, "error": error, "at": time.time()}
        self._publish()
        notify("READY=1", self._status_line())
        return error

    # -- binary paths -------------------------------------------------------------------------

    def binary_paths(self) -> List[str]:
        return list(self.view.binary_paths)

    def _wanted_paths(self) -> List[str]:
        return list(self.config["binary_paths"]) + [p for p in self.runtime.binary_paths if p not in self.config["binary_paths"]]

    def _add_binary_path(self, path: str) -> List[str]:
        assert self.sensor is not None
        capture = self.sensor.capture
        identity = libraries.file_identity(path)
        if identity is None:
            raise InvalidArgument(f"{path}: no such file (or not a regular file)")
        if path in self._wanted_paths():
            raise Conflict(f"{path} is already among the binary paths; nothing changed")
        existing = capture.attached_file(identity)
        if existing is not None:
            raise Conflict(f"{path} is already attached, {self._attached_by(existing.target)}; nothing changed")
        target = libraries.probe_target(path, "config")
        if target is None:
            raise InvalidArgument(
                f"{path} defines none of the OpenSSL functions the sensor probes (SSL_write, SSL_read, ...): "
                "it neither links OpenSSL statically nor is a libssl"
            )
        attached = capture.attach_target(target)
        if not attached.probes:
            raise InvalidArgument(f"{path}: the uprobes could not be attached (see the daemon log)")
        self.runtime.binary_paths.append(path)
        self.runtime.save()
        self._publish()
        log.info("probing %s (%d probes)", target.path, len(attached.probes))
        return self.binary_paths()

    def _attached_by(self, target: libraries.TlsTarget) -> str:
        """Which path brought an attached file in, in the words an operator recognises."""
        if target.origin == "system":
            return f"as {target.path} (the system libssl)"
        for path in self._wanted_paths():
            if libraries.file_identity(path) == target.identity:
                source = "the configuration" if path in self.config["binary_paths"] else "oisp-ctl binary-paths add"
                return f"as {path} (from {source}; the same file)"
        return f"as {target.path}"

    def _remove_binary_path(self, path: str) -> List[str]:
        assert self.sensor is not None
        if path in self.config["binary_paths"]:
            raise Conflict(f"{path} comes from the configuration; remove it there and run oisp-ctl reload")
        if path not in self.runtime.binary_paths:
            raise NotFound(f"{path} is not among the binary paths; see oisp-ctl binary-paths list")
        self.runtime.binary_paths.remove(path)
        self.runtime.save()
        self.sensor.sync_targets(self._wanted_paths())
        self._publish()
        return self.binary_paths()

    def _publish(self) -> None:
        """(main thread) Replace the snapshot other threads read."""
        assert self.sensor is not None
        self.view = CaptureView(
            binary_paths=tuple(sorted(set(self._wanted_paths()))),
        )

    # -- status -------------------------------------------------------------------------------

    def counters(self) -> Dict[str, Any]:
        out = self.sensor.counters() if self.sensor is not None else {}
        out["sessions"] = len(self.sessions.list())
        out["tail_subscribers"] = self.hub.count()
        out["redaction_pattern_timeouts"] = sum(pattern_timeouts().values())
        out.update(self.hub.stats())
        return out

    def probes(self) -> List[Dict[str, Any]]:
        """The attached files as status shows them (discovery changes them on its own thread)."""
        assert self.sensor is not None
        return [
            {
                "path": a.target.shown_path,
                "origin": a.target.origin,
                "libraries": [scan.library for scan in a.target.scans],
                "symbols": list(a.probes),
            }
            for a in self.sensor.capture.attachments()
        ]

    def status(self) -> Dict[str, Any]:
        assert self.sensor is not None
        headers = self.sensor.capture.headers
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "kernel": os.uname().release,
            "kernel_headers": headers.description if headers else None,
            "probes": self.probes(),
            "binary_paths": self.binary_paths(),
            "redaction": self.policy.mode,
            "config_files": self.config_files,
            "last_reload": self.last_reload or None,
            "counters": self.counters(),
            "unseen_tls": self.sensor.unseen.entries(),  # processes whose TLS the sensor cannot see
            "dbus": self._dbus_state(),
        }

    def _dbus_state(self) -> Optional[Dict[str, Any]]:
        """The D-Bus connection (up or down, counters); None when D-Bus is off."""
        for transport in self._transports:
            if hasattr(transport, "state"):
                return transport.state()
        return None

    def tail_max_buffer(self) -> int:
        return int(self.config["tail"]["max_buffer"])

    def _status_line(self) -> str:
        c = self.counters()
        return (f"STATUS=capturing: {summary(c)}; {c['sessions']} sessions, {c['tail_subscribers']} tails"
                + ("" if (self._dbus_state() or {}).get("connected", True) else ", D-Bus down (reconnecting)"))

    # -- control plane ------------------------------------------------------------------------

    def _start_control(self) -> None:
        from .control.dbus_service import start_dbus
        from .control.unix_socket import start_unix_socket_server

        assert self.ops is not None
        ready = threading.Event()
        failure: List[BaseException] = []
        control, dbus = self.config["control"], self.config["dbus"]

        async def start() -> None:
            self._transports.append(await start_unix_socket_server(self.ops, control["socket"], control["socket_mode"], control["max_connections"], control["max_connections_per_uid"]))
            if dbus["enabled"]:
                self._transports.append(await start_dbus(self.ops, dbus["address"]))

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(start())
            except BaseException as exc:  # reported to the main thread, which exits non-zero
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._control_thread = threading.Thread(target=run, name="oisp-control", daemon=True)
        self._control_thread.start()
        ready.wait()
        if failure:
            raise failure[0]

    def _stop_control(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def stop() -> None:
            for transport in reversed(self._transports):
                try:
                    await transport.close()
                except Exception:
                    log.exception("closing %s failed", type(transport).__name__)

        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if self._control_thread is not None:
            self._control_thread.join(timeout=5)

    # -- main ---------------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if signum == signal.SIGHUP:
            self._reload_requested.set()
        else:
            self._stop_requested.set()
            if self.sensor is not None:
                self.sensor.stop()

    def run(self) -> int:
        if os.geteuid() != 0:
            print("oisp-sensor run: the daemon needs root to load eBPF programs (systemctl start oisp-sensor)", file=sys.stderr)
            return 1
        try:
            self.config = self._load_config()
            paths = self.config["paths"]
            prepare_directories(paths)
            self.runtime = RuntimeState(paths["state_dir"])
            self.policy = self._policy_from(self.config)
        except (ConfigError, RedactionConfigError, OSError) as exc:
            print(f"oisp-sensor run: bad configuration:\n{exc}", file=sys.stderr)
            return 1
        raise_fd_limit()  # sessions, probes and control connections each hold a descriptor
        for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        self.sessions = SessionManager(self.config["paths"]["state_dir"])
        tail = self.config["tail"]
        self.hub = SubscriberHub(replay_size=int(tail["replay"]), replay_bytes=int(tail["replay_bytes"]),
                                 max_buffer_bytes=int(tail["max_buffer_bytes"]),
                                 total_buffer_bytes=int(tail["total_buffer_bytes"]))
        self.fanout = Fanout(self.sessions, self.hub, self.policy)
        self.sensor = Sensor(self.config)
        try:
            self.sensor.start(self._wanted_paths())
        except CaptureError as exc:
            print(f"oisp-sensor run: {exc}", file=sys.stderr)
            self.sensor.close()
            return 1
        self._publish()
        self.sessions.apply_config(self.config, self.policy.mode)
        self.sessions.restore(self.policy.mode)
        control = self.config["control"]
        self.ops = Operations(self, Authorizer(control["user_group"], control["admin_group"], polkit=Polkit(self.config["dbus"]["address"])))
        try:
            self._start_control()
        except Exception as exc:
            print(f"oisp-sensor run: cannot start the control plane: {exc}", file=sys.stderr)
            self._shutdown()
            return 1
        log.info(
            "running: %d TLS targets probed, control socket %s%s",
            len(self.sensor.capture.attachments()),
            control["socket"],
            f", D-Bus {self.config['dbus']['address']}" if self.config["dbus"]["enabled"] else "",
        )
        notify("READY=1", self._status_line())
        self.sensor.run(self.fanout.publish, on_tick=self._on_tick)
        notify("STOPPING=1")
        self._shutdown()
        log.info("stopped")
        return 0

    def _on_tick(self) -> None:
        """Between records on the main thread: a requested reload, and the watchdog ping."""
        assert self.sensor is not None and self.sensor.reader is not None
        if self._reload_requested.is_set() and not self._stop_requested.is_set():
            self._reload_requested.clear()
            self._reload()
        now = time.monotonic()
        if now - self._last_beat >= 1.0:
            self._last_beat = now
            # Only a poller that keeps turning earns the ping: a stuck capture gets restarted.
            if now - self.sensor.reader.last_poll < float(self.config["watchdog"]["stall_s"]):
                notify("WATCHDOG=1", self._status_line())

    def _shutdown(self) -> None:
        self._stop_control()
        if self.ops is not None and self.ops.authorizer.polkit is not None:
            self.ops.authorizer.polkit.close()
        self.sessions.close()
        self.hub.close()
        if self.sensor is not None:
            self.sensor.close()


def run(config_file: str) -> int:
    return Daemon(config_file).run()
