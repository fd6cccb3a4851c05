"""Secret-bearing names (env vars, options, JSON keys) and where a command line carries them."""
from __future__ import annotations

import pytest

from oisp_daemon.redact.commandline import args_marker, secret_values, split_words
from oisp_daemon.redact.names import is_secret_name


@pytest.mark.parametrize(
    "name",
    [
        "OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "DB_PASSWORD", "apiKey",
        "api_key", "x-api-key", "X-Auth-Token", "--hf-token", "--password", "client_secret",
        "Authorization", "Set-Cookie", "privateKey", "PGPASSWORD", "OPENAIAPIKEY", "clientsecret",
    ],
)  # fmt: skip
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    ["PATH", "HOME", "max_tokens", "prompt_tokens", "--max-tokens", "tokenizer", "key_prefix",
     "key_hash", "key", "sort_key", "KEYBOARD", "passwordless", "session_id", "monkey",
     "detokenize", "secretary"],
)  # fmt: skip
def test_ordinary_names(name):
    assert not is_secret_name(name)


def test_secret_values_positions():
    argv = ["app", "--api-key", "abc", "--token=xyz", "DB_PASSWORD=pw", "--max-tokens", "100", "-v"]
    assert secret_values(argv) == [(2, 0), (3, 8), (4, 12)]


def test_option_followed_by_another_option_has_no_value():
    assert secret_values(["app", "--password", "--verbose"]) == []
    assert secret_values(["app", "--password"]) == []


def test_value_of_a_secret_option_is_counted_once():
    assert secret_values(["app", "--token", "API_TOKEN=abc"]) == [(2, 0)]


def test_split_words_round_trips():
    parts = split_words("  python3  app.py\t--x ")
    assert parts[0::2] == ["", "python3", "app.py", "--x", ""]
    assert "".join(parts) == "  python3  app.py\t--x "


def test_args_marker():
    assert args_marker(3) == "[REDACTED:3 args]"
