"""The TLS library families the sensor knows, one line each (the order is the scan order)."""
from __future__ import annotations

from typing import Tuple

from .base import TlsFamily
from .boringssl import BoringSslFamily
from .go import GoFamily
from .rustls import RustlsFamily
from .symbols import GnuTlsFamily, NssFamily, OpenSslFamily

FAMILIES: Tuple[TlsFamily, ...] = (
    OpenSslFamily(),
    GnuTlsFamily(),
    NssFamily(),
    BoringSslFamily(),
    GoFamily(),
    RustlsFamily(),
)


def bpf_files() -> Tuple[str, ...]:
    """The BPF files the families need, each once, in registry order."""
    seen = []
    for family in FAMILIES:
        if family.bpf_file and family.bpf_file not in seen:
            seen.append(family.bpf_file)
    return tuple(seen)


def family(name: str) -> TlsFamily:
    return next(f for f in FAMILIES if f.name == name)
