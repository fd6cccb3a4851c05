"""Command lines and environments: every way a key is written on a command line is redacted in
safe and minimal mode, argument boundaries survive, and keys without a vendor prefix count.

Keys are assembled at run time so that secret scanners do not flag this file.
"""
from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oisp_daemon.events.context import cmdline_from_proc
from oisp_daemon.redact import Redactor
from oisp_daemon.redact.commandline import join_argv, named_value_spans, split_cmdline
from oisp_daemon.redact.names import is_credential_name

# Vendor-less keys (Azure, gateways): nothing in their shape says "key".
AZURE = "3f9c" + "0a7d52e14b6c8e9f0a1b2c3d4e5f6a7b"
GATEWAY = "gw" + "Zq81LmX04pR"
OPENAI = "sk-proj-" + "Xq7Lm2Pz9Rt4Vb8Nc1Kd6Hf3Jg5Ws0Ea" * 2
COOKIE = "sess" + "ion9f8e7d"
PASSWORD = "hun" + "ter2 horse"  # holds a space: only argument boundaries keep it whole


def event_with(cmdline: str) -> dict:
    return {"event_type": "ai.request", "process": {"pid": 1, "cmdline": cmdline}, "data": {}}


def redacted_cmdline(mode: str, cmdline: str) -> str:
    return Redactor(mode).redact_event(event_with(cmdline))["process"]["cmdline"]


def proc_line(*argv: str) -> str:
    """The cmdline the sensor builds from /proc/<pid>/cmdline for this argv."""
    return cmdline_from_proc(b"\0".join(a.encode() for a in argv) + b"\0")


# Each form names where the key sits; the secret is the part that must not survive.
FORMS = {
    "authorization bearer": (("curl", "-H", "Authorization: Bearer " + GATEWAY, "https://gw/v1"), GATEWAY),
    "authorization no scheme": (("curl", "-H", "authorization:" + AZURE), AZURE),
    "api-key header": (("curl", "-H", "api-key: " + AZURE, "https://x.openai.azure.com/"), AZURE),
    "x-api-key header": (("curl", "--header", "x-api-key: " + GATEWAY), GATEWAY),
    "subscription key header": (("curl", "-H", "Ocp-Apim-Subscription-Key: " + AZURE), AZURE),
    "api_key query": (("curl", "https://gw.example/v1/chat?api_key=" + GATEWAY + "&model=m"), GATEWAY),
    "token query": (("curl", "https://gw.example/v1/chat?model=m&token=" + GATEWAY), GATEWAY),
    "key query": (("curl", "https://generativelanguage.googleapis.com/v1?key=" + AZURE), AZURE),
    "cookie -b": (("curl", "-b", "sid=" + COOKIE + "; theme=dark", "https://x/"), COOKIE),
    "cookie --cookie=": (("curl", "--cookie=sid=" + COOKIE), COOKIE),
    "cookie header": (("curl", "-H", "Cookie: a=1; sid=" + COOKIE), COOKIE),
    "json api_key": (("curl", "-d", json.dumps({"model": "m", "api_key": GATEWAY})), GATEWAY),
    "json token": (("curl", "-d", json.dumps({"token": AZURE})), AZURE),
    "json password with space": (("curl", "--data", json.dumps({"password": PASSWORD})), PASSWORD),
    "json secret": (("app", "--config", json.dumps({"client": {"secret": GATEWAY}})), GATEWAY),
    "--api-key X": (("llm", "--api-key", AZURE, "hello"), AZURE),
    "--token=X": (("llm", "--token=" + GATEWAY), GATEWAY),
    "--password with space": (("mysql", "--password", PASSWORD), PASSWORD),
    "-u user:pass": (("curl", "-u", "alice:" + PASSWORD, "https://x/"), PASSWORD),
    "-uuser:pass": (("curl", "-ualice:" + GATEWAY), GATEWAY),
    "env-style arg": (("env", "OPENAI_API_KEY=" + OPENAI, "python3", "app.py"), OPENAI),
    "azure env-style arg": (("env", "AZURE_OPENAI_KEY=" + AZURE, "app"), AZURE),
    "url password": (("git", "clone", "https://bob:" + GATEWAY + "@git.example/r.git"), GATEWAY),
    "bearer in a script": (("sh", "-c", "curl -H 'Authorization: Bearer %s' https://x" % GATEWAY), GATEWAY),
    "oauth2 bearer option": (("curl", "--oauth2-bearer", GATEWAY, "https://x"), GATEWAY),
}


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("mode", ["safe", "minimal"])
def test_no_key_survives_in_the_command_line(form, mode):
    argv, secret = FORMS[form]
    out = redacted_cmdline(mode, proc_line(*argv))
    for part in secret.split():
        assert part not in out, out


@pytest.mark.parametrize("form", sorted(FORMS))
def test_no_key_survives_when_the_line_lost_its_quotes(form):
    """A line joined on spaces (another source, an older sensor) still loses every key."""
    argv, secret = FORMS[form]
    out = redacted_cmdline("safe", " ".join(argv))
    assert secret.split()[0] not in out, out


def test_safe_mode_keeps_what_is_not_secret():
    line = proc_line("curl", "-sS", "-H", "Authorization: Bearer " + GATEWAY, "-H", "Content-Type: application/json",
                     "-d", json.dumps({"model": "gpt-4o", "api_key": AZURE}), "https://gw.example/v1?model=m&key=" + AZURE)
    assert redacted_cmdline("safe", line) == (
        "curl -sS -H 'Authorization: Bearer [REDACTED:named_secret]' -H 'Content-Type: application/json' "
        """-d '{"model": "gpt-4o", "api_key": "[REDACTED:named_secret]"}' """
        "https://gw.example/v1?model=m&key=[REDACTED:named_secret]"
    )


