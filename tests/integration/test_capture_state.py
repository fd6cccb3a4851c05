"""Capture state for real: one owner of the attached probes, each file probed once.

The attached set is read from the kernel (tests/support/uprobes.py), not from the daemon, so a
probe attached twice or left behind cannot hide behind what the daemon believes.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import threading
import time
from typing import Any, Dict, List, Optional, Set, Tuple

import pytest

from oisp_ctl import protocol
from oisp_ctl.client import SocketClient
from oisp_ctl.protocol import ProtocolError
from oisp_daemon.capture.libraries import file_identity
from tests.integration.daemon import DaemonProcess, shared_tmpdir
from tests.support import clients
from tests.support.oisp_schema import assert_valid_event
from tests.support.synthetic_bodies import deterministic_text, sha256_hex
from tests.support.uprobes import attached_uprobes

pytestmark = pytest.mark.bpf

SYSTEM_LIBSSL = "/usr/lib/x86_64-linux-gnu/libssl.so.3"
LIB_LIBSSL = "/lib/x86_64-linux-gnu/libssl.so.3"
PROBES_PER_FILE = 8  # 6 entry probes + 2 return probes (SSL_read, SSL_read_ex)


@pytest.fixture(autouse=True)
def _merged_usr():
    if os.uname().machine != "x86_64" or not os.path.samefile(SYSTEM_LIBSSL, LIB_LIBSSL):
        pytest.skip("needs x86_64 Debian with merged /usr (/lib -> usr/lib)")


@pytest.fixture
def libs():
    """Three private copies of the system libssl (three files), links to them, for LD_LIBRARY_PATH."""
    root = shared_tmpdir("oisp-libs-")
    out: Dict[str, str] = {}
    for name in ("a", "b", "c"):
        directory = root / name
        directory.mkdir()
        shutil.copyfile(SYSTEM_LIBSSL, directory / "libssl.so.3")
        out[name] = str(directory / "libssl.so.3")
    os.symlink(out["a"], root / "a-symlink.so")
    os.link(out["a"], root / "a-hardlink.so")
    os.symlink(out["b"], root / "b-symlink.so")
    out.update(a_symlink=str(root / "a-symlink.so"), a_hardlink=str(root / "a-hardlink.so"), b_symlink=str(root / "b-symlink.so"))
    yield out
    shutil.rmtree(root, ignore_errors=True)


def openssl_probes(status: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The OpenSSL files status lists as probed for the system or the binary paths. The daemon
    also probes other system TLS libraries and whatever discovery finds in running processes
    (this machine runs other tests): those are not what these tests change."""
    return [p for p in status["probes"] if p["origin"] != "discovered" and any("OpenSSL" in n for n in p["libraries"])]


def kernel_files(daemon: DaemonProcess) -> Dict[Tuple[int, int], List[Tuple[int, bool]]]:
    """(device, inode) -> the (offset, is-return) uprobes the daemon process holds on each file
    of `openssl_probes`, and on any other file reached by a path the tests use."""
    assert daemon.proc is not None
    status = daemon.ctl_json("status")
    others = {file_identity(p["path"]) for p in status["probes"] if p not in openssl_probes(status)}
    files: Dict[Tuple[int, int], List[Tuple[int, bool]]] = {}
    for probe in attached_uprobes(daemon.proc.pid):
        if probe.identity not in others:
            files.setdefault(probe.identity, []).append((probe.offset, probe.ret))
    return files


def assert_each_file_probed_once(files: Dict[Tuple[int, int], List[Tuple[int, bool]]]) -> None:
    for identity, probes in files.items():
        assert len(probes) == len(set(probes)) == PROBES_PER_FILE, f"file {identity} has uprobes {sorted(probes)}"


