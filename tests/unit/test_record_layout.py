"""The record format has one definition, bpf/emit.h; capture/records.py must agree with it.

The C declarations are read from the source itself: `struct rec_hdr` is compiled by the host C
compiler (same ABI as the BPF target for these fixed-width fields), which prints every field's
offset and size; the Python ctypes mirror must have the same fields in the same order at the same
offsets with the same sizes. The record kinds and the largest chunk are compared the same way.
"""
from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from oisp_daemon.capture import records
from tests.support.paths import REPO_ROOT

SOURCE = REPO_ROOT / "bpf" / "emit.h"
# BPF C spells the fixed-width types the kernel's way.
TYPEDEFS = """
typedef unsigned long long u64;
typedef long long s64;
typedef unsigned int u32;
typedef int s32;
typedef unsigned short u16;
typedef unsigned char u8;
"""


@pytest.fixture(scope="module")
def source() -> str:
    return SOURCE.read_text()


def c_struct(source: str, name: str) -> str:
    match = re.search(r"^struct %s \{\n(.*?)^\};" % re.escape(name), source, re.M | re.S)
    assert match, "struct %s not found in %s" % (name, SOURCE)
    return match.group(0)


def c_fields(struct: str) -> List[str]:
    """Field names of a C struct definition, in order (comments stripped)."""
    body = re.sub(r"//[^\n]*", "", struct.split("{", 1)[1].rsplit("}", 1)[0])
    names = []
    for declaration in filter(None, (d.strip() for d in body.split(";"))):
        match = re.fullmatch(r"[A-Za-z_][\w ]*?\s+([A-Za-z_]\w*)\s*(\[\s*\w+\s*\])?", declaration)
        assert match, "cannot read the field declaration %r" % declaration
        names.append(match.group(1))
    return names


def c_layout(struct: str, fields: List[str], tmp_path: Path) -> Tuple[int, Dict[str, Tuple[int, int]]]:
    """(sizeof, {field: (offsetof, sizeof)}) as the C compiler lays the struct out."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        pytest.skip("no C compiler to lay out struct rec_hdr (the parsed field list is still checked)")
    prints = "\n".join(
        '    printf("%s %%zu %%zu\\n", offsetof(struct rec_hdr, %s), sizeof(((struct rec_hdr *)0)->%s));'
        % (f, f, f) for f in fields)
    program = tmp_path / "layout.c"
    program.write_text("#include <stddef.h>\n#include <stdio.h>\n%s\n%s\nint main(void) {\n"
                       '    printf("sizeof %%zu 0\\n", sizeof(struct rec_hdr));\n%s\n    return 0;\n}\n'
                       % (TYPEDEFS, struct, prints))
    binary = tmp_path / "layout"
    subprocess.run([compiler, "-o", str(binary), str(program)], check=True, capture_output=True)
    out = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    rows = {name: (int(a), int(b)) for name, a, b in (line.split() for line in out.splitlines())}
    return rows.pop("sizeof")[0], rows


def test_python_header_has_the_c_fields_in_order(source):
    assert [name for name, _ in records.RecHdr._fields_] == c_fields(c_struct(source, "rec_hdr"))


def test_python_header_has_the_c_offsets_and_sizes(source, tmp_path):
    struct = c_struct(source, "rec_hdr")
    size, layout = c_layout(struct, c_fields(struct), tmp_path)
    python = {name: (getattr(records.RecHdr, name).offset, getattr(records.RecHdr, name).size)
              for name, _ in records.RecHdr._fields_}
    assert python == layout
    assert records.HDR_SIZE == ctypes.sizeof(records.RecHdr) == size


def test_record_kinds_match_the_c_enum(source):
    enum = re.search(r"enum record_kind \{(.*?)\};", source, re.S)
    assert enum
    c_kinds = {name: int(value) for name, value in re.findall(r"(REC_\w+)\s*=\s*(\d+)", enum.group(1))}
    python_kinds = {name: getattr(records, name) for name in dir(records) if re.fullmatch(r"REC_[A-Z_]+", name)}
    assert python_kinds == c_kinds


def test_largest_chunk_matches_the_c_definition(source):
    match = re.search(r"^#define CHUNK_LARGE (\d+)$", source, re.M)
    assert match and int(match.group(1)) == records.MAX_CHUNK


def test_layout_check_notices_a_changed_struct(source, tmp_path):
    # The check itself must be able to fail: a field moved in C shows up as a different layout.
    struct = c_struct(source, "rec_hdr").replace("    u16 kind;\n", "").replace(
        "    u64 ts_ns;", "    u16 kind;\n    u64 ts_ns;")
    fields = c_fields(struct)
    assert fields[0] == "kind"
    _, layout = c_layout(struct, fields, tmp_path)
    assert layout["ts_ns"] != (records.RecHdr.ts_ns.offset, records.RecHdr.ts_ns.size)
