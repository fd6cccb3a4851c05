"""tests/support/paths.py: a missing ../shared gives an error that names it, only where it is needed."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.support.paths import REPO_ROOT, SHARED_DIR


def run_python(program: str, shared_dir: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OISP_SHARED_DIR=shared_dir)
    return subprocess.run([sys.executable, "-c", program], cwd=str(REPO_ROOT), env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_missing_shared_dir_fails_naming_it(tmp_path):
    missing = str(tmp_path / "shared")
    done = run_python("from tests.support.paths import FIXTURES_DIR", missing)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("tests.support.paths.SharedDirMissing: ../shared is missing (no %s/fixtures/llm)"
                           % missing)
    assert "OISP_SHARED_DIR" in last


def test_readme_quotes_the_error(tmp_path):
    # the README shows the error for a checkout in /src/main, whose ../shared is /src/shared
    quoted = [line for line in (REPO_ROOT / "README.md").read_text().splitlines()
              if line.startswith("tests.support.paths.SharedDirMissing: ")]
    missing = str(tmp_path / "shared")
    done = run_python("from tests.support.paths import FIXTURES_DIR", missing)
    assert quoted == [done.stderr.strip().splitlines()[-1].replace(missing, "/src/shared")]


def test_repo_root_needs_no_shared_dir(tmp_path):
    done = run_python("from tests.support.paths import REPO_ROOT; print(REPO_ROOT)", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(REPO_ROOT)


def test_shared_paths_lie_in_the_shared_dir():
    from tests.support.paths import BUNDLE_PATH, FIXTURES_DIR, SCHEMA_DIR

    assert FIXTURES_DIR == SHARED_DIR / "fixtures" / "llm" and FIXTURES_DIR.is_dir()
    assert SCHEMA_DIR.is_dir() and BUNDLE_PATH.is_file()
