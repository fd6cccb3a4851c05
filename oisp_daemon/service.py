"""`oisp-sensor run`: the daemon. Owns the probes, the pipeline, sessions and the control plane.

Threads: the ring poller (capture), the main thread (pipeline, signals, sd_notify: the watchdog
ping comes from the loop that consumes capture, so a stuck pipeline stops it), and one asyncio
thread for the control plane (Unix socket and D-Bus). Signals only set flags; the main loop acts.
"""
from __future__ import annotations

import asyncio
import logging
import os
import queue
import signal
import sys
import threading
import time
from typing import Any, Dict, List, Optional

from . import __version__
from .capture import libraries
from .capture.loader import CaptureError, CaptureOptions, TlsCapture
from .capture.reader import RingReader
from .errors import Conflict, InvalidArgument, NotFound
from .config.load import ConfigError, load, system_files
from .control.authz import Authorizer
from .control.operations import Operations
from .control.unix_socket import raise_fd_limit
from .export.tail import SubscriberHub
from .sessions.fanout import Fanout, RedactionPolicy
from .notify import notify
from .pipeline import Pipeline
from .progress import Progress
from .redact import RedactionConfigError
from .redact.custom import pattern_timeouts
from .sessions.manager import SessionManager
from .runtime_state import RuntimeState, prepare_directories

log = logging.getLogger(__name__)

# Keys read once at start: changing them needs a restart (said in the log on reload).
RESTART_KEYS = (("capture",), ("paths",), ("control",), ("dbus",), ("tail",))


