"""TLS libraries other than the system libssl, found with no configuration (capture/discovery.py):
each real client sends a recorded OpenAI request to the replay server, and its ai.request /
ai.response pair must carry the recording's model, usage and text.

The session sensor started before any of these clients, so each is found the way a new process
is in production: from the exec and mmap records the ring reports.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from tests.integration.conftest import cannot_run
from tests.support import clients
from tests.support.chroot import copy_with_libraries
from tests.support.llm_fixtures import load_fixtures
from tests.support.node import static_node
from tests.support.oisp_schema import assert_valid_event
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.bpf

FIXTURE = load_fixtures()["openai-chat-001"]
CLIENTS = REPO_ROOT / "tests" / "clients"
PYENV = Path("/root/.pyenv/versions")
SYSTEM_LIBSSL = "/usr/lib/x86_64-linux-gnu/libssl.so.3"


def check_exchange(sensor, pid: int) -> None:
    events = sensor.wait_for_types(pid, ai_request=1, ai_response=1)
    request = next(e for e in events if e["event_type"] == "ai.request")
    response = next(e for e in events if e["event_type"] == "ai.response")
    for event in (request, response):
        assert_valid_event(event)
    expect = FIXTURE.expect
    assert request["data"]["model"]["id"] == expect["request_model"]
    assert response["data"]["model"]["id"] == expect["model"]
    assert response["data"]["usage"]["prompt_tokens"] == expect["input_tokens"]
    assert response["data"]["usage"]["completion_tokens"] == expect["output_tokens"]
    assert response["data"]["choices"][0]["message"]["content"][:40] == expect["text_prefix"]
    assert response["data"]["request_id"] == request["data"]["request_id"]


@pytest.fixture(scope="module")
def body_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bodies") / "openai-chat-001.json"
    path.write_bytes(FIXTURE.request_body)
    return path


def stdlib_argv(python: str, body_file: Path, ca_file: Path) -> List[str]:
    return [python, str(CLIENTS / "stdlib_https.py"), FIXTURE.url, str(body_file), str(ca_file), FIXTURE.name,
            "Authorization: Bearer sk-replay-test-0123456789abcdef"]


def node_argv(node: str, body_file: Path) -> List[str]:
    return [node, str(CLIENTS / "node_fetch.js"), FIXTURE.url, str(body_file), FIXTURE.name,
            "Authorization: Bearer sk-replay-test-0123456789abcdef"]


def pyenv_python() -> str:
    versions = sorted(PYENV.glob("3.1[0-9]*/bin/python3")) if PYENV.is_dir() else []
    if not versions:
        cannot_run("no pyenv Python in /root/.pyenv/versions")
    return str(versions[-1])


def test_a_pyenv_python_is_captured(sensor, module_hosts, test_pki, body_file):
    result = clients.run_client(module_hosts, stdlib_argv(pyenv_python(), body_file, test_pki.ca_file))
    assert result.check()["status"] == 200
    check_exchange(sensor, result.pid)


def test_a_python_given_a_private_libssl_copy_by_ld_library_path_is_captured(sensor, module_hosts, test_pki,
                                                                              body_file, tmp_path):
    """The copy is a file of its own, found when the first process maps it. That process loads
    libssl (dlopen) milliseconds before its request, which may beat the attach (the note says
    so); the next process using the copy finds it probed and is captured from its first call."""
    libdir = tmp_path / "vendored"
    libdir.mkdir()
    shutil.copyfile(SYSTEM_LIBSSL, libdir / "libssl.so.3")  # a new inode
    env = dict(os.environ, LD_LIBRARY_PATH=str(libdir))
    argv = stdlib_argv("/usr/bin/python3", body_file, test_pki.ca_file)
    assert clients.run_client(module_hosts, argv, env=env).check()["status"] == 200
    sensor.wait_for(lambda _: str(libdir / "libssl.so.3") in sensor_probes(sensor), timeout=20)
    result = clients.run_client(module_hosts, argv, env=env)
    assert result.check()["status"] == 200
    check_exchange(sensor, result.pid)
    assert sensor_probes(sensor).count(str(libdir / "libssl.so.3")) == 1  # attached once


def sensor_probes(sensor) -> str:
    """What the sensor logged about the files it probes."""
    return "".join(line for line in sensor.log if "probing" in line)


def probed_now(sensor, path: str) -> bool:
    """Whether the sensor's latest word on `path` is that it probes it (not that it let it go)."""
    said = [line for line in sensor.log if f"probing {path}" in line]
    return bool(said) and "no longer probing" not in said[-1]


