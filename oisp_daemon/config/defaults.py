"""Built-in configuration: what the sensor does with no config file at all."""
from __future__ import annotations

import copy
from typing import Any, Dict

_DEFAULTS: Dict[str, Any] = {
    "capture": {
        "ring_buffer_mb": 16,
        # Generous: a 4 MiB completion or a long SSE stream fits many times over, while a
        # pathological upload cannot take the daemon's memory with it.
        "max_message_bytes": 64 * 1024 * 1024,
        "idle_timeout_s": 300,
        "max_connections": 65536,
        # One ai.streaming_chunk per streamed delta: the live view of an answer as it is written.
        "streaming_chunks": True,
        # Plain HTTP (capture/plain_http.py): extra host:port / CIDR:port destinations; the
        # local model servers' loopback ports are captured unless plain_http_defaults is off.
        "plain_http": [],
        "plain_http_defaults": True,
        "plain_http_server": False,
        # Processes serving an AI API over TLS (a LiteLLM proxy, a gateway) whose inbound
        # exchanges are decoded too, by command name or executable path (pipeline.py).
        "tls_servers": [],
        # Connects to these ports mark a process with no probed TLS library as unseen (unseen.py).
        "unseen_tls_ports": [443],
    },
    "binary_paths": [],
    "providers": {"hosts": {}},
    "redaction": {"mode": "safe", "custom_patterns": []},
    "paths": {
        "state_dir": "/var/lib/oisp-sensor",
        "cache_dir": "/var/cache/oisp-sensor",
        "runtime_dir": "/run/oisp-sensor",
    },
    "control": {
        "socket": "/run/oisp-sensor/control.sock",
        "socket_mode": 0o666,
        "user_group": "oisp",
        "admin_group": "oisp-admin",
        # Well under the open-files limit (LimitNOFILE=65536 in the unit): one user's idle
        # connections must not take every descriptor.
        "max_connections": 1024,
        "max_connections_per_uid": 64,
    },
    "dbus": {"enabled": True, "address": "system"},
    "tail": {
        "max_buffer": 1000,
        "replay": 1000,
        # memory budgets in bytes (issue 6): one event can carry a 64 MB body
        "replay_bytes": 16 * 1024 * 1024,
        "max_buffer_bytes": 16 * 1024 * 1024,
        "total_buffer_bytes": 64 * 1024 * 1024,
    },
    "sessions": [],
    # Runtime sessions (oisp-ctl session start): each holds a descriptor and is rewritten to
    # sessions.json on every start and stop, so one member cannot take the daemon's fds or disk.
    "session_limits": {"max_per_owner": 16, "max_total": 128, "max_spec_bytes": 64 * 1024},
    "watchdog": {"stall_s": 10},
}

CONFIG_FILE = "/etc/oisp-sensor/config.yaml"
DROPIN_DIR = "/etc/oisp-sensor/config.d"


def defaults() -> Dict[str, Any]:
    """A fresh copy, so callers may merge into it."""
    return copy.deepcopy(_DEFAULTS)
