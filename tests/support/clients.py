"""Build and run the real clients of the integration tests (SDK programs in tests/clients/, curl).

Every client runs inside a HostsNamespace, so it reaches the replay server under the provider's
real host name, and its pid (the pid the sensor reports) is part of the result.
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from tests.support.hostsns import HostsNamespace
from tests.support.llm_fixtures import Fixture
from tests.support.paths import REPO_ROOT

CLIENTS_DIR = REPO_ROOT / "tests" / "clients"
# The clients must run on the system CPython (linked to the system libssl the sensor hooks) with
# the SDKs installed: the project venv, made with --system-site-packages from /usr/bin/python3.
VENV_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"

# Request headers of a recording that curl must not copy: framing, hop-by-hop, and the ones curl
# sets itself (--compressed sets Accept-Encoding).
CURL_SKIPPED_HEADERS = frozenset({
    "host", "content-length", "connection", "keep-alive", "transfer-encoding", "accept-encoding", "expect",
})
REDACTED = "REDACTED"
CURL_TEST_KEY = "sk-replay-test-curl-0123456789"


@dataclass
class ClientResult:
    """How a client run ended; ``summary`` is its last stdout line parsed as JSON (if any)."""

    argv: List[str]
    pid: int
    returncode: int
    stdout: str
    stderr: str
    summary: Optional[Dict[str, Any]]

    def check(self) -> Dict[str, Any]:
        """The summary of a run that succeeded; AssertionError with the client's stderr otherwise."""
        assert self.returncode == 0 and self.summary is not None, (
            "client %s failed (exit %d):\n%s" % (self.argv, self.returncode, self.stderr[-4000:]))
        return self.summary


def _last_json_line(text: str) -> Optional[Dict[str, Any]]:
    for line in reversed(text.strip().splitlines()):
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        return parsed if isinstance(parsed, dict) else None
    return None


def python_client(script: str, *args: Any, python: Path = VENV_PYTHON) -> List[str]:
    """argv running ``tests/clients/<script>`` with the venv's Python."""
    return [str(python), str(CLIENTS_DIR / script)] + [str(arg) for arg in args]


def openai_client(fixture: str, ca_file: Path, *, raw: bool = False, fixture_header: bool = True,
                  http2: bool = False) -> List[str]:
    """argv of the openai SDK client replaying ``fixture`` (over HTTP/2 if the server offers it: `http2`)."""
    flags = (["--raw"] if raw else []) + ([] if fixture_header else ["--no-fixture-header"]) + (["--http2"] if http2 else [])
    return python_client("openai_client.py", "--ca", ca_file, "--fixture", fixture, *flags)


def anthropic_client(fixture: str, ca_file: Path, *, raw: bool = False, fixture_header: bool = True,
                     http2: bool = False) -> List[str]:
    """argv of the anthropic SDK client replaying ``fixture`` (over HTTP/2 if the server offers it: `http2`)."""
    flags = (["--raw"] if raw else []) + ([] if fixture_header else ["--no-fixture-header"]) + (["--http2"] if http2 else [])
    return python_client("anthropic_client.py", "--ca", ca_file, "--fixture", fixture, *flags)


def concurrent_client(ca_file: Path, *, count: int = 20, run_id: str = "run", stream: bool = False) -> List[str]:
    """argv of the AsyncOpenAI client sending ``count`` paired chat completions on one event loop."""
    flags = ["--stream"] if stream else []
    return python_client("openai_concurrent.py", "--ca", ca_file, "--count", count, "--run-id", run_id, *flags)


def big_client(ca_file: Path, *, request_bytes: int = 1 << 20, response_bytes: int = 4 << 20,
               seed: str = "big") -> List[str]:
    """argv of the openai SDK client sending a big request and getting a big response."""
    return python_client("openai_big.py", "--ca", ca_file, "--request-bytes", request_bytes,
                         "--response-bytes", response_bytes, "--seed", seed)


