#!/usr/bin/env bash
# Set the machine up, then run the test suite. Arguments replace the default `tests` and go to
# pytest as they are (with only options, pytest's testpaths from pyproject.toml still select tests/).
# Exits non-zero on any failure, and when pytest collected no tests at all (its exit code 5).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
status=0
if (($#)); then
  .venv/bin/python -m pytest -q "$@" || status=$?
else
  .venv/bin/python -m pytest -q tests || status=$?
fi
if [[ $status -eq 5 ]]; then
  echo "test: pytest ran no tests" >&2
  exit 1
fi
exit "$status"
