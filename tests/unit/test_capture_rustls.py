"""families/rustls.py: rustls is recognised by its crate paths, aws-lc's AEAD functions are found
by their error sites (checked against the symbols of small programs built here, and on Codex),
and what cannot be probed is reported unsupported."""
from __future__ import annotations

import struct
import subprocess
from pathlib import Path
from typing import Dict

import pytest

from oisp_daemon.capture.elf_image import ElfImage
from oisp_daemon.capture.families.rustls import (
    UNSUPPORTED, Function, RustlsFamily, function_of, function_starts, load_signature, match)
from tests.support.paths import REPO_ROOT

CODEX = (REPO_ROOT / ".venv/npm/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex")
SIGNED = "signature:aws-lc-aead-error-sites/v1"
POINTS = ("EVP_AEAD_CTX_seal", "EVP_AEAD_CTX_open", "EVP_AEAD_CTX_init_with_direction", "EVP_AEAD_CTX_init")

# aws-lc's aead.c in miniature: each function reports the reasons the real one does
# (cipher.h codes) through ERR_put_error(ERR_LIB_CIPHER, 0, reason, __FILE__, __LINE__) and calls
# through ctx->aead; seal_scatter and open_gather are the look-alikes the signature must refuse.
AEAD_C = r"""
#include <stddef.h>
struct aead { int (*op)(const void *ctx); };
struct ctx { const struct aead *aead; };
volatile const char *last_file; volatile unsigned last_line; volatile int last_reason;
__attribute__((noinline)) void ERR_put_error(int lib, int unused, int reason, const char *file, unsigned line) {
  last_file = file; last_line = line + lib + unused; last_reason = reason;
}
#define PUT(r) ERR_put_error(30, 0, r, "/build/aws-lc/crypto/fipsmodule/cipher/aead.c", __LINE__)
__attribute__((noinline)) int EVP_AEAD_CTX_seal(const struct ctx *c, size_t a, size_t b, int x) {
  if (a + b < a) { PUT(117); return 0; }
  if (b < a) { PUT(103); return 0; }
  if (x) { PUT(115); return 0; }
  return c->aead->op(c) + 1;
}
__attribute__((noinline)) int EVP_AEAD_CTX_seal_scatter(const struct ctx *c, int x, int y) {
  if (x) { PUT(115); return 0; }
  if (y) { PUT(112); return 0; }
  return c->aead->op(c) + 1;
}
__attribute__((noinline)) int EVP_AEAD_CTX_open_gather(const struct ctx *c, int x) {
  if (x) { PUT(115); return 0; }
  if (!c->aead->op) { PUT(104); return 0; }
  return c->aead->op(c) + 1;
}
__attribute__((noinline)) int EVP_AEAD_CTX_open(const struct ctx *c, size_t a, size_t b, int x) {
  if (x) { PUT(115); return 0; }
  if (a < b) { PUT(101); return 0; }
  if (b < 3) { PUT(103); return 0; }
  return c->aead->op(c) + EVP_AEAD_CTX_open_gather(c, x);
}
__attribute__((noinline)) int EVP_AEAD_CTX_init_with_direction(const struct ctx *c, size_t k) {
  if (k != 32) { PUT(120); return 0; }
  return c->aead->op(c) + 1;
}
INIT
__attribute__((used)) const char marks[] = MARKS;
static int op(const void *c) { return c != 0; }
int main(int argc, char **argv) {
  static const struct aead a = {op}; struct ctx c = {&a};
  (void)argv;
  return EVP_AEAD_CTX_seal(&c, argc, 2, 0) + EVP_AEAD_CTX_seal_scatter(&c, argc, 0)
       + EVP_AEAD_CTX_open(&c, 3, argc, 0) + EVP_AEAD_CTX_init(&c, argc) + EXTRA;
}
"""
# EVP_AEAD_CTX_init calling init_with_direction (a build that did not inline it) ...
INIT_CALLS = r"""
__attribute__((noinline)) int EVP_AEAD_CTX_init(const struct ctx *c, size_t k) {
  if (!c->aead->op) { PUT(124); return 0; }
  return EVP_AEAD_CTX_init_with_direction(c, k);
}"""
# ... or with it inlined (as in Codex): then both are probed, each its own entry point
INIT_INLINED = r"""
__attribute__((noinline)) int EVP_AEAD_CTX_init(const struct ctx *c, size_t k) {
  if (!c->aead->op) { PUT(124); return 0; }
  if (k != 16) { PUT(120); return 0; }
  return c->aead->op(c) + 2;
}"""
AWS_LC_MARKS = r'"/r/rustls-0.23.9/src/lib.rs\0/r/aws-lc-rs-1.2.0/src/aead.rs"'
SECOND_SEAL = r"""
__attribute__((noinline)) int other_seal(const struct ctx *c, size_t a, size_t b, int x) {
  if (a + b < a) { PUT(117); return 0; }
  if (b < a) { PUT(103); return 0; }
  if (x) { PUT(115); return 0; }
  return c->aead->op(c) + 3;
}"""


