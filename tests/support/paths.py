"""Where the shared test material lives: ../shared beside the repository (as on CI's clone).

OISP_SHARED_DIR overrides it for a checkout that is elsewhere.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DIR = Path(os.environ.get("OISP_SHARED_DIR", REPO_ROOT.parent / "shared"))
FIXTURES_DIR = SHARED_DIR / "fixtures" / "llm"
SPEC_DIR = SHARED_DIR / "oisp-spec"
SCHEMA_DIR = SPEC_DIR / "schema" / "v0.1"
BUNDLE_PATH = SPEC_DIR / "spec" / "v0.1" / "bundle.json"
