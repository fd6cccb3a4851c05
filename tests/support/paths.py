"""Where the shared test material lives: ../shared beside the repository (as on CI's clone).

It holds what the repository does not: recorded provider traffic (fixtures/llm) and the OISP
spec (oisp-spec: the event schemas, and the bundle the price and host tables come from).
OISP_SHARED_DIR overrides the location for a checkout that is elsewhere.

The names below it are computed on first use (PEP 562), so that a test which needs only
REPO_ROOT runs without ../shared, and one that needs it fails with SharedDirMissing, which says
what is missing and where it was looked for, instead of a FileNotFoundError deep in a fixture.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DIR = Path(os.environ.get("OISP_SHARED_DIR", REPO_ROOT.parent / "shared"))

# name -> path below SHARED_DIR
_SHARED_PATHS = {
    "FIXTURES_DIR": ("fixtures", "llm"),
    "SPEC_DIR": ("oisp-spec",),
    "SCHEMA_DIR": ("oisp-spec", "schema", "v0.1"),
    "BUNDLE_PATH": ("oisp-spec", "spec", "v0.1", "bundle.json"),
}


class SharedDirMissing(RuntimeError):
    """The shared test material is not where the tests look for it."""


def __getattr__(name: str) -> Path:
    if name not in _SHARED_PATHS:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    path = SHARED_DIR.joinpath(*_SHARED_PATHS[name])
    if not path.exists():
        raise SharedDirMissing(
            "../shared is missing (no %s): the tests need the shared test material (recorded "
            "provider traffic in fixtures/llm, the OISP spec in oisp-spec) beside the repository "
            "as ../shared, or where OISP_SHARED_DIR says" % path)
    return path