def build(directory: Path, name: str, source: str) -> Path:
    src, out = directory / (name + ".c"), directory / name
    src.write_text(source)
    subprocess.run(["gcc", "-O2", "-o", str(out), str(src)], check=True)
    return out


def aead_program(directory: Path, name: str, *, init: str = INIT_CALLS, marks: str = AWS_LC_MARKS,
                 extra_fn: str = "", extra_call: str = "0") -> Path:
    source = AEAD_C.replace("INIT", init + extra_fn).replace("MARKS", marks).replace("EXTRA", extra_call)
    return build(directory, name, source)


def scan(path: Path):
    with ElfImage(str(path)) as image:
        return RustlsFamily().scan(image)


def symbols(path: Path) -> Dict[str, int]:
    with ElfImage(str(path)) as image:
        return {name: image.symbol(name) for name in POINTS}


@pytest.fixture(scope="module")
def programs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rustls")


def test_aead_functions_are_found_at_their_symbols(programs: Path) -> None:
    path = aead_program(programs, "aead_calls")
    found = scan(path)
    assert found.supported and found.library == "rustls 0.23.9 (aws-lc, static)"
    where = symbols(path)
    assert {loc.point: loc.address for loc in found.locations} == {
        name: where[name] for name in POINTS[:3]}, "init calls init_with_direction: probed there only"
    assert all(loc.method == SIGNED for loc in found.locations)
    assert any("probed there only" in note for note in found.notes)
    assert found.missing == []


def test_an_init_with_inlined_direction_is_probed_too(programs: Path) -> None:
    path = aead_program(programs, "aead_inlined", init=INIT_INLINED)
    found = scan(path)
    where = symbols(path)
    assert {loc.point: loc.address for loc in found.locations} == where


def test_two_functions_matching_one_signature_locate_nothing(programs: Path) -> None:
    path = aead_program(programs, "aead_twice", extra_fn=SECOND_SEAL, extra_call="other_seal(&c, argc, 1, 0)")
    found = scan(path)
    assert not found.supported and found.library == UNSUPPORTED and found.locations == []
    assert "EVP_AEAD_CTX_seal: 2 functions match signature aws-lc-aead-error-sites" in found.missing


def test_rustls_on_ring_is_unsupported(programs: Path) -> None:
    path = build(programs, "ring", '__attribute__((used)) const char m[] = '
                 '"/r/rustls-0.23.9/src/conn.rs\\0/r/ring-0.17.8/src/aead.rs";\nint main(void) { return 0; }\n')
    found = scan(path)
    assert not found.supported and found.library == UNSUPPORTED
    assert found.notes == ["rustls 0.23.9 compiled in (crate source paths in .rodata)",
                           "crypto provider ring: only aws-lc-rs has probe points"]