@pytest.mark.parametrize("which", ["upstream", "system"])
def test_node_fetch_with_no_configuration_is_captured(sensor, module_hosts, test_pki, body_file, which):
    """A Node the sensor does not probe yet (new to this session's sensor, or released after
    minutes unused) is found at its exec; scanning and attaching take 0.07 s, more when discovery
    is busy with a big file, so that first run may lose the race. Once it is probed, a run is
    captured from its first call."""
    node = static_node() if which == "upstream" else shutil.which("node")
    if node is None:
        cannot_run("no node on PATH (scripts/setup.sh installs Debian's nodejs)")
    env = dict(os.environ, NODE_EXTRA_CA_CERTS=str(test_pki.ca_file))
    assert clients.run_client(module_hosts, node_argv(node, body_file), env=env).check()["status"] == 200
    sensor.wait_for(lambda _: probed_now(sensor, os.path.realpath(node)), timeout=20)
    result = clients.run_client(module_hosts, node_argv(node, body_file), env=env)
    assert result.check()["status"] == 200
    check_exchange(sensor, result.pid)


def test_gnutls_cli_with_a_request_on_stdin_is_captured(sensor, module_hosts, test_pki):
    body = FIXTURE.request_body
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer sk-replay-test-0123456789abcdef\r\nX-Fixture: {FIXTURE.name}\r\n"
        f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    argv = ["gnutls-cli", "--x509cafile", str(test_pki.ca_file), "--port", "443", "api.openai.com"]
    proc = module_hosts.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # as a person would: type once the session is up; stdin stays open until the server has
    # answered and closed, since gnutls-cli ends the session at the end of its input
    for line in proc.stdout:
        if line.startswith(b"- Simple Client Mode"):
            break
    proc.stdin.write(request)
    proc.stdin.flush()
    try:
        out = proc.stdout.read()
        proc.wait(timeout=60)
    finally:
        proc.stdin.close()
        proc.kill()
    err = proc.stderr.read()
    assert b"HTTP/1.1 200" in out, err.decode(errors="replace")[-2000:]
    check_exchange(sensor, proc.pid)


@pytest.mark.parametrize("library, marker", [
    ("libcurl-gnutls.so.4", "GnuTLS"),  # GnuTLS: libcurl3-gnutls (Debian ships no curl binary on it)
    ("libcurl-nss.so.4", "NSS/"),  # NSS through NSPR's PR_Write/PR_Read, the CA through NSS's PEM module
])
def test_libcurl_on_another_tls_library_is_captured(sensor, module_hosts, test_pki, body_file, library, marker):
    libcurl = Path("/usr/lib/x86_64-linux-gnu") / library
    if not libcurl.exists():
        cannot_run(f"{libcurl} is not installed (scripts/setup.sh installs it)")
    argv = ["/usr/bin/python3", str(CLIENTS / "libcurl_post.py"), str(libcurl), FIXTURE.url, str(body_file),
            str(test_pki.ca_file), f"X-Fixture: {FIXTURE.name}", "Authorization: Bearer sk-replay-test-0123456789abcdef"]
    result = clients.run_client(module_hosts, argv)
    summary = result.check()
    assert summary["status"] == 200 and marker in summary["tls"]
    check_exchange(sensor, result.pid)


