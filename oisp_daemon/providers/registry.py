"""Which AI provider a connection talks to, from its Host header or remote address.

The table comes from the OISP bundle (oisp_daemon/data/provider_domains.json); operators add or
override hosts with the config key `providers.hosts` ("host[:port]" -> provider id), e.g. for an
internal gateway that speaks the OpenAI API.

Matching rules:
- A host without a port means port 443 (the sensor sees TLS), unless `port` says otherwise.
- An entry "host:port" matches only that port; an entry "host" matches the host on any port, but
  the exact "host:port" entry wins when both exist.
- Overrides win over the bundle table; exact entries win over the bundle's regex patterns.
"""
from __future__ import annotations

import functools
import re
from typing import Dict, List, Optional, Pattern, Tuple

from oisp_daemon.data import load_table

DEFAULT_PORT = 443


def split_host_port(value: str) -> Tuple[str, Optional[int]]:
    """("host", port or None) from "host", "host:port", "[v6]:port" or a bare IPv6 address.

    The host is lower-cased and loses a trailing dot (DNS names are case-insensitive and
    "api.openai.com." is the same name).
    """
    value = value.strip()
    host, port_text = value, ""
    if value.startswith("["):
        end = value.find("]")
        if end > 0:
            host = value[1:end]
            rest = value[end + 1:]
            port_text = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        host, port_text = value.split(":", 1)
    port = int(port_text) if port_text.isdigit() and 0 < int(port_text) < 65536 else None
    return host.lower().rstrip("."), port


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _lookup(table: Dict[Tuple[str, Optional[int]], str], host: str, port: int) -> Optional[str]:
    return table.get((host, port)) or table.get((host, None))


def _keyed(entries: Dict[str, str]) -> Dict[Tuple[str, Optional[int]], str]:
    return {split_host_port(key): str(pid) for key, pid in entries.items() if isinstance(key, str) and pid}


@functools.lru_cache(maxsize=1)
def _bundle_patterns() -> List[Tuple[Pattern[str], str]]:
    """The bundle's host patterns, then the hand-kept ones for hosts it lacks (regional Vertex
    AI hosts, OpenRouter, xAI, ...), so the bundle wins where both match."""
    patterns = load_table("provider_domains")["patterns"] + load_table("provider_domains_extra")["patterns"]
    return [(re.compile(p["regex"], re.IGNORECASE), p["provider"]) for p in patterns]


@functools.lru_cache(maxsize=1)
def _bundle_hosts() -> Dict[Tuple[str, Optional[int]], str]:
    return _keyed(load_table("provider_domains")["hosts"])


def detect_provider(host: Optional[str], port: Optional[int], overrides: Optional[Dict[str, str]] = None) -> Optional[str]:
    """Bundle provider id (openai, anthropic, azure_openai, ...) for a host, or None.

    `host` is a Host header (may carry ":port") or a remote address; a port inside `host` wins
    over `port` because it is what the client addressed.
    """
    if not host:
        return None
    name, host_port = split_host_port(host)
    if not name:
        return None
    effective_port = host_port or port or DEFAULT_PORT
    if overrides:
        found = _lookup(_keyed(overrides), name, effective_port)
        if found:
            return found
    found = _lookup(_bundle_hosts(), name, effective_port)
    if found:
        return found
    with_port = _join(name, effective_port)
    for regex, pid in _bundle_patterns():
        if regex.match(name) or regex.match(with_port):
            return pid
    return None


def provider_auth(provider: str) -> Dict[str, str]:
    """The bundle's auth conventions for a provider (auth_header, auth_prefix, organization_header,
    project_header, ...); empty for unknown providers."""
    return dict(load_table("provider_domains")["providers"].get(provider, {}))