def start_client(namespace: HostsNamespace, argv: Sequence[str], env: Optional[Mapping[str, str]] = None,
                 cwd: Optional[Path] = None) -> "subprocess.Popen[str]":
    """Start a client in the hosts namespace without waiting (``.pid`` is the client's pid)."""
    return namespace.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                           text=True, env=None if env is None else dict(env), cwd=str(cwd or REPO_ROOT))


def finish_client(process: "subprocess.Popen[str]", timeout: float = 120.0) -> ClientResult:
    """Wait for a started client and collect its result (killed on timeout, then raises)."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return ClientResult(list(process.args), process.pid, process.returncode, stdout, stderr, _last_json_line(stdout))


def run_client(namespace: HostsNamespace, argv: Sequence[str], timeout: float = 120.0,
               env: Optional[Mapping[str, str]] = None) -> ClientResult:
    """Run a client to completion in the hosts namespace."""
    return finish_client(start_client(namespace, argv, env=env), timeout)


@dataclass
class CurlCommand:
    """A curl command line plus the files it reads and writes."""

    argv: List[str]
    body_file: Optional[Path]
    output_file: Path
    headers_file: Path

    def output(self) -> bytes:
        """The response body curl wrote (decoded when ``--compressed`` was used)."""
        return self.output_file.read_bytes()


# A SigV4 Authorization header of the shape boto3 sends (the signature is not checked by the replay).
CURL_SIGV4 = ("AWS4-HMAC-SHA256 Credential=AKIAREPLAYTEST000000/20250101/us-east-1/bedrock/aws4_request, "
              "SignedHeaders=host;x-amz-date, Signature=" + "5" * 64)
CURL_ACCESS_KEY_ID = "AKIAREPLAYTEST000000"


def curl_credential(fixture: Fixture, header: str) -> str:
    """The test credential for a redacted header: a bearer token, a bare key, or for AWS a SigV4
    Authorization whose access key id the sensor reports."""
    if header.lower() != "authorization":
        return CURL_TEST_KEY
    return CURL_SIGV4 if fixture.host.endswith(".amazonaws.com") else "Bearer " + CURL_TEST_KEY


def curl_request_headers(fixture: Fixture) -> List[str]:
    """The recording's request headers as curl ``-H`` values, credentials replaced by a test key."""
    values = []
    for name, value in fixture.request_headers.items():
        if name.lower() in CURL_SKIPPED_HEADERS:
            continue
        if value == REDACTED:
            value = curl_credential(fixture, name)
        values.append("%s: %s" % (name, value))
    return values


def curl_command(fixture: Fixture, ca_file: Path, workdir: Path, *, url: Optional[str] = None,
                 compressed: bool = True, fixture_header: bool = True, extra_headers: Sequence[str] = (),
                 curl: str = "curl") -> CurlCommand:
    """curl replaying a recorded request over HTTP/1.1 (``--data-binary @file``, ``--cacert``).

    stdout gets curl's ``-w '%{json}'`` transfer report (response_code, size_download, ...).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    output_file = workdir / ("%s.curl-body" % fixture.name)
    headers_file = workdir / ("%s.curl-headers" % fixture.name)
    argv = [curl, "-sS", "--http1.1", "--cacert", str(ca_file), "-o", str(output_file), "-D", str(headers_file),
            "-w", "%{json}", "-X", fixture.method]
    if compressed:
        argv.append("--compressed")
    for header in curl_request_headers(fixture) + list(extra_headers):
        argv += ["-H", header]
    if fixture_header:
        argv += ["-H", "X-Fixture: " + fixture.name]
    body_file = None
    if fixture.request_body:
        body_file = workdir / ("%s.request-body" % fixture.name)
        body_file.write_bytes(fixture.request_body)
        argv += ["--data-binary", "@" + str(body_file)]
    argv.append(url or (fixture.url.split("#", 1)[0]))
    return CurlCommand(argv, body_file, output_file, headers_file)
