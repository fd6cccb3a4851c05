"""Data flows one way (DESIGN.md): nothing on the event path imports the control plane or the
client, so control/ calls into the path and never the other way."""
from __future__ import annotations

import ast

import pytest

from tests.support.paths import REPO_ROOT

DAEMON = REPO_ROOT / "oisp_daemon"
EVENT_PATH = ("capture", "decode", "providers", "events", "redact", "sessions", "export")
FORBIDDEN = ("oisp_daemon.control", "oisp_ctl")


def imports(path, source=None):
    """Every module `path` imports, relative imports made absolute, names imported from a
    package included (`from .. import control` imports oisp_daemon.control)."""
    package = path.relative_to(REPO_ROOT).with_suffix("").parts[:-1]
    tree = ast.parse(source if source is not None else path.read_text(), filename=str(path))
    for node in ast.walk(tree):  # also imports inside functions
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = ".".join(base + tuple((node.module or "").split(".") if node.module else ()))
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def forbidden(path, source=None):
    return [m for m in imports(path, source) if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]


def event_path_files():
    for room in EVENT_PATH:
        yield from sorted((DAEMON / room).rglob("*.py"))
    yield DAEMON / "pipeline.py"


@pytest.mark.parametrize("path", list(event_path_files()), ids=lambda p: str(p.relative_to(DAEMON)))
def test_event_path_module_does_not_import_the_control_plane(path):
    assert forbidden(path) == []


@pytest.mark.parametrize("source", [
    "from ..control.authz import Caller",
    "from .. import control",
    "import oisp_ctl.protocol",
    "from oisp_ctl.protocol import ProtocolError",
    "def f():\n    from ..control import operations",
])
def test_the_check_catches_every_import_form(source):
    assert forbidden(DAEMON / "sessions" / "manager.py", source)


def test_the_check_allows_the_event_path_itself():
    assert forbidden(DAEMON / "sessions" / "manager.py", "from ..export.jsonl import JsonlSink\nfrom .event_filter import EventFilter") == []
