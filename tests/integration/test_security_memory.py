"""Issue 6, memory: an unprivileged user cannot grow the root daemon's memory with large prompts
and tails that never read, and cannot hide others' capture loss in the kernel's loss counter.

Everything runs for real: the daemon with its eBPF probes, curl as uid 65534 through the replay
server, tails as uid 65534 and as a group member on the real control socket. Memory is the
daemon's RSS read from /proc, bounded by what the configured byte budgets allow.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Dict, List

import pytest

from oisp_daemon.capture.reader import QUEUE_BYTES
from tests.integration.daemon import NOBODY, NOGROUP, USER_GID, DaemonProcess, as_user, shared_tmpdir
from tests.support.paths import REPO_ROOT
from tests.support.synthetic_bodies import BIG_CHAT, deterministic_text

pytestmark = pytest.mark.bpf

MIB = 1 << 20
PROMPT_BYTES = 4 * MIB
PROMPTS = 20
TAILS = 40  # non-reading tails: half as uid 65534, half as a group member
TAILS_PER_CONNECTION = 4  # the socket's limit per connection
TAIL_BUDGETS = {"replay_bytes": 8 * MIB, "max_buffer_bytes": 8 * MIB, "total_buffer_bytes": 16 * MIB}
STATUS_TIMEOUT_S = 15.0

# Tails that never read: runs as the attacking uid, opens connections with tiny receive buffers,
# starts TAILS_PER_CONNECTION tails on each, says "ready" and then reads nothing until told to
# on stdin; it then reads the first connection until it has been quiet for a while and prints
# what it got.
TAILER = r"""
import json, socket, sys
from oisp_ctl import protocol
path, conns, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
streams = []
for c in range(conns):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(path)
    f = s.makefile("rb")
    s.sendall(protocol.encode(protocol.request(0, "hello", {"protocol": protocol.PROTOCOL_VERSION,
                                                            "client": "memory-attack/1"})))
    reply = json.loads(f.readline())
    assert reply["ok"], reply
    for t in range(per):
        s.sendall(protocol.encode(protocol.request(t + 1, "tail", {})))
    streams.append((s, f))
print("ready", flush=True)
sys.stdin.readline()
s, f = streams[0]
s.settimeout(10)
seen = {"events": 0, "dropped": 0, "errors": []}
try:
    while True:
        line = f.readline()
        if not line:
            break
        msg = json.loads(line)
        if "event" in msg:
            seen["events"] += 1
        elif "dropped" in msg:
            seen["dropped"] += msg["dropped"]
        elif msg.get("ok") is False:
            seen["errors"].append(msg["error"])
except (socket.timeout, OSError, ValueError):
    pass  # quiet for a while, or the daemon went away mid-line
print(json.dumps(seen), flush=True)
sys.stdin.readline()
"""


def rss(pid: int) -> int:
    """Resident set size of a process in bytes, from /proc."""
    with open("/proc/%d/status" % pid) as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for pid %d" % pid)


@pytest.fixture(scope="module")
def prompt_file() -> Path:
    """A 4 MiB chat request for the @big-chat replay (a small answer), readable by uid 65534."""
    path = shared_tmpdir("oisp-prompt-") / "prompt.json"
    body = {"model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": deterministic_text(PROMPT_BYTES, "flood")}]}
    path.write_text(json.dumps(body))
    path.chmod(0o644)
    return path


def send_prompts(hosts, pki, prompt_file: Path, count: int, uid: int = NOBODY) -> None:
    """`count` chat completions of the prompt, each a curl as `uid`, one after another."""
    argv = as_user(["curl", "-sS", "--http1.1", "--cacert", str(pki.ca_file), "-o", "/dev/null",
                    "-w", "%{http_code}\\n", "-H", "Content-Type: application/json",
                    "-H", "Authorization: Bearer sk-memory-test-0123456789abcdef",
                    "-H", "X-Fixture: " + BIG_CHAT, "-H", "X-Replay-Response-Bytes: 1024",
                    "--data-binary", "@" + str(prompt_file),
                    "https://api.openai.com/v1/chat/completions"], uid)
    for _ in range(count):
        result = hosts.run(argv, timeout=120)
        assert result.returncode == 0 and result.stdout.strip() == b"200", result


class StatusProbe:
    """Root's `status` over the socket, again and again, and the daemon's RSS beside it."""

    def __init__(self, daemon: DaemonProcess) -> None:
        self.daemon = daemon
        self.pid = daemon.proc.pid
        self.slowest = 0.0
        self.calls = 0
        self.failures: List[str] = []
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "StatusProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, rss(self.pid))
            started = time.monotonic()
            try:
                result = self.daemon.ctl("status", "--json", timeout=STATUS_TIMEOUT_S)
                if result.returncode != 0:
                    self.failures.append(result.stderr)
            except subprocess.TimeoutExpired:
                self.failures.append("status took more than %ss" % STATUS_TIMEOUT_S)
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.calls += 1
            self._stop.wait(0.3)


def start_tailer(daemon: DaemonProcess, connections: int, uid: int, gid: int) -> subprocess.Popen:
    proc = subprocess.Popen(as_user(["/usr/bin/python3", "-c", TAILER, daemon.socket, str(connections),
                                     str(TAILS_PER_CONNECTION)], uid, gid),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(REPO_ROOT),
                            env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    line = proc.stdout.readline()
    assert line.strip() == "ready", "tailer did not start: %r" % line
    return proc


def tailer_report(proc: subprocess.Popen) -> Dict[str, int]:
    proc.stdin.write("read\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def settled(daemon: DaemonProcess, responses: int, quiet_s: float = 3, timeout: float = 90) -> Dict[str, int]:
    """Status counters once the capture queue is empty and the pipeline has made `responses` AI
    responses, or has made no AI event for `quiet_s` (data dropped for a uid over its share makes
    fewer), or after `timeout`: the daemon is done with the flood, and whatever it still holds it
    keeps. AI events, not records: the probes see the whole machine, whose TLS never stops."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while True:
        counters = daemon.ctl_json("status")["counters"]
        progress = (counters["ai_requests"], counters["ai_responses"], counters["queue_bytes"])
        if progress != last:
            last, since = progress, time.monotonic()
        done = counters["ai_responses"] >= responses or time.monotonic() - since > quiet_s
        if (counters["queue_bytes"] == 0 and done) or time.monotonic() > deadline:
            return counters
        time.sleep(0.5)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("daemon", [{"tail": TAIL_BUDGETS}], indirect=True)
