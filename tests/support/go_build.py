"""Build tests/clients/go_client with Debian's golang-go, as the Go tests and bench need it.

Builds go into a directory the caller gives (one per test session); the Go build cache (GOCACHE) is kept under
/var/cache/oisp-tests (or OISP_GO_CACHE) so that a later session rebuilds in about a second.
A binary without section headers (what sstrip and some packers leave) is made from the stripped
build by clearing the ELF header's section-table fields: the code and data stay byte-identical.
"""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

from tests.support.paths import REPO_ROOT

GO_CLIENT_DIR = REPO_ROOT / "tests" / "clients" / "go_client"
GO_CACHE = Path(os.environ.get("OISP_GO_CACHE", "/var/cache/oisp-tests/go"))

# variant -> (GOARCH, extra `go build` flags)
VARIANTS: Dict[str, Tuple[str, List[str]]] = {
    "plain": ("amd64", []),
    "stripped": ("amd64", ["-ldflags=-s -w"]),
    "pie-stripped": ("amd64", ["-buildmode=pie", "-ldflags=-s -w"]),
    "arm64": ("arm64", []),
    "arm64-stripped": ("arm64", ["-ldflags=-s -w"]),
}


class GoMissing(RuntimeError):
    """No Go toolchain: golang-go is not installed."""


def go_binary() -> str:
    found = shutil.which("go") or ("/usr/bin/go" if os.path.exists("/usr/bin/go") else None)
    if found is None:
        raise GoMissing("no go toolchain: apt-get install golang-go")
    return found


def go_env() -> Dict[str, str]:
    GO_CACHE.mkdir(parents=True, exist_ok=True)
    return dict(os.environ, GOCACHE=str(GO_CACHE / "build"), GOPATH=str(GO_CACHE / "path"),
                HOME=str(GO_CACHE), GOFLAGS="", GO111MODULE="off", GOTOOLCHAIN="local")


def go_version() -> str:
    """The toolchain's version, e.g. "go1.19.8"."""
    out = subprocess.run([go_binary(), "env", "GOVERSION"], capture_output=True, text=True, check=True, env=go_env())
    return out.stdout.strip()


def build(variant: str, out_dir: Path) -> Path:
    """Build one variant of the Go client into `out_dir` (once: an existing build is reused)."""
    out = Path(out_dir) / ("go_client-" + variant)
    if out.exists():
        return out
    if variant == "noshdr-stripped":
        strip_section_headers(build("stripped", out_dir), out)
        return out
    goarch, flags = VARIANTS[variant]
    env = dict(go_env(), GOARCH=goarch, GOOS="linux")
    proc = subprocess.run([go_binary(), "build", "-o", str(out), *flags, "main.go"], cwd=str(GO_CLIENT_DIR),
                          capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError("go build %s failed:\n%s" % (variant, proc.stderr))
    return out


def strip_section_headers(src: Path, dst: Path) -> None:
    """Copy an ELF64 file with e_shoff, e_shentsize, e_shnum and e_shstrndx set to zero."""
    data = bytearray(Path(src).read_bytes())
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise ValueError("%s is not ELF64" % src)
    struct.pack_into("<Q", data, 0x28, 0)
    struct.pack_into("<HHH", data, 0x3A, 0, 0, 0)
    tmp = Path(str(dst) + ".tmp")
    tmp.write_bytes(bytes(data))
    tmp.chmod(0o755)
    tmp.rename(dst)


def objdump(binary: Path, func: str) -> List[Tuple[int, str]]:
    """(address, mnemonic) of each instruction of `func` as `go tool objdump` lists them (an
    independent disassembler: Go's own; it needs the symbol table, so give it a build that is
    not stripped: the code is the same). Empty when the function is not found."""
    pattern = "^" + re.escape(func) + "$"
    out = subprocess.run([go_binary(), "tool", "objdump", "-s", pattern, str(binary)], capture_output=True,
                         text=True, check=True, env=go_env()).stdout
    insns = []
    for line in out.splitlines():
        fields = line.split()  # file:line, address, encoding, mnemonic, operands...
        if len(fields) >= 4 and fields[1].startswith("0x"):
            insns.append((int(fields[1], 16), fields[3]))
    return insns
