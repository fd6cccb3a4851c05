"""The Node build with OpenSSL linked in, chosen explicitly: /usr/bin/node may be either kind.

The upstream build (npm's node-linux-<arch> package, which scripts/setup.sh installs into
.venv/node) links OpenSSL statically and exports SSL_*, like Node from nvm, fnm or nodesource:
the case that needs binary-paths. Debian's nodejs, which a fresh machine has as /usr/bin/node,
links the system libssl instead.
"""
from __future__ import annotations

import os

from tests.support.paths import REPO_ROOT

STATIC_NODE_LINK = REPO_ROOT / ".venv" / "node" / "node_modules" / ".bin" / "node"


def static_node() -> str:
    """Real path of the static Node (the file the sensor probes); AssertionError if not installed."""
    path = os.path.realpath(STATIC_NODE_LINK)
    assert os.path.isfile(path), (
        "the upstream Node build is missing at %s: run scripts/setup.sh (as root), which installs "
        "npm's node-linux-<arch> there" % STATIC_NODE_LINK)
    return path
