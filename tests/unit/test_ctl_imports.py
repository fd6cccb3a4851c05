"""oisp_ctl is the unprivileged client: it must never import the daemon (or bcc), and D-Bus only
when --bus asks for it."""
from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.support.paths import REPO_ROOT

CTL_DIR = REPO_ROOT / "oisp_ctl"
FORBIDDEN = ("oisp_daemon", "bcc")


def imported_modules(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):  # also imports inside functions
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


@pytest.mark.parametrize("path", sorted(CTL_DIR.glob("*.py")), ids=lambda p: p.name)
def test_no_module_of_oisp_ctl_imports_the_daemon(path):
    bad = [m for m in imported_modules(path) if m.split(".")[0] in FORBIDDEN]
    assert bad == []


def test_running_oisp_ctl_loads_neither_the_daemon_nor_dbus():
    code = ("import sys, io; from oisp_ctl.cli import main; main(['completion', 'bash'], out=io.StringIO());"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'oisp_daemon', 'bcc', 'dbus_next'}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=str(REPO_ROOT), capture_output=True,
                          text=True, timeout=30, check=True)
    assert done.stdout.strip() == "[]"
