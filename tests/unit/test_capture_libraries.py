"""Which TLS libraries get uprobes."""
from __future__ import annotations

import os
import time

from oisp_daemon.capture import libraries
from tests.support.node import static_node

LDCONFIG = """\
1234 libs found in cache `/etc/ld.so.cache'
\tlibssl.so.3 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libssl.so.3
\tlibssl.so.3 (libc6) => /usr/lib/i386-linux-gnu/libssl.so.3
\tlibssl3.so (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libssl3.so
\tlibssl.so.1.1 (libc6,x86-64) => /opt/old/libssl.so.1.1
"""


def test_ldconfig_lists_only_this_architectures_libssl():
    paths = libraries.system_libssl(LDCONFIG)
    if os.uname().machine == "x86_64":
        assert paths == ["/usr/lib/x86_64-linux-gnu/libssl.so.3", "/opt/old/libssl.so.1.1"]


def test_system_libssl_exports_every_probe_symbol():
    targets = [t for t in libraries.discover() if t.origin == "system"]
    assert targets, "no system libssl found (apt-get install libssl3)"
    assert set(targets[0].symbols) == {p[0] for p in libraries.OPENSSL_PROBES}


def test_a_file_without_openssl_is_not_a_target(tmp_path):
    assert libraries.exported_symbols("/bin/true", ["SSL_write"]) == []
    junk = tmp_path / "junk.so"
    junk.write_bytes(b"not an elf file")
    assert libraries.exported_symbols(str(junk), ["SSL_write"]) == []


def test_configured_binary_that_links_openssl_statically_is_probed():
    node_path = static_node()  # the "Node from nvm" case
    targets = {t.path: t for t in libraries.discover([node_path, node_path])}
    node = targets[node_path]
    assert node.origin == "config" and "SSL_write" in node.symbols


def test_symbols_of_a_big_binary_are_looked_up_not_walked():
    # walking Node's 230k symbols takes pyelftools 15-30 s; its hash table answers at once
    start = time.monotonic()
    symbols = libraries.exported_symbols(static_node(), [p[0] for p in libraries.OPENSSL_PROBES])
    assert symbols == [p[0] for p in libraries.OPENSSL_PROBES]
    assert time.monotonic() - start < 5
