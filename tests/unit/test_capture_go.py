"""Go crypto/tls discovery on real Go binaries: the pclntab reader, the build-info version and the
code checks of families/go.py.

The binaries are built here with Debian's golang-go (tests/clients/go_client, as the integration
test runs it): with symbols, stripped, stripped PIE, stripped without section headers, and for
arm64. Go's own tools are the reference: the symbol table of the unstripped build for function
bounds, `go tool objdump` for instructions, `go version FILE` for the build info. Go binaries of
other releases that happen to be installed (Google Cloud SDK, Terraform) are checked too.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Dict, Set

import pytest

from oisp_daemon.capture import gopclntab
from oisp_daemon.capture.elf_image import ElfImage
from oisp_daemon.capture.families import FAMILIES
from oisp_daemon.capture.families.go import CLOSE, READ, WRITE, GoFamily
from tests.support import go_build

FUNCS = (WRITE.name, READ.name, CLOSE.name)
GO = GoFamily()
# Go executables of other releases found on development machines; each is used when present.
OTHER_GO_BINARIES = (
    "/usr/local/bin/terraform",
    "/usr/lib/google-cloud-sdk/bin/kubectl",
    "/usr/lib/google-cloud-sdk/bin/kubectl.1.28",
    "/usr/lib/google-cloud-sdk/bin/gke-gcloud-auth-plugin",
    "/usr/lib/google-cloud-sdk/platform/google_appengine/go-app-stager",
    "/usr/lib/google-cloud-sdk/bin/cloud_spanner_emulator/gateway_main",
)


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    try:
        go_build.go_binary()
    except go_build.GoMissing as exc:
        pytest.skip(str(exc))
    out = tmp_path_factory.mktemp("go-builds")
    variants = list(go_build.VARIANTS) + ["noshdr-stripped"]
    return {v: go_build.build(v, out) for v in variants}


def scan(path: Path):
    with ElfImage(str(path)) as image:
        return GO.scan(image)


def table(path: Path) -> gopclntab.Pclntab:
    with ElfImage(str(path)) as image:
        found = gopclntab.find_pclntab(image)
    assert found is not None
    return found


def symtab_functions(path: Path) -> Dict[str, Set[int]]:
    """Function name -> addresses (Go's symbol table names an ABI0 and an ABIInternal
    wrapper of a function alike)."""
    from elftools.elf.elffile import ELFFile

    out: Dict[str, Set[int]] = {}
    with open(path, "rb") as fh:
        section = ELFFile(fh).get_section_by_name(".symtab")
        for sym in section.iter_symbols():
            if sym["st_info"]["type"] == "STT_FUNC":
                out.setdefault(sym.name, set()).add(sym["st_value"])
    return out


def test_the_go_family_is_registered():
    assert any(isinstance(f, GoFamily) for f in FAMILIES)
    assert GO.bpf_file == "go_tls.c"
    assert (go_build.REPO_ROOT / "bpf" / "go_tls.c").is_file()


def test_every_pclntab_function_has_the_address_the_symbol_table_gives(builds):
    functions = list(table(builds["plain"]).functions())
    symbols = symtab_functions(builds["plain"])
    assert len(functions) > 1000
    assert all(f.entry < f.end for f in functions)
    assert all(a.end <= b.entry for a, b in zip(functions, functions[1:]))
    names = Counter(f.name for f in functions)
    # an assembly function and its ABI wrapper share a name in the pclntab (a few dozen)
    assert len([n for n, count in names.items() if count > 1]) < 0.02 * len(functions)
    unique = [f for f in functions if names[f.name] == 1]
    mismatched = [f.name for f in unique if f.entry not in symbols.get(f.name, {f.entry})]
    assert mismatched == []
    assert sum(f.name in symbols for f in unique) > 0.95 * len(unique)


@pytest.mark.parametrize("variant, how", [
    ("stripped", "section .gopclntab"),
    ("pie-stripped", "section .data.rel.ro.gopclntab"),
    ("noshdr-stripped", "magic at 0x"),
    ("arm64-stripped", "section .gopclntab"),
])
def test_stripped_builds_name_the_functions_the_symbols_name(builds, variant, how):
    reference = "arm64" if variant.startswith("arm64") else "plain"
    symbols = symtab_functions(builds[reference])
    found = table(builds[variant])
    assert found.how.startswith(how)
    assert found.format == "go1.18-1.19"  # what Debian 12's go1.19 writes
    funcs = found.find(FUNCS + ("crypto/tls.(*Conn).NoSuchMethod",))
    assert set(funcs) == set(FUNCS)
    shift = 0x600 if variant == "pie-stripped" else 0  # the PIE's text starts after a bigger header
    for name, same_named in funcs.items():
        assert len(same_named) == 1
        func = same_named[0]
        assert symbols[name] == {func.entry - shift}
        assert func.size > 64


def test_the_go_version_comes_from_the_build_info(builds):
    expected = go_build.go_version()
    for variant, path in builds.items():
        with ElfImage(str(path)) as image:
            assert gopclntab.go_version(image) == expected, variant


def test_non_go_files_and_go_programs_without_tls_are_not_go_tls(builds):
    gofmt = Path(go_build.go_binary()).resolve().parent / "gofmt"
    for path in ("/bin/ls", "/usr/lib/x86_64-linux-gnu/libssl.so.3", str(gofmt)):
        if not os.path.exists(path):
            continue
        with ElfImage(path) as image:
            assert GO.scan(image) is None, path
    with ElfImage(str(gofmt)) as image:  # a Go program: it has a pclntab, but no crypto/tls
        assert gopclntab.find_pclntab(image) is not None


@pytest.mark.parametrize("variant", ["plain", "stripped", "pie-stripped", "noshdr-stripped"])
def test_amd64_locations_agree_with_go_objdump(builds, variant):
    found = scan(builds[variant])
    assert found is not None and found.supported and found.missing == []
    assert found.library == "Go crypto/tls (%s)" % go_build.go_version()
    by_point = {loc.point: loc for loc in found.locations}
    assert set(by_point) == set(FUNCS)
    shift = 0x600 if variant == "pie-stripped" else 0
    for name in FUNCS:
        insns = go_build.objdump(builds["plain"], name)
        mnemonics = [m for _a, m in insns]
        # the entry probe: right after the stack check's JBE to morestack
        branch = mnemonics.index("JBE")
        assert mnemonics[branch - 1] == "CMPQ" and branch <= 2
        loc = by_point[name]
        assert loc.method == "pclntab"
        assert loc.address == insns[branch + 1][0] + shift
        rets = tuple(a + shift for a, m in insns if m == "RET")
        assert loc.returns == (rets if name == READ.name else ())
    assert len(by_point[READ.name].returns) >= 2


def test_arm64_locations_agree_with_go_objdump(builds):
    found = scan(builds["arm64-stripped"])
    assert found is not None and found.supported
    by_point = {loc.point: loc for loc in found.locations}
    for name in FUNCS:
        insns = go_build.objdump(builds["arm64"], name)
        mnemonics = [m for _a, m in insns]
        branch = mnemonics.index("BLS")
        assert mnemonics[:branch][0] == "MOVD" and "CMP" in mnemonics[:branch]
        assert by_point[name].address == insns[branch + 1][0]
    read_rets = tuple(a for a, m in go_build.objdump(builds["arm64"], READ.name) if m == "RET")
    assert by_point[READ.name].returns == read_rets and read_rets


def _patched(src: Path, dst: Path, vaddr: int, data: bytes) -> Path:
    with ElfImage(str(src)) as image:
        offset = image.vaddr_to_offset(vaddr)
    raw = bytearray(src.read_bytes())
    raw[offset:offset + len(data)] = data
    dst.write_bytes(bytes(raw))
    return dst


def test_a_function_without_the_go_stack_check_is_not_attached(builds, tmp_path):
    (func,) = table(builds["stripped"]).find([READ.name])[READ.name]
    # 10 one-byte NOPs over CMPQ SP, 16(R14); JBE: the code no longer proves the register ABI
    patched = _patched(builds["stripped"], tmp_path / "nop", func.entry, b"\x90" * 10)
    found = scan(patched)
    assert found is not None and not found.supported and found.locations == []
    assert any(m.startswith(READ.name + ": no register-ABI stack check") for m in found.missing)


def test_a_function_that_does_not_disassemble_to_its_end_is_not_attached(builds, tmp_path):
    (func,) = table(builds["stripped"]).find([WRITE.name])[WRITE.name]
    # 0x06 (PUSH ES) does not exist in 64-bit mode: bytes that are no amd64 code mid-function
    patched = _patched(builds["stripped"], tmp_path / "bad", func.entry + func.size // 2, b"\x06" * 8)
    found = scan(patched)
    assert found is not None and not found.supported
    assert any(m.startswith(WRITE.name + ": disassembly stops at") for m in found.missing)


def test_a_corrupt_pclntab_header_is_rejected_not_trusted(builds, tmp_path):
    found = table(builds["noshdr-stripped"])
    for field_offset, value in ((8, 0), (8, 0xFFFFFFFF), (16 + 8 * 1, 0), (16 + 8 * 6, 1 << 40), (6, 3)):
        raw = bytearray(builds["noshdr-stripped"].read_bytes())
        with ElfImage(str(builds["noshdr-stripped"])) as image:
            at = image.vaddr_to_offset(found.vaddr) + field_offset
        size = 1 if field_offset == 6 else 8
        raw[at:at + size] = value.to_bytes(size, "little")
        path = tmp_path / ("corrupt-%d-%d" % (field_offset, value))
        path.write_bytes(bytes(raw))
        with ElfImage(str(path)) as image:
            assert gopclntab.find_pclntab(image) is None, (field_offset, value)
            assert GO.scan(image) is None


def test_every_truncation_of_the_table_region_fails_cleanly(builds, tmp_path):
    """Cut the file inside the pclntab (a partial download, a file still being written): the scan
    finds nothing or a checked table, and never raises."""
    src = builds["noshdr-stripped"]
    with ElfImage(str(src)) as image:
        start = image.vaddr_to_offset(table(src).vaddr)
    raw = src.read_bytes()
    for cut in (start + 4, start + 40, start + 0x60, start + 4096, start + 300000):
        path = tmp_path / ("cut-%d" % cut)
        path.write_bytes(raw[:cut])
        with ElfImage(str(path)) as image:
            assert GO.scan(image) is None or not GO.scan(image).locations


@pytest.mark.parametrize("path", OTHER_GO_BINARIES)
def test_go_binaries_of_other_releases(path):
    if not os.path.exists(path):
        pytest.skip("%s is not installed here" % path)
    go = shutil.which("go")
    with ElfImage(path) as image:
        version = gopclntab.go_version(image)
        found = GO.scan(image)
        code = {loc.point: loc for loc in found.locations}
        ret_bytes = {image.read_vaddr(r, 1) for r in code[READ.name].returns}
    if go:
        reported = subprocess.run([go, "version", path], capture_output=True, text=True, env=go_build.go_env())
        assert reported.stdout.strip() == "%s: %s" % (path, version)
    assert gopclntab.parse_version(version) >= (1, 20)
    assert found.supported and set(code) == set(FUNCS), found.missing
    assert "go1.20+" in found.notes[0]
    assert ret_bytes == {b"\xc3"} and len(code[READ.name].returns) >= 2


@pytest.mark.parametrize("text, expected", [
    ("go1.19.8", (1, 19)),
    ("go1.21rc2", (1, 21)),
    ("go1.22-20231128-RC02 cl/586117301 +6111acc8e6 X:fieldtrack,boringcrypto", (1, 22)),
    ("go1.23.1 X:nocoverageredesign", (1, 23)),
    ("devel +abc", None),
    ("go", None),
])
def test_go_release_numbers(text, expected):
    assert gopclntab.parse_version(text) == expected


def test_a_stack_abi_release_is_recognised_but_not_supported(builds, tmp_path):
    """A go1.16 build passes arguments on the stack: the version in the build info says so."""
    src = builds["stripped"]
    raw = bytearray(src.read_bytes())
    with ElfImage(str(src)) as image:
        blob = image.section_bytes(".go.buildinfo")
        at = image.vaddr_to_offset(image.section_addr(".go.buildinfo"))
    version_at = at + 33  # after the 32-byte header and the one-byte length of "go1.19.8"
    assert blob[33:41] == b"go1.19.8"
    raw[version_at:version_at + 8] = b"go1.16.9"
    path = tmp_path / "go116"
    path.write_bytes(bytes(raw))
    found = scan(path)
    assert found is not None and not found.supported and found.locations == []
    assert found.library == "Go crypto/tls (go1.16.9)"
    assert all("passes arguments on the stack" in m for m in found.missing)