def test_a_chroot_whose_libssl_exists_only_under_proc_pid_root_is_captured(sensor, module_server, test_pki, tmp_path):
    """curl in a chroot, in a mount namespace of its own where a tmpfs holds the libssl it loads:
    the file exists nowhere the daemon's namespace shows, as in a container."""
    root = tmp_path / "jail"
    copy_with_libraries("/usr/bin/curl", root)
    (root / "opt" / "tls").mkdir(parents=True)
    (root / "dev").mkdir()  # curl -o /dev/null writes a plain file there
    (root / "ca.pem").write_bytes(Path(test_pki.ca_file).read_bytes())
    (root / "body.json").write_bytes(FIXTURE.request_body)
    curl = ["/usr/bin/env", "LD_LIBRARY_PATH=/opt/tls", "/usr/bin/curl", "-sS", "--http1.1", "--cacert", "/ca.pem",
            "--resolve", f"api.openai.com:443:{module_server.host}", "-o", "/dev/null", "-w", "%{http_code}",
            "-H", "Content-Type: application/json", "-H", f"X-Fixture: {FIXTURE.name}",
            "-H", "Authorization: Bearer sk-replay-test-0123456789abcdef",
            "--data-binary", "@/body.json", FIXTURE.url]
    copy_with_libraries("/usr/bin/env", root)
    # Every file of the jail is new to the sensor; a first curl gets them found (its own request
    # may beat the attach, which takes from 50 ms to over a second on a busy machine), the second
    # (exec'd: the pid the test knows) starts once the sensor says it probes the copy, and must be
    # captured.
    go = root / "go"
    script = (f"mount -t tmpfs tls {root}/opt/tls && cp {SYSTEM_LIBSSL} {root}/opt/tls/ && "
              f'chroot {root} "$@" >/dev/null && while [ ! -e {go} ]; do sleep 0.05; done && exec chroot {root} "$@"')
    probed = "/opt/tls/libssl.so.3 (as /proc/"
    before = sensor_probes(sensor).count(probed)
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *curl],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sensor.wait_for(lambda _: sensor_probes(sensor).count(probed) > before, timeout=30)
    finally:
        go.touch()
    out, err = proc.communicate(timeout=60)
    assert out == "200", err
    assert not (root / "opt" / "tls" / "libssl.so.3").exists()
    # one pid all along for the second curl: unshare, sh, chroot, env and curl each exec the next
    check_exchange(sensor, proc.pid)


# -- oisp-sensor tls-scan on the same binaries ---------------------------------------------------


def tls_scan(*targets: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oisp_daemon.cli", "tls-scan", *targets], cwd=str(REPO_ROOT),
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("which", ["upstream", "system"])
def test_tls_scan_of_node_names_its_openssl(which):
    node = static_node() if which == "upstream" else shutil.which("node")
    done = tls_scan(node)
    if which == "system" and "no TLS library found" in tls_scan("--all", node).stdout:
        # Debian's nodejs links the system libssl: its TLS is in the library, not the executable
        assert done.returncode == 1
        assert "libssl.so.3" in subprocess.run(["ldd", node], capture_output=True, text=True).stdout
        return
    assert done.returncode == 0, done.stderr
    assert "OpenSSL (linked into the executable) [openssl]: probed" in done.stdout
    for point in ("SSL_write", "SSL_read_ex", "SSL_set_fd", "SSL_free"):
        assert point in done.stdout
    assert "by symbol" in done.stdout


def test_tls_scan_of_gnutls_and_a_libssl_copy(tmp_path):
    copy = tmp_path / "libssl.so.3"
    shutil.copyfile(SYSTEM_LIBSSL, copy)
    done = tls_scan("/usr/lib/x86_64-linux-gnu/libgnutls.so.30", str(copy))
    assert done.returncode == 0, done.stderr
    assert "GnuTLS (libgnutls.so.30, shared library) [gnutls]: probed" in done.stdout
    assert "gnutls_record_send" in done.stdout and "gnutls_record_recv" in done.stdout
    assert f"{copy}\n  OpenSSL (libssl.so.3, shared library) [openssl]: probed" in done.stdout


def test_tls_scan_of_a_pyenv_python_process_shows_the_libssl_it_maps():
    python = pyenv_python()
    proc = subprocess.Popen([python, "-c", "import ssl, time; print('up', flush=True); time.sleep(30)"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
        done = tls_scan(str(proc.pid))
    finally:
        proc.kill()
        proc.wait()
    assert done.returncode == 0, done.stderr
    assert f"{SYSTEM_LIBSSL}\n  OpenSSL (libssl.so.3, shared library) [openssl]: probed" in done.stdout
    assert "other mapped files with no TLS library" in done.stdout  # its executable, libc, _ssl's module...


def test_tls_scan_of_a_binary_without_tls_exits_1():
    done = tls_scan("/bin/true")
    assert done.returncode == 1 and "no TLS library" in done.stdout