def test_aws_lc_rs_without_aead_c_is_unsupported(programs: Path) -> None:
    path = build(programs, "no_aead", '__attribute__((used)) const char m[] = ' + AWS_LC_MARKS
                 + ';\nint main(void) { return 0; }\n')
    found = scan(path)
    assert not found.supported
    assert "no aws-lc crypto/fipsmodule/cipher/aead.c in .rodata" in found.notes


def test_files_without_rustls_are_not_this_family(programs: Path) -> None:
    # a crate that merely has rustls in its name is not rustls
    path = build(programs, "tokio", '__attribute__((used)) const char m[] = '
                 '"/r/tokio-rustls-0.26.4/src/lib.rs";\nint main(void) { return 0; }\n')
    assert scan(path) is None
    assert scan(Path("/bin/true")) is None


def test_codex() -> None:
    """Codex 0.171 (rustls 0.23.46 on aws-lc-rs 1.18.1): all four entry points, each a function
    start in .eh_frame_hdr, and the seal/open pair distinct."""
    found = scan(CODEX)
    assert found.supported, found.notes + found.missing
    assert found.library == "rustls 0.23.46 (aws-lc, static)"
    where = {loc.point: loc.address for loc in found.locations}
    assert set(where) == set(POINTS) and len(set(where.values())) == 4
    with ElfImage(str(CODEX)) as image:
        starts = set(function_starts(image.section_bytes(".eh_frame_hdr"), image.section_addr(".eh_frame_hdr")))
    assert set(where.values()) <= starts


# -- the pieces ---------------------------------------------------------------------------


def test_function_starts_and_bounds() -> None:
    hdr_addr = 0x2000
    starts = [0x1100, 0x1000, 0x1200]
    table = b"".join(struct.pack("<ii", s - hdr_addr, 0) for s in starts)
    hdr = bytes([1, 0x1B, 0x03, 0x3B]) + struct.pack("<iI", 0, len(starts)) + table
    assert list(function_starts(hdr, hdr_addr)) == sorted(starts)
    assert not function_starts(bytes([1, 0x1B, 0x03, 0x33]) + hdr[4:], hdr_addr)  # another encoding
    assert not function_starts(hdr[:20], hdr_addr)  # table cut short
    ordered = sorted(starts)
    assert function_of(ordered, 0x1150, 4096, 0x1300) == (0x1100, 0x1200)
    assert function_of(ordered, 0x1250, 4096, 0x1300) == (0x1200, 0x1300)  # the last one
    assert function_of(ordered, 0x0FFF, 4096, 0x1300) is None
    assert function_of(ordered, 0x1150, 0x80, 0x1300) is None  # too long for an entry point


def test_match_needs_the_reasons_nothing_else_and_an_indirect_call() -> None:
    seal = Function(1, 2, {103, 115, 117}, 1)
    scatter = Function(3, 4, {112, 115}, 1)
    no_call = Function(5, 6, {103, 115, 117}, 0)
    more = Function(7, 8, {101, 103, 115, 117}, 1)
    assert match([seal, scatter, no_call, more], [103, 115, 117], [], True) == [seal]
    assert match([seal, scatter, no_call, more], [103, 115, 117], [], False) == [seal, no_call]


def test_signature_file_tells_each_function_from_the_others() -> None:
    sig = load_signature()
    names = [f["name"] for f in sig["functions"]]
    assert set(names) == set(POINTS) and len(names) == len(set(names))
    assert set(RustlsFamily.required) < set(names)
    assert {p.name for p in RustlsFamily.points} == set(names)
    for spec in sig["functions"]:
        for code in spec["reasons"] + spec["optional"]:
            assert str(code) in sig["reason_names"]
        # a function with exactly another entry's reasons (minimal or maximal) is not this one
        for other in sig["functions"]:
            if other is spec:
                continue
            for reasons in (set(other["reasons"]), set(other["reasons"]) | set(other["optional"])):
                assert not match([Function(0, 1, reasons, 1)], spec["reasons"], spec["optional"], False), (
                    spec["name"], other["name"])