def one_exact_pair(daemon: DaemonProcess, hosts, pki, seed: str, env: Optional[Dict[str, str]] = None) -> int:
    """A 64 KiB request and a 256 KiB answer: exactly one ai.request and one ai.response, with the
    bodies byte for byte. Returns the client's pid."""
    request_bytes, response_bytes = 64 << 10, 256 << 10
    argv = clients.big_client(pki.ca_file, request_bytes=request_bytes, response_bytes=response_bytes, seed=seed)
    result = clients.run_client(hosts, argv, env=None if env is None else dict(os.environ, **env))
    summary = result.check()
    deadline = time.monotonic() + 60  # the machine may be busy: wait long, fail only on content
    mine: List[Dict[str, Any]] = []
    while time.monotonic() < deadline:
        mine = daemon.tail_json("--pid", str(result.pid))
        if any(e["event_type"] == "ai.response" for e in mine):
            break
        time.sleep(0.2)
    time.sleep(2)  # a duplicate from a second probe would come right behind the first
    mine = daemon.tail_json("--pid", str(result.pid))
    counters = daemon.ctl_json("status")["counters"]
    assert sorted(e["event_type"] for e in mine) == ["ai.request", "ai.response"], (
        [(e["event_type"], e["confidence"]) for e in mine], counters)
    request = next(e for e in mine if e["event_type"] == "ai.request")
    response = next(e for e in mine if e["event_type"] == "ai.response")
    assert request["data"]["messages"][0]["content"] == deterministic_text(request_bytes, seed + "-request")
    content = response["data"]["choices"][0]["message"]["content"]
    assert len(content) == response_bytes and sha256_hex(content.encode()) == summary["content_sha256"]
    assert response["data"]["request_id"] == request["data"]["request_id"]
    for event in (request, response):
        assert event["confidence"]["completeness"] == "full"
        assert_valid_event(event)
    return result.pid


def runtime_paths(daemon: DaemonProcess) -> List[str]:
    path = daemon.dir / "state" / "runtime.json"
    return json.loads(path.read_text()).get("binary_paths", []) if path.exists() else []


# -- a file is probed once ----------------------------------------------------------------------


def test_system_libssl_by_usr_lib_and_symlink_paths_is_probed_once(daemon, hosts, pki):
    link = shared_tmpdir("oisp-link-") / "libssl-link.so"
    link.symlink_to(SYSTEM_LIBSSL)
    for path in (SYSTEM_LIBSSL, LIB_LIBSSL, str(link)):
        result = daemon.ctl("binary-paths", "add", path)
        assert result.returncode != 0, result.stdout
        assert f"{path} is already attached, as {SYSTEM_LIBSSL} (the system libssl); nothing changed" in result.stderr
    status = daemon.ctl_json("status")
    assert [p["path"] for p in openssl_probes(status)] == [SYSTEM_LIBSSL]
    assert status["binary_paths"] == [] and runtime_paths(daemon) == []
    files = kernel_files(daemon)
    assert set(files) == {file_identity(SYSTEM_LIBSSL)}
    assert_each_file_probed_once(files)
    one_exact_pair(daemon, hosts, pki, "three-paths")


def test_a_library_by_path_symlink_and_hard_link_is_probed_once(daemon, hosts, pki, libs):
    added = daemon.ctl_json("binary-paths", "add", libs["a"])
    assert added == [libs["a"]]
    for other in (libs["a_symlink"], libs["a_hardlink"]):
        result = daemon.ctl("binary-paths", "add", other)
        assert result.returncode != 0
        assert f"{other} is already attached, as {libs['a']} (from oisp-ctl binary-paths add; the same file)" in result.stderr
        removed = daemon.ctl("binary-paths", "remove", other)
        assert removed.returncode != 0 and "is not among the binary paths" in removed.stderr
    files = kernel_files(daemon)
    assert set(files) == {file_identity(SYSTEM_LIBSSL), file_identity(libs["a"])}
    assert_each_file_probed_once(files)
    assert runtime_paths(daemon) == [libs["a"]]
    # The client loads the copy (LD_LIBRARY_PATH): only its probes can see this exchange.
    via_copy = {"LD_LIBRARY_PATH": os.path.dirname(libs["a"])}
    one_exact_pair(daemon, hosts, pki, "copy-a", env=via_copy)
    assert daemon.ctl_json("binary-paths", "remove", libs["a"]) == []
    assert set(kernel_files(daemon)) == {file_identity(SYSTEM_LIBSSL)}
    # (A process mapping the copy later gets it probed by discovery: test_record_tls_libraries.py.)
    one_exact_pair(daemon, hosts, pki, "after-remove")


# -- one owner of capture state -----------------------------------------------------------------


