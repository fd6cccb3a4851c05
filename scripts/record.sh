#!/usr/bin/env bash
# Set the machine up, then run `oisp-sensor record` from the venv with the given arguments.
# Set-up messages go to stderr so that record's own output stays clean.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
exec .venv/bin/oisp-sensor record "$@"