def test_large_prompts_and_non_reading_tails_stay_within_the_byte_budgets(daemon, hosts, pki, prompt_file):
    pid = daemon.proc.pid
    # warm up: the first large request sizes the allocator's arenas and the decoders' buffers
    send_prompts(hosts, pki, prompt_file, 2)
    responses = settled(daemon, 2)["ai_responses"]
    baseline = rss(pid)
    # tails that never read: half as uid 65534 (its own events), half as a group member (everything)
    per_tailer = TAILS // 2 // TAILS_PER_CONNECTION
    tailers = [start_tailer(daemon, per_tailer, NOBODY, NOGROUP), start_tailer(daemon, per_tailer, NOBODY, USER_GID)]
    try:
        assert daemon.ctl_json("status")["counters"]["tail_subscribers"] == TAILS
        with StatusProbe(daemon) as probe:
            started = time.monotonic()
            send_prompts(hosts, pki, prompt_file, PROMPTS)
            flood_s = time.monotonic() - started
            status = settled(daemon, responses + PROMPTS)
            settle_s = time.monotonic() - started - flood_s
        during = rss(pid)
        reports = [tailer_report(t) for t in tailers]
    finally:
        for t in tailers:
            t.kill()
            t.wait()
    time.sleep(2)  # the daemon sees the tails go
    after = rss(pid)

    # What the budgets let the daemon hold once it is done (the replay ring, all tails together)
    # plus the working set of one request (the decoder's body, the parsed prompt, the event, its
    # redacted copy, its JSON): a small multiple of that, never a count of events times their size.
    # While the flood runs, the capture queue (bounded in bytes too) may be full on top of it.
    budgets = TAIL_BUDGETS["replay_bytes"] + TAIL_BUDGETS["total_buffer_bytes"]
    working_set = 8 * PROMPT_BYTES
    bound = 2 * (budgets + working_set)
    peak_bound = bound + 2 * QUEUE_BYTES
    report = ("baseline %.0f MiB, peak %+.0f MiB (bound %+.0f MiB), with tails when done %+.0f MiB, "
              "after %+.0f MiB (bound %+.0f MiB); root's status: %d calls, slowest %.1f s; flood %.0f s, "
              "settling %.0f s"
              % (baseline / MIB, (probe.peak_rss - baseline) / MIB, peak_bound / MIB,
                 (during - baseline) / MIB, (after - baseline) / MIB, bound / MIB, probe.calls, probe.slowest,
                 flood_s, settle_s))
    print(report)
    assert probe.peak_rss - baseline < peak_bound, report
    assert during - baseline < bound, report
    assert after - baseline < bound, report
    # root was answered all along
    assert probe.calls >= 5 and not probe.failures, probe.failures
    assert probe.slowest < STATUS_TIMEOUT_S
    # the loss is reported: in status, and to the tail that starts reading
    assert status["tail_dropped"] > 0, status
    assert status["tail_buffered_bytes"] <= TAIL_BUDGETS["total_buffer_bytes"] + 2 * PROMPT_BYTES
    assert status["tail_replay_bytes"] <= TAIL_BUDGETS["replay_bytes"]
    for seen in reports:
        assert seen["errors"] == [] and seen["events"] > 0 and seen["dropped"] > 0, (reports, status)
    assert daemon.ctl_json("status")["counters"]["tail_subscribers"] == 0


@pytest.mark.parametrize("daemon", [{"capture": {"ring_buffer_mb": 1}}], indirect=True)
def test_ring_overflow_from_one_uid_is_attributed_to_that_uid(daemon, hosts, pki, prompt_file):
    send_prompts(hosts, pki, prompt_file, 5)
    deadline = time.monotonic() + 10
    while True:
        counters = daemon.ctl_json("status", uid=NOBODY)["counters"]
        if counters["lost_bytes"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    by_uid = counters["lost_by_uid"]
    assert counters["lost_bytes"] > 0, counters  # a 4 MiB write cannot fit a 1 MiB ring
    assert by_uid[str(NOBODY)]["bytes"] > 0, by_uid
    # every lost byte is attributed (the map is far from full): to the flood's uid, or to root,
    # whose replay server reads the same prompts through the probed libssl
    assert sum(v["bytes"] for v in by_uid.values()) == counters["lost_bytes"]
    assert sum(v["records"] for v in by_uid.values()) == counters["ring_drops"]
    assert set(by_uid) <= {str(NOBODY), "0"}, by_uid
    # and oisp-ctl shows it
    text = daemon.ctl("status").stdout
    assert re.search(r"lost_by_uid=\(.*\b%d=\(bytes=[1-9]" % NOBODY, text), text