def test_interleaved_binary_path_changes_and_sighups_agree_at_the_end(daemon, hosts, pki, libs):
    """200 add/remove calls from four clients (three on the socket, one through oisp-ctl) race 50
    SIGHUPs, some of which move library c in and out of the configuration. Afterwards the kernel's
    uprobes, runtime.json and status say the same, and capture still works."""
    pool = [libs[k] for k in ("a", "a_symlink", "a_hardlink", "b", "b_symlink", "c")] + [SYSTEM_LIBSSL, LIB_LIBSSL]
    dropin = daemon.dir / "config.d" / "50-paths.yaml"
    outcomes: List[str] = []
    failures: List[str] = []
    lock = threading.Lock()

    def record(kind: str, path: str, outcome: str) -> None:
        with lock:
            outcomes.append(outcome)
            if outcome not in ("ok", protocol.E_CONFLICT, protocol.E_NOT_FOUND):
                failures.append(f"{kind} {path}: {outcome}")

    def socket_client(seed: int, count: int) -> None:
        rng = random.Random(seed)
        with SocketClient(daemon.socket, timeout=60) as client:
            for _ in range(count):
                kind, path = rng.choice(("add", "remove")), rng.choice(pool)
                op = protocol.OP_BINARY_PATHS_ADD if kind == "add" else protocol.OP_BINARY_PATHS_REMOVE
                try:
                    client.call(op, {"path": path})
                    record(kind, path, "ok")
                except ProtocolError as exc:
                    record(kind, path, exc.code if exc.code in (protocol.E_CONFLICT, protocol.E_NOT_FOUND) else f"{exc.code}: {exc.message}")

    def ctl_client(seed: int, count: int) -> None:
        rng = random.Random(seed)
        for _ in range(count):
            kind, path = rng.choice(("add", "remove")), rng.choice(pool)
            result = daemon.ctl("binary-paths", kind, path)
            if result.returncode == 0:
                record(kind, path, "ok")
            elif "already" in result.stderr or "comes from the configuration" in result.stderr:
                record(kind, path, protocol.E_CONFLICT)
            elif "is not among the binary paths" in result.stderr:
                record(kind, path, protocol.E_NOT_FOUND)
            else:
                record(kind, path, f"exit {result.returncode}: {result.stderr.strip()}")

    def sighups() -> None:
        for i in range(50):
            if i % 10 == 5:
                if dropin.exists():
                    dropin.unlink()
                else:
                    dropin.write_text(f"binary_paths: [{libs['c']}]\n")
            daemon.signal(signal.SIGHUP)
            time.sleep(0.08)

    threads = [threading.Thread(target=socket_client, args=(i, 55)) for i in range(3)]
    threads.append(threading.Thread(target=ctl_client, args=(99, 35)))
    threads.append(threading.Thread(target=sighups))
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
    assert len(outcomes) == 200 and outcomes.count("ok") >= 20, outcomes

    # One last reload whose end we wait for: nothing is in flight when we compare.
    mark = len(daemon.notify.messages)
    daemon.signal(signal.SIGHUP)
    daemon.notify.wait_for("READY=1", after=daemon.notify.wait_for("RELOADING=1", after=mark) + 1)

    status = daemon.ctl_json("status")
    runtime = runtime_paths(daemon)
    config_paths = [libs["c"]] if dropin.exists() else []
    assert status["last_reload"]["ok"] is True
    assert status["binary_paths"] == sorted(set(runtime) | set(config_paths))
    runtime_ids = [file_identity(p) for p in runtime]
    assert len(set(runtime_ids)) == len(runtime_ids), f"two runtime paths to one file: {runtime}"
    assert file_identity(SYSTEM_LIBSSL) not in runtime_ids
    wanted: Set[Tuple[int, int]] = {file_identity(SYSTEM_LIBSSL)} | {file_identity(p) for p in runtime + config_paths}
    files = kernel_files(daemon)
    assert set(files) == wanted
    assert {file_identity(p["path"]) for p in openssl_probes(status)} == wanted
    assert len(openssl_probes(status)) == len(wanted)
    assert_each_file_probed_once(files)
    assert "Traceback" not in daemon.log()
    one_exact_pair(daemon, hosts, pki, "after-the-storm")


# -- record --uid: the kernel's uid filter ------------------------------------------------------


def test_record_uid_captures_only_that_users_processes(hosts, pki, tmp_path):
    from tests.integration.conftest import start_sensor
    from tests.integration.daemon import NOBODY, as_user

    sensor = start_sensor(tmp_path, ["--uid", str(NOBODY)])
    try:
        root = clients.run_client(hosts, clients.openai_client("openai-chat-001", pki.ca_file))
        root.check()
        nobody = clients.run_client(hosts, as_user(clients.openai_client("openai-chat-002", pki.ca_file)))
        nobody.check()
        events = sensor.wait_for_types(nobody.pid, ai_request=1, ai_response=1)
        assert {e["actor"]["uid"] for e in events} == {NOBODY}
        assert sensor.events_of(root.pid) == []
        assert {e["actor"]["uid"] for e in sensor.events()} == {NOBODY}  # nobody else's, either
    finally:
        assert sensor.stop() == 0
    closing = sensor.log[-1]
    assert closing.startswith("oisp-sensor: stopped; ") and "ring drops" in closing and "decoder resyncs" in closing, closing
