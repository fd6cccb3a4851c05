"""The one error the redaction package raises: its configuration (mode, custom patterns) is bad."""
from __future__ import annotations


class RedactionConfigError(ValueError):
    """A redaction mode or custom pattern cannot be used; the message names which and why.

    Raised when a `Redactor` is built, so the config layer can report it and keep the old config,
    never while events flow.
    """
