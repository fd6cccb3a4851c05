"""Tables derived from the OISP spec bundle by tools/derive_bundle_tables.py (Apache-2.0, see
each file's `attribution`). The daemon reads only these package copies, never the spec checkout."""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Dict

_DIR = Path(__file__).resolve().parent


@functools.lru_cache(maxsize=None)
def load_table(name: str) -> Dict[str, Any]:
    """Parsed `<name>.json` from this directory, loaded once per process."""
    with open(_DIR / f"{name}.json", encoding="utf-8") as fh:
        return json.load(fh)