def test_a_known_key_format_keeps_its_detector_marker():
    assert redacted_cmdline("safe", proc_line("llm", "--api-key", OPENAI)) == "llm --api-key [REDACTED:openai_key]"


def test_header_split_over_arguments_is_seen_as_one_string():
    # `curl -H Authorization: Bearer KEY` unquoted: three arguments, one header.
    assert redacted_cmdline("safe", proc_line("curl", "-H", "Authorization:", "Bearer", GATEWAY)) == (
        "curl -H Authorization: Bearer [REDACTED:named_secret]"
    )


def test_minimal_mode_keeps_only_the_program():
    assert redacted_cmdline("minimal", proc_line("curl", "-H", "x-api-key: " + AZURE, "https://x")) == (
        "curl [REDACTED:3 args]"
    )


def test_full_mode_keeps_the_command_line():
    """full removes nothing, by definition; only admins may choose it (control/authz.py)."""
    line = proc_line("curl", "-H", "x-api-key: " + AZURE)
    assert redacted_cmdline("full", line) == line


def test_redacting_twice_changes_nothing_more():
    redactor = Redactor("safe")
    once = redactor.redact_event(event_with(proc_line(*FORMS["json api_key"][0])))
    twice = redactor.redact_event(once)
    assert twice["process"] == once["process"]
    assert twice["confidence"]["redaction_applied"] is False  # nothing new found in the markers


@pytest.mark.parametrize("mode", ["safe", "minimal"])
def test_environment_by_name_and_by_value(mode):
    env = {"AZURE_OPENAI_KEY": AZURE, "HTTPS_PROXY": "http://u:" + GATEWAY + "@proxy:3128",
           "CURL_OPTS": "-H 'x-api-key: %s'" % GATEWAY, "LANG": "C.UTF-8"}
    event = {"event_type": "process.exec", "process": {"pid": 1, "env": env}, "data": {"env": env}}
    out = json.dumps(Redactor(mode).redact_event(event))
    assert AZURE not in out and GATEWAY not in out


def test_environment_keeps_ordinary_values_in_safe_mode():
    out = Redactor("safe").redact_event({"process": {"pid": 1, "env": {"LANG": "C.UTF-8", "API_KEY": GATEWAY}}})
    assert out["process"]["env"] == {"LANG": "C.UTF-8", "API_KEY": "[REDACTED:named_secret]"}


@pytest.mark.parametrize("name", ["AZURE_OPENAI_KEY", "Ocp-Apim-Subscription-Key", "key", "sig", "X-Amz-Signature",
                                  "--oauth2-bearer", "auth", "api-key", "OPENAI_API_KEY"])
def test_credential_names(name):
    assert is_credential_name(name)


@pytest.mark.parametrize("name", ["model", "Content-Type", "max_tokens", "keyboard", "key_id", "--verbose", "HOME"])
def test_ordinary_names_in_command_lines(name):
    assert not is_credential_name(name)


def test_spans_skip_markers():
    assert named_value_spans("--token [REDACTED:named_secret] x-api-key: [REDACTED:jwt]") == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0")), max_size=8))
def test_join_and_split_are_inverse(argv):
    assert split_cmdline(join_argv(argv)) == argv


def test_split_refuses_unbalanced_quotes():
    assert split_cmdline("echo 'open") is None
    assert split_cmdline('a "b\\"c" d\\ e') == ["a", 'b"c', "d e"]


def test_proc_cmdline_is_cut_between_arguments():
    line = cmdline_from_proc(b"app\0--api-key\0" + b"k" * 100 + b"\0tail\0", limit=30)
    assert line == "app --api-key [truncated: 2 more args]"


def test_urls_outside_content_lose_query_credentials_and_passwords():
    event = {"event_type": "ai.request", "data": {"provider": {"endpoint": "https://gw.example/v1?token=" + GATEWAY}},
             "attrs": {"upstream": "https://svc:%s@10.0.0.1/v1?model=m&sig=%s" % (AZURE, GATEWAY)}}
    out = Redactor("safe").redact_event(event)
    assert out["data"]["provider"]["endpoint"] == "https://gw.example/v1?token=[REDACTED:named_secret]"
    assert out["attrs"]["upstream"] == "https://svc:[REDACTED:named_secret]@10.0.0.1/v1?model=m&sig=[REDACTED:named_secret]"


def test_a_repeated_command_line_gives_the_same_result_and_counts():
    """Every event of a process carries its command line; the second one comes from the cache."""
    redactor = Redactor("safe")
    event = event_with(proc_line("curl", "-H", "x-api-key: " + AZURE, "--api-key", OPENAI))
    first, second = redactor.redact_event(event), redactor.redact_event(event)
    assert first == second
    assert {f["type"]: f["count"] for f in first["attrs"]["redaction"]["findings"]} == {"named_secret": 1, "openai_key": 1}


def test_a_hostile_command_line_is_redacted_once_per_redactor():
    redactor = Redactor("safe")
    event = event_with(proc_line(*(["x-api-key:", GATEWAY] * 1500)))
    first = time.process_time()
    redactor.redact_event(event)
    first = time.process_time() - first
    again = time.process_time()
    for _ in range(10):
        redactor.redact_event(event)
    again = time.process_time() - again
    assert again < first  # ten cached redactions cost less than the first one
