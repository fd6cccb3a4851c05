"""Families found by exported or static function names: OpenSSL, GnuTLS, NSS.

Each is a table of (probe point, BPF entry function, BPF return function) and the name of the
file that carries it; a file belongs to the family when it defines the family's anchor symbol.
"""
from __future__ import annotations

from typing import Optional, Tuple

from ..elf_image import ElfImage
from ..probe_table import Location, ProbePoint, Scan
from .base import TlsFamily


class SymbolFamily(TlsFamily):
    """A library whose probe points are functions named in its symbol tables."""

    library: str = ""
    anchor: str = ""  # a file defining this symbol is of the family

    def describe(self, image: ElfImage) -> str:
        soname = image.soname()
        if soname:
            return f"{self.library} ({soname}, shared library)"
        return f"{self.library} (linked into the executable)"

    def scan(self, image: ElfImage) -> Optional[Scan]:
        # The anchor through the dynamic hash table only (instant), unless the file has none (a
        # static executable): walking the static table of every unstripped file a process maps
        # would take seconds for a big one.
        if image.dynamic_symbol(self.anchor) is None and (image.has_dynamic_hash or image.symbol(self.anchor) is None):
            return None
        scan = Scan(self.name, self.describe(image))
        for point in self.points:
            addr = image.symbol(point.name)
            if addr is None:
                scan.missing.append(f"{point.name}: not defined")
            else:
                scan.locations.append(Location(point.name, addr, "symbol"))
        return scan


class OpenSslFamily(SymbolFamily):
    name = "openssl"
    library = "OpenSSL"
    anchor = "SSL_write"
    bpf_file = "openssl.c"
    points: Tuple[ProbePoint, ...] = (
        ProbePoint("SSL_write", "probe_ssl_write_int"),
        ProbePoint("SSL_write_ex", "probe_ssl_write"),
        ProbePoint("SSL_read", "probe_ssl_read_int_enter", "probe_ssl_read_return"),
        ProbePoint("SSL_read_ex", "probe_ssl_read_enter", "probe_ssl_read_return"),
        ProbePoint("SSL_set_fd", "probe_ssl_set_fd"),
        ProbePoint("SSL_free", "probe_ssl_free"),
    )

    def scan(self, image: ElfImage) -> Optional[Scan]:
        # NSS's libssl3.so exports no SSL_write, so the anchor keeps it out; BoringSSL builds
        # that export symbols (unlike Bun's) have the same API and are probed the same way.
        return super().scan(image)


class GnuTlsFamily(SymbolFamily):
    """gnutls_record_send/recv have SSL_write_ex/SSL_read's argument order (session, data, size);
    recv returns ssize_t, whose low 32 bits hold any count one call can return."""

    name = "gnutls"
    library = "GnuTLS"
    anchor = "gnutls_record_send"
    bpf_file = "openssl.c"
    points = (
        ProbePoint("gnutls_record_send", "probe_ssl_write"),
        ProbePoint("gnutls_record_recv", "probe_ssl_read_int_enter", "probe_ssl_read_return"),
        ProbePoint("gnutls_transport_set_int2", "probe_ssl_set_fd"),
        ProbePoint("gnutls_transport_set_ptr", "probe_ssl_set_fd"),
        ProbePoint("gnutls_deinit", "probe_ssl_free"),
    )


class NssFamily(SymbolFamily):
    """NSPR's PR_Write/PR_Read/PR_Send/PR_Recv serve every kind of descriptor; bpf/nss.c keeps
    only layered ones (NSS's SSL layer sits on top of the socket), so file I/O costs the trap
    and two user-memory reads."""

    name = "nss"
    library = "NSS (NSPR I/O)"
    anchor = "PR_Write"
    bpf_file = "nss.c"
    points = (
        ProbePoint("PR_Write", "probe_nss_write"),
        ProbePoint("PR_Send", "probe_nss_write"),
        ProbePoint("PR_Read", "probe_nss_read_enter", "probe_ssl_read_return"),
        ProbePoint("PR_Recv", "probe_nss_read_enter", "probe_ssl_read_return"),
        ProbePoint("PR_Close", "probe_ssl_free"),
    )
