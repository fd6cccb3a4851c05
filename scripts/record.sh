#!/usr/bin/env bash
# Set the machine up, then run `oisp-sensor record` from the venv with the given arguments, in
# the caller's directory (the default events file is ./oisp-events-<time>.jsonl there).
# Set-up messages go to stderr so that record's own output stays clean.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/setup.sh" --runtime >&2
exec "$root/.venv/bin/oisp-sensor" record "$@"
