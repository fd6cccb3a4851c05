"""Recognise names (environment variables, options, JSON keys) whose value is a credential.

A value under such a name is secret whatever its format, which the detectors cannot know:
`DB_PASSWORD=hunter2`, `--hf-token abc`, `{"api_key": "..."}`. Names are split into words
(snake, kebab, dotted and camel case) and matched word by word, so `max_tokens`, `tokenizer` and
`key_prefix` are not secret while `api_key`, `apiKey`, `AWS_SECRET_ACCESS_KEY`, `X-Auth-Token` and
`PGPASSWORD` are.
"""
from __future__ import annotations

import re

_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
_SECRET_WORDS = frozenset(
    {
        "password", "passwd", "pwd", "passphrase", "secret", "token", "credential",
        "credentials", "apikey", "authorization", "cookie",
    }
)  # fmt: skip
# Run-together names: PGPASSWORD, APITOKEN, clientsecret, OPENAIAPIKEY.
_SECRET_SUFFIXES = ("password", "passwd", "token", "secret", "apikey")
# "key" alone names map keys, sort keys, ...; it is a credential only with one of these before it.
_KEY_QUALIFIERS = frozenset(
    {"api", "access", "secret", "private", "auth", "signing", "encryption", "client", "master", "session"}
)

NAMED_SECRET = "named_secret"  # detector name for values redacted because of their name


def is_secret_name(name: str) -> bool:
    """True when `name` says its value is a credential."""
    words = [w.lower() for w in _WORD_SPLIT.split(name) if w]
    for i, word in enumerate(words):
        if word in _SECRET_WORDS or word.endswith(_SECRET_SUFFIXES):
            return True
        if word == "key" and i > 0 and words[i - 1] in _KEY_QUALIFIERS:
            return True
    return False


# Last words that make a name a credential where names are chosen by people typing commands:
# command-line options, environment variables, URL query parameters, header names
# (AZURE_OPENAI_KEY, Ocp-Apim-Subscription-Key, ?key=, ?sig=, --oauth2-bearer, ?auth=).
# Too loose for JSON members of API bodies ("key" names map keys there), so only used there.
_CREDENTIAL_LAST_WORDS = frozenset({"key", "sig", "signature", "auth", "bearer"})


def is_credential_name(name: str) -> bool:
    """True when `name`, in a command line, environment or URL, says its value is a credential.

    Wider than is_secret_name: any name whose last word is "key", "sig", "signature", "auth" or
    "bearer" counts, as do vendor-less names like `api-key`. Over-redacting a `--sort-key` value
    there costs little; missing an Azure key in another user's command line leaks it.
    """
    if is_secret_name(name):
        return True
    words = [w.lower() for w in _WORD_SPLIT.split(name) if w]
    return bool(words) and words[-1] in _CREDENTIAL_LAST_WORDS
