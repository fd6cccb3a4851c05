"""What a TLS library family is probed at, and what a scan of one file found.

A family (capture/families/) names its probe points once: the BPF functions for a point's entry
and return. A scan of a file says where each point is in that file and how it was found, so that
attaching is the same loop for every family and `oisp-sensor tls-scan` can show the evidence.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

RETURN_URETPROBE = "uretprobe"
# The return probe goes on each RET instruction of the function: uretprobes rewrite the return
# address on the stack, which Go's stack copying and traceback cannot cope with.
RETURN_AT_RET_INSTRUCTIONS = "ret_instructions"


@dataclass(frozen=True)
class ProbePoint:
    name: str  # the library's function name, e.g. "SSL_write"
    entry_fn: Optional[str]  # BPF function run at entry (None: return only)
    return_fn: Optional[str] = None  # BPF function run at return (None: entry only)
    return_at: str = RETURN_URETPROBE


@dataclass(frozen=True)
class Location:
    point: str  # ProbePoint.name
    address: int  # virtual address in the file (as st_value; bcc converts it to a file offset)
    method: str  # how it was found: "symbol", "signature:<id>", "pclntab", ...
    returns: Tuple[int, ...] = ()  # RET instruction addresses (RETURN_AT_RET_INSTRUCTIONS)


@dataclass
class Scan:
    """One family's findings in one file."""

    family: str
    library: str  # for people: "OpenSSL (libssl.so.3)", "Go crypto/tls (go1.19)", ...
    locations: List[Location] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)  # "SSL_read: no signature matched"
    notes: List[str] = field(default_factory=list)
    supported: bool = True  # False: recognised but not capturable (reported as unseen)

    @property
    def attachable(self) -> bool:
        return self.supported and bool(self.locations)