class Daemon:
    def __init__(self, config_file: str) -> None:
        self.config_file = config_file
        self.config_files: List[str] = []
        self.config: Dict[str, Any] = {}
        self.started = time.monotonic()
        self.capture: Optional[TlsCapture] = None
        self.reader: Optional[RingReader] = None
        self.pipeline: Optional[Pipeline] = None
        self.sessions: SessionManager
        self.hub: SubscriberHub
        self.policy: RedactionPolicy
        self.fanout: Fanout
        self.runtime: RuntimeState
        self.ops: Optional[Operations] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._control_thread: Optional[threading.Thread] = None
        self._transports: List[Any] = []
        self._reload_requested = threading.Event()
        self._stop_requested = threading.Event()
        self._reload_lock = threading.Lock()
        self.last_reload: Dict[str, Any] = {}

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

    def set_global_redaction(self, mode: str) -> None:
        self.policy = RedactionPolicy(mode, self.policy.custom_patterns)
        self.fanout.policy = self.policy
        self.runtime.redaction = mode
        self.runtime.save()
        self.sessions.enforce_floor(mode)

    def reload(self) -> Optional[str]:
        """Re-read the configuration; on any error keep the running one. Returns the error."""
        with self._reload_lock:
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
                    if config[key[0]] != self.config[key[0]]:
                        log.warning("%s changed: takes effect at the next restart", key[0])
                self.policy = policy
                self.fanout.policy = policy
                assert self.pipeline is not None
                self.pipeline.provider_hosts = config["providers"]["hosts"]
                self._sync_binary_paths(config["binary_paths"] + self.runtime.binary_paths)
                self.sessions.apply_config(config, policy.mode)
                self.config = config
                log.info("configuration reloaded from %s", ", ".join(self.config_files) or "defaults")
            self.last_reload = {"ok": error is None, "error": error, "at": time.time()}
            notify("READY=1", self._status_line())
            return error

    # -- binary paths -------------------------------------------------------------------------

    def binary_paths(self) -> List[str]:
        return sorted(set(self.config["binary_paths"]) | set(self.runtime.binary_paths))

    def _sync_binary_paths(self, wanted: List[str]) -> None:
        assert self.capture is not None
        want = {os.path.realpath(p) for p in wanted}
        for attached in list(self.capture.attached):
            if attached.target.origin == "config" and attached.target.path not in want:
                self.capture.detach_target(attached)
        have = {a.target.path for a in self.capture.attached}
        for target in libraries.discover(wanted):
            if target.origin == "config" and target.path not in have:
                self.capture.attach_target(target)

    def add_binary_path(self, path: str) -> List[str]:
        assert self.capture is not None
        real = os.path.realpath(path)
        if not os.path.isfile(real):
            raise InvalidArgument(f"{path}: no such file")
        if path in self.binary_paths():
            raise Conflict(f"{path} is already probed")
        symbols = libraries.exported_symbols(real, [p[0] for p in libraries.OPENSSL_PROBES])
        if not symbols:
            raise InvalidArgument(f"{path} defines none of the OpenSSL functions the sensor probes (SSL_write, SSL_read, ...): "
                "it neither links OpenSSL statically nor is a libssl",
            )
        attached = self.capture.attach_target(libraries.TlsTarget(real, symbols, "config"))
        if not attached.probes:
            raise InvalidArgument(f"{path}: the uprobes could not be attached (see the daemon log)")
        self.runtime.binary_paths.append(path)
        self.runtime.save()
        log.info("probing %s (%d probes)", real, len(attached.probes))
        return self.binary_paths()

    def remove_binary_path(self, path: str) -> List[str]:
        assert self.capture is not None
        if path in self.config["binary_paths"]:
            raise Conflict(f"{path} comes from the configuration; remove it there and run oisp-ctl reload")
        if path not in self.runtime.binary_paths:
            raise NotFound(f"{path} is not among the binary paths; see oisp-ctl binary-paths list")
        self.runtime.binary_paths.remove(path)
        self.runtime.save()
        self._sync_binary_paths(self.binary_paths())
        return self.binary_paths()

    # -- status -------------------------------------------------------------------------------

    def counters(self) -> Dict[str, int]:
        stats = self.pipeline.stats if self.pipeline else None
        lost = self.capture.lost() if self.capture and self.capture.loaded else {"lost_bytes": 0, "lost_records": 0}
        return {
            "records": stats.records if stats else 0,
            "bytes": stats.bytes if stats else 0,
            "events": stats.events if stats else 0,
            "ai_requests": stats.ai_requests if stats else 0,
            "ai_responses": stats.ai_responses if stats else 0,
            "gaps": stats.gaps if stats else 0,
            "ignored_connections": stats.ignored_connections if stats else 0,
            "connections": self.pipeline.tracker.connection_count() if self.pipeline else 0,
            "sessions": len(self.sessions.list()),
            "tail_subscribers": self.hub.count(),
            "redaction_pattern_timeouts": sum(pattern_timeouts().values()),
            **lost,
        }

    def status(self) -> Dict[str, Any]:
        assert self.capture is not None
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "kernel": os.uname().release,
            "kernel_headers": self.capture.headers.description if self.capture.headers else None,
            "probes": [{"path": a.target.path, "origin": a.target.origin, "symbols": a.probes} for a in self.capture.attached],
            "binary_paths": self.binary_paths(),
            "redaction": self.policy.mode,
            "config_files": self.config_files,
            "last_reload": self.last_reload or None,
            "counters": self.counters(),
        }

    def tail_max_buffer(self) -> int:
        return int(self.config["tail"]["max_buffer"])

    def _status_line(self) -> str:
        c = self.counters()
        return (
            f"STATUS=capturing: {c['ai_requests']} AI requests, {c['events']} events, "
            f"{c['sessions']} sessions, {c['tail_subscribers']} tails, lost {c['lost_bytes']} bytes"
        )

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
            if self.reader is not None:
                self.reader.stop()

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
        self.hub = SubscriberHub(replay_size=int(self.config["tail"]["replay"]))
        self.fanout = Fanout(self.sessions, self.hub, self.policy)
        cap = self.config["capture"]
        self.capture = TlsCapture(
            CaptureOptions(
                ring_buffer_bytes=cap["ring_buffer_mb"] * 1024 * 1024,
                max_connections=cap["max_connections"],
                cache_dir=self.config["paths"]["cache_dir"],
            )
        )
        try:
            with Progress("compiling and loading BPF programs"):
                self.capture.load()
            self.capture.attach(libraries.discover(self.binary_paths()))
        except CaptureError as exc:
            print(f"oisp-sensor run: {exc}", file=sys.stderr)
            self.capture.close()
            return 1
        self.reader = RingReader(self.capture.poll, self.capture.open_ring)
        self.pipeline = Pipeline(
            emit=self.fanout.publish,
            provider_hosts=self.config["providers"]["hosts"],
            max_message_bytes=cap["max_message_bytes"],
            idle_timeout_s=cap["idle_timeout_s"],
            ignore_connection=self.capture.ignore,
        )
        self.sessions.apply_config(self.config, self.policy.mode)
        self.sessions.restore(self.policy.mode)
        control = self.config["control"]
        self.ops = Operations(self, Authorizer(control["user_group"], control["admin_group"]))
        try:
            self._start_control()
        except Exception as exc:
            print(f"oisp-sensor run: cannot start the control plane: {exc}", file=sys.stderr)
            self._shutdown()
            return 1
        self.reader.start()
        log.info(
            "running: %d TLS targets probed, control socket %s%s",
            len(self.capture.attached),
            control["socket"],
            f", D-Bus {self.config['dbus']['address']}" if self.config["dbus"]["enabled"] else "",
        )
        notify("READY=1", self._status_line())
        self._main_loop()
        notify("STOPPING=1")
        self._shutdown()
        log.info("stopped")
        return 0

    def _main_loop(self) -> None:
        assert self.reader is not None and self.pipeline is not None
        stall_s = float(self.config["watchdog"]["stall_s"])
        last_beat = 0.0
        while True:
            try:
                record = self.reader.queue.get(timeout=0.2)
            except queue.Empty:
                record = None
                if self.reader.finished:
                    return
            if record is not None:
                self.pipeline.handle(record)
            self.pipeline.tick()
            now = time.monotonic()
            if self._reload_requested.is_set() and not self._stop_requested.is_set():
                self._reload_requested.clear()
                self.reload()
            if now - last_beat >= 1.0:
                last_beat = now
                # Only a poller that keeps turning earns the ping: a stuck capture gets restarted.
                if now - self.reader.last_poll < stall_s:
                    notify("WATCHDOG=1", self._status_line())

    def _shutdown(self) -> None:
        self._stop_control()
        self.sessions.close()
        self.hub.close()
        if self.capture is not None:
            self.capture.close()


def run(config_file: str) -> int:
    return Daemon(config_file).run()
