"""Short content digests: correlation without exposure ("sha256:" + first 16 hex digits)."""
from __future__ import annotations

import hashlib


def short_sha256(text: str) -> str:
    """"sha256:<first 16 hex>" of the UTF-8 bytes of `text`.

    Sixty-four bits are plenty to correlate the same prompt or key across events, and the
    OISP examples use this short form. Lone surrogates (possible in JSON-decoded text) are hashed
    as their code units rather than rejected.
    """
    data = text.encode("utf-8", "surrogatepass")
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]
