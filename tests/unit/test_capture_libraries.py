"""Which TLS libraries get uprobes."""
from __future__ import annotations

import os
import shutil
import time

import pytest

from oisp_daemon.capture import libraries
from oisp_daemon.capture.elf_image import ElfImage
from oisp_daemon.capture.families import family
from oisp_daemon.capture.loader import Attached, CaptureOptions, TlsCapture
from tests.support.node import static_node

LDCONFIG = """\
1234 libs found in cache `/etc/ld.so.cache'
\tlibssl.so.3 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libssl.so.3
\tlibssl.so.3 (libc6) => /usr/lib/i386-linux-gnu/libssl.so.3
\tlibssl3.so (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libssl3.so
\tlibssl.so.1.1 (libc6,x86-64) => /opt/old/libssl.so.1.1
\tlibgnutls.so.30 (libc6,x86-64) => /lib/x86_64-linux-gnu/libgnutls.so.30
\tlibgnutls-openssl.so.27 (libc6,x86-64) => /lib/x86_64-linux-gnu/libgnutls-openssl.so.27
\tlibnspr4.so (libc6,x86-64) => /lib/x86_64-linux-gnu/libnspr4.so
"""


def test_ldconfig_lists_only_this_architectures_tls_libraries():
    paths = libraries.system_libraries(LDCONFIG)
    if os.uname().machine == "x86_64":
        assert paths == ["/usr/lib/x86_64-linux-gnu/libssl.so.3", "/opt/old/libssl.so.1.1",
                         "/lib/x86_64-linux-gnu/libgnutls.so.30", "/lib/x86_64-linux-gnu/libnspr4.so"]


OPENSSL_POINTS = {p.name for p in family("openssl").points}


def points(target):
    return {loc.point for scan in target.scans for loc in scan.locations}


def test_system_libssl_exports_every_probe_symbol():
    targets = [t for t in libraries.discover() if t.origin == "system" and t.families == ["openssl"]]
    assert targets, "no system libssl found (apt-get install libssl3)"
    assert points(targets[0]) == OPENSSL_POINTS
    assert all(loc.method == "symbol" for loc in targets[0].scans[0].locations)


def test_a_file_without_openssl_is_not_a_target(tmp_path):
    assert [s.family for s in libraries.scan_file("/bin/true")] == []
    junk = tmp_path / "junk.so"
    junk.write_bytes(b"not an elf file")
    assert libraries.scan_file(str(junk)) == []
    assert libraries.probe_target(str(junk), "config") is None


def test_configured_binary_that_links_openssl_statically_is_probed():
    node_path = static_node()  # the "Node from nvm" case
    targets = {t.path: t for t in libraries.discover([node_path, node_path])}
    node = targets[node_path]
    assert node.origin == "config" and "SSL_write" in points(node)


def test_symbols_of_a_big_binary_are_looked_up_not_walked():
    # walking Node's 230k symbols takes pyelftools 15-30 s; its hash table answers at once
    start = time.monotonic()
    with ElfImage(static_node()) as image:
        assert all(image.dynamic_symbol(name) for name in OPENSSL_POINTS)
    assert time.monotonic() - start < 5


# -- one file, one target: identity is (device, inode) after following links ------------------


@pytest.fixture
def libssl():
    targets = [t for t in libraries.discover() if t.origin == "system" and t.families == ["openssl"]]
    assert targets, "no system libssl found (apt-get install libssl3)"
    return targets[0].path


@pytest.fixture
def lib_copy(libssl, tmp_path):
    """A private copy of libssl (its own inode) with a symlink and a hard link to it."""
    copy = tmp_path / "libssl-copy.so.3"
    shutil.copyfile(libssl, copy)
    (tmp_path / "symlink.so").symlink_to(copy)
    os.link(copy, tmp_path / "hardlink.so")
    return copy


def test_links_to_one_file_share_its_identity_and_a_copy_does_not(lib_copy, libssl):
    one = libraries.file_identity(str(lib_copy))
    assert one == libraries.file_identity(str(lib_copy.parent / "symlink.so"))
    assert one == libraries.file_identity(str(lib_copy.parent / "hardlink.so"))
    assert one != libraries.file_identity(libssl)
    st = os.stat(lib_copy)
    assert one == (st.st_dev, st.st_ino)


def test_identity_of_what_is_no_regular_file_is_none(tmp_path):
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    assert libraries.file_identity(str(tmp_path / "missing")) is None
    assert libraries.file_identity(str(tmp_path / "dangling")) is None
    assert libraries.file_identity(str(tmp_path)) is None
    assert libraries.file_identity("/dev/null") is None
    assert libraries.file_identity("bad\0path") is None


def test_merged_usr_paths_to_the_system_libssl_are_one_target(libssl, tmp_path):
    (tmp_path / "link.so").symlink_to(libssl)
    lib_path = "/lib/" + os.path.relpath(libssl, "/usr/lib")
    paths = [libssl, lib_path, str(tmp_path / "link.so")]
    targets = [t for t in libraries.discover(paths) if t.identity == libraries.file_identity(libssl)]
    assert len(targets) == 1 and targets[0].origin == "system"


def test_discover_probes_a_hard_linked_file_once_named_by_its_first_path(lib_copy):
    hard, sym = str(lib_copy.parent / "hardlink.so"), str(lib_copy.parent / "symlink.so")
    config = [t for t in libraries.discover([hard, sym, str(lib_copy)]) if t.origin == "config"]
    assert len(config) == 1
    assert config[0].path == hard and config[0].identity == libraries.file_identity(str(lib_copy))
    assert points(config[0]) == OPENSSL_POINTS


def test_probe_target_resolves_links_and_refuses_files_without_openssl(lib_copy, tmp_path):
    target = libraries.probe_target(str(lib_copy.parent / "symlink.so"), "config")
    assert target is not None and target.path == str(lib_copy) and target.origin == "config"
    assert libraries.probe_target("/bin/true", "config") is None
    assert libraries.probe_target(str(tmp_path / "missing"), "config") is None


def test_capture_attaches_a_file_once_whatever_path_names_it(lib_copy):
    """A second path to an attached file returns the attachment it has: no second set of uprobes
    (the BPF object is not even needed to see it, as nothing is attached)."""
    capture = TlsCapture(CaptureOptions())
    first = libraries.probe_target(str(lib_copy), "config")
    attached = Attached(first, ["SSL_write"])
    capture.attached.append(attached)
    for other in ("symlink.so", "hardlink.so"):
        again = libraries.probe_target(str(lib_copy.parent / other), "config")
        assert capture.attached_file(again.identity) is attached
        assert capture.attach_target(again) is attached
    assert capture.attached == [attached]
