"""Bun and the Bun-compiled Claude Code that scripts/setup.sh pins in .venv/npm: executables with
BoringSSL built in and no SSL_* symbols (the boringssl capture family's targets)."""
from __future__ import annotations

import os

from tests.support.paths import REPO_ROOT

NODE_MODULES = REPO_ROOT / ".venv" / "npm" / "node_modules"
BUN_LINK = NODE_MODULES / ".bin" / "bun"
CLAUDE_EXE = NODE_MODULES / "@anthropic-ai" / "claude-code" / "bin" / "claude.exe"


def _installed(path: "os.PathLike[str]", what: str) -> str:
    real = os.path.realpath(path)
    assert os.path.isfile(real), "%s is missing at %s: run scripts/setup.sh (as root)" % (what, path)
    return real


def bun() -> str:
    """Real path of the Bun executable (npm `bun`)."""
    return _installed(BUN_LINK, "Bun")


def claude() -> str:
    """Real path of Claude Code's executable (npm `@anthropic-ai/claude-code`, a Bun binary)."""
    return _installed(CLAUDE_EXE, "Claude Code")
