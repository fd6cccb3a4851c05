"""Request target -> API path, and the endpoint URL events report."""
from __future__ import annotations

from typing import Optional

from oisp_daemon.providers.registry import DEFAULT_PORT, split_host_port


def request_path(target: str) -> str:
    """Path of an origin-form (or absolute-form) request target, without query or trailing '/'."""
    path = target.split("?", 1)[0].split("#", 1)[0]
    if "://" in path:  # absolute-form, as sent to proxies
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    return path.rstrip("/") or "/"


def endpoint_url(host: Optional[str], target: str) -> str:
    """https://host[:port]/path; the query is left out (it may carry `key=` credentials)."""
    name, port = split_host_port(host or "")
    if ":" in name:
        name = f"[{name}]"
    authority = name if port in (None, DEFAULT_PORT) else f"{name}:{port}"
    return f"https://{authority or 'unknown'}{request_path(target)}"
