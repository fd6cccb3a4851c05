"""JSON-lines files that another process is still appending to (the sensor's events, the replay
server's request log)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List


def whole_lines(path: Path) -> List[Dict[str, Any]]:
    """The records of every whole line, read in one pass. A line the writer has not finished is
    left out; iterating the open file instead can return such a line's tail as a line of its own
    once the writer has gone on (a 4 MiB event written while it was read did)."""
    return [json.loads(line) for line in path.read_bytes().split(b"\n")[:-1]]
