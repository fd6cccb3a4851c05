"""The interface every TLS library family implements (one module per family, one registry line).

A family knows how to recognise its library in an ELF file and where its probe points are, and
names the BPF file whose functions those points run. Attaching, caching, discovery and
`tls-scan` are the same for every family (capture/discovery.py, capture/loader.py).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Dict, Optional, Tuple

from ..elf_image import ElfImage
from ..probe_table import ProbePoint, Scan


class TlsFamily(ABC):
    name: str = ""
    bpf_file: Optional[str] = None  # a file in bpf/ compiled with bpf/emit.h; None: no probes
    points: Tuple[ProbePoint, ...] = ()
    # True for families that search code or data (signatures, pclntab) rather than look names
    # up: they are skipped in a file where a name-based family already found its library, so
    # that a big binary like Node is probed in a tenth of a second instead of a second.
    searches_code: bool = False

    def point(self, name: str) -> ProbePoint:
        return self._by_name()[name]

    def _by_name(self) -> Dict[str, ProbePoint]:
        return {p.name: p for p in self.points}

    @abstractmethod
    def scan(self, image: ElfImage) -> Optional[Scan]:
        """This family's findings in `image`, or None when the file is not this family. Every
        returned Location is verified on the file (never a guess). Never raises on odd files."""
