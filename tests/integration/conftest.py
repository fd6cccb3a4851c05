"""The sensor under test: `oisp-sensor record` started for real, as a separate root process.

One sensor serves the whole session (BPF compilation is paid once); every test tells its own
events apart by the pid of the client it ran. Under CI=true a sensor that cannot start fails the
tests instead of skipping them: a green CI must mean the eBPF path really ran.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

from tests.integration.daemon import running_daemon, shared_tmpdir
from tests.support.jsonl import whole_lines

ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def cannot_run(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"BPF test cannot run under CI: {reason}")
    pytest.skip(reason)


class Sensor:
    """A running `oisp-sensor record` and the JSONL file it writes."""

    def __init__(self, proc: subprocess.Popen, output: Path) -> None:
        self.proc = proc
        self.output = output
        self.log: List[str] = []
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any("events ->" in line for line in self.log):
                return
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the reader collect the last lines
                raise RuntimeError(f"sensor exited with {self.proc.returncode}:\n{''.join(self.log)}")
            time.sleep(0.05)
        raise RuntimeError(f"sensor not ready after {timeout}s:\n{''.join(self.log)}")

    def events(self) -> List[Dict[str, Any]]:
        return whole_lines(self.output) if self.output.exists() else []

    def events_of(self, pid: int) -> List[Dict[str, Any]]:
        return [e for e in self.events() if e.get("process", {}).get("pid") == pid]

    def wait_for(
        self, predicate: Callable[[List[Dict[str, Any]]], bool], pid: Optional[int] = None, timeout: float = 20
    ) -> List[Dict[str, Any]]:
        """Events (of `pid`, if given) once `predicate` holds for them; fails the test on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.events_of(pid) if pid is not None else self.events()
            if predicate(events):
                return events
            if self.proc.poll() is not None:
                pytest.fail(f"sensor died ({self.proc.returncode}):\n{''.join(self.log)}")
            if time.monotonic() > deadline:
                kinds = [e["event_type"] for e in events]
                pytest.fail(f"timed out waiting for events; have {kinds}\nsensor log:\n{''.join(self.log[-30:])}")
            time.sleep(0.1)

    def wait_for_types(self, pid: int, **counts: int) -> List[Dict[str, Any]]:
        """Wait until the pid has at least these many events per type (ai_request=1, ...)."""
        want = {k.replace("_", ".", 1): v for k, v in counts.items()}

        def enough(events: List[Dict[str, Any]]) -> bool:
            return all(sum(e["event_type"] == t for e in events) >= n for t, n in want.items())

        return self.wait_for(enough, pid=pid)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        return self.proc.returncode


def start_sensor(
    workdir: Path, extra_args: List[str] = (), config: str = "", env: Optional[Dict[str, str]] = None
) -> Sensor:
    if os.geteuid() != 0:
        cannot_run("the sensor needs root to load eBPF programs")
    try:
        import bcc  # noqa: F401
    except ImportError:
        cannot_run("bcc's Python bindings (python3-bpfcc) are not installed")
    output = workdir / "events.jsonl"
    cfg = workdir / "config.yaml"
    cfg.write_text(f"paths:\n  cache_dir: {workdir / 'cache'}\n{config}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "oisp_daemon.cli", "record", "--output", str(output), "--config", str(cfg), *extra_args],
        cwd=str(ROOT),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, **(env or {})),
    )
    sensor = Sensor(proc, output)
    try:
        sensor.wait_ready()
    except RuntimeError as exc:
        sensor.stop()
        pytest.fail(str(exc))
    return sensor


# Ollama served over TLS under a name of its own (the recordings are plain HTTP on 127.0.0.1:11434,
# which the TLS probes cannot see): the operator's providers.hosts names it.
OLLAMA_TLS_HOST = "ollama.replay.test"
# Plain HTTP (test_record_plain_http.py): OpenAI-compatible servers on this configured prefix and
# port besides the default loopback ports, and the accepting end of each tracked listener.
PLAIN_HTTP_PREFIX, PLAIN_HTTP_PORT = "127.77.0.0/16", 18000
SESSION_SENSOR_CONFIG = (f"providers:\n  hosts:\n    {OLLAMA_TLS_HOST}: ollama\n"
                         f"capture:\n  plain_http: ['{PLAIN_HTTP_PREFIX}:{PLAIN_HTTP_PORT}']\n"
                         "  plain_http_server: true\n"
                         "  tls_servers: [oisp-gateway]\n")  # tests/clients/tls_gateway.py


@pytest.fixture(scope="session")
def sensor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sensor]:
    """The session's sensor; on teardown it must stop cleanly and have logged no traceback."""
    running = start_sensor(tmp_path_factory.mktemp("sensor"), config=SESSION_SENSOR_CONFIG)
    yield running
    code = running.stop()
    log = "".join(running.log)
    assert code == 0, f"sensor exited with {code}:\n{log}"
    assert "Traceback" not in log, f"sensor logged an exception:\n{log}"


@pytest.fixture(scope="module")
def module_server(test_pki, tmp_path_factory: pytest.TempPathFactory):
    """One replay server for a module's many client runs (each test still gets its own pid)."""
    from tests.support.replay_process import start_replay_server

    with start_replay_server(test_pki, tmp_path_factory.mktemp("replay")) as server:
        yield server


@pytest.fixture(scope="module")
def module_hosts(module_server, tmp_path_factory: pytest.TempPathFactory):
    return module_server.hosts_namespace(tmp_path_factory.mktemp("hosts"))


@pytest.fixture(scope="module")
def h2_server(test_pki, tmp_path_factory: pytest.TempPathFactory):
    """A replay that offers h2 and http/1.1 by ALPN, as the providers' front ends do."""
    from tests.support.replay_process import start_replay_server

    with start_replay_server(test_pki, tmp_path_factory.mktemp("h2-replay"),
                             module="tests.support.h2_replay_server") as server:
        yield server


@pytest.fixture(scope="module")
def h2_hosts(h2_server, tmp_path_factory: pytest.TempPathFactory):
    return h2_server.hosts_namespace(tmp_path_factory.mktemp("h2-hosts"))


# A real `oisp-sensor run` per test (tests/integration/daemon.py), with a replay server, CA and
# hosts namespace in directories every uid can read (its clients run as other users too).
@pytest.fixture(scope="module")
def pki():
    """A test CA in a directory every uid can read (clients run as nobody too)."""
    from tests.support.tls import make_pki

    return make_pki(shared_tmpdir("oisp-pki-"))


@pytest.fixture(scope="module")
def server(pki):
    from tests.support.replay_process import start_replay_server

    with start_replay_server(pki, shared_tmpdir("oisp-replay-")) as srv:
        yield srv


@pytest.fixture(scope="module")
def hosts(server):
    return server.hosts_namespace(shared_tmpdir("oisp-hosts-"))


@pytest.fixture
def daemon(request):
    with running_daemon(getattr(request, "param", {})) as proc:
        yield proc


@pytest.fixture
def bus_daemon():
    """A real daemon on a private system bus with the project's policy: (daemon, bus address)."""
    from tests.support.private_bus import private_bus

    if os.geteuid() != 0:
        cannot_run("the daemon needs root")
    with private_bus() as bus, running_daemon(dbus_address=bus.address) as proc:
        yield proc, bus.address
