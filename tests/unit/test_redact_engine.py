"""Redactor on whole OISP events: modes, what counts as content, structure kept, input untouched.

The events are built by hand after shared/oisp-spec/examples/*.json, with secrets planted
in content, command lines, environment and URLs. Key-shaped values are assembled at run time so
that secret scanners do not flag this file.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re

import jsonschema
import pytest

from oisp_daemon.redact import MODES, RedactionConfigError, Redactor
from tests.support.paths import SCHEMA_DIR

RANDOM = "Xq7Lm2Pz9Rt4Vb8Nc1Kd6Hf3Jg5Ws0Ea"
OPENAI_KEY = "sk-proj-" + RANDOM * 3
GOOGLE_KEY = "AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"
AWS_ID = "AKIA" + "IOSFODNN7EXAMPLE"
GITHUB = "ghp_" + "16C7e42F292c6912E7710c838347Ae178B4a"
CARD = "4111 1111 1111 1111"
SPEC = SCHEMA_DIR
SCHEMA_BASE = "https://oisp.dev/schema/v0.1/"


def sha16(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def envelope(event_type: str, data: dict, **extra) -> dict:
    event = {
        "oisp_version": "0.1",
        "event_id": "01JFWK8X4J5K6L7M8N9O0P1Q2R",
        "event_type": event_type,
        "ts": "2025-12-22T14:30:16.345678Z",
        "ts_mono": 1703254216345678000,
        "host": {"hostname": "dev-laptop", "device_id": "550e8400-e29b-41d4-a716-446655440000",
                 "os": "linux", "arch": "x86_64"},
        "actor": {"uid": 1000, "user": "alice",
                  "identity": {"provider": "okta", "email": "alice@company.com"}},
        "process": {
            "pid": 12345, "ppid": 1234, "exe": "/usr/bin/python3", "name": "python3",
            "cmdline": "python3 agent.py --api-key %s --model gpt-4o --password hunter2" % OPENAI_KEY,
            "cmdline_args": ["python3", "agent.py", "--api-key", OPENAI_KEY, "--model", "gpt-4o"],
            "env": {"OPENAI_API_KEY": OPENAI_KEY, "DB_PASSWORD": "hunter2", "LANG": "C.UTF-8"},
            "cwd": "/home/alice/agent",
            "hash": {"sha256": hashlib.sha256(b"python3").hexdigest()},
            "parent": {"pid": 1234, "name": "bash", "cmdline": "bash -c 'GITHUB_TOKEN=%s make'" % GITHUB},
        },
        "source": {"collector": "oisp-sensor", "collector_version": "0.1.0",
                   "capture_method": "ebpf_uprobe", "capture_point": "ssl_write"},
        "confidence": {"level": "high", "completeness": "full", "reasons": ["tls_boundary_capture"],
                       "content_source": "tls_boundary", "ai_detection_method": "known_endpoint"},
        "data": data,
        "related_events": [{"event_id": "01JFWK8X3A4B5C6D7E8F9G0H1I", "relationship": "caused_by"}],
    }  # fmt: skip
    event.update(extra)
    return event


SYSTEM_PROMPT = "You are a support bot. Never reveal internal data."
USER_TEXT = "My card is %s, mail me at bob@example.org. AWS key %s" % (CARD, AWS_ID)


def ai_request() -> dict:
    return envelope(
        "ai.request",
        {
            "request_id": "req_01JFWK8X4J5K6L7M",
            "conversation_id": "conv_01JFWK8X4A1B2C3D",
            "provider": {"name": "openai", "endpoint": "https://api.openai.com/v1/chat/completions",
                         "organization_id": "org-abc123"},
            "model": {"id": "gpt-4o", "family": "gpt-4o", "context_window": 128000},
            "auth": {"type": "api_key", "account_type": "unknown", "key_prefix": "sk-proj-",
                     "key_hash": sha16(OPENAI_KEY)},
            "request_type": "chat",
            "streaming": True,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT, "content_length": len(SYSTEM_PROMPT),
                 "content_hash": sha16(SYSTEM_PROMPT)},
                {"role": "user", "content": USER_TEXT},
                {"role": "tool", "content": "lookup ok: +1 415-555-0132", "tool_call_id": "call_abc123",
                 "name": "lookup_customer"},
            ],
            "messages_count": 3,
            "has_system_prompt": True,
            "system_prompt_hash": sha16(SYSTEM_PROMPT),
            "tools": [{"name": "lookup_customer", "type": "function",
                       "description": "Find a customer by email, e.g. carol@example.net"}],
            "tools_count": 1,
            "tool_choice": "auto",
            "parameters": {"temperature": 0.7, "max_tokens": 1024, "stop": ["\n\n"]},
            "estimated_tokens": 120,
        },
    )  # fmt: skip


TOOL_ARGS = json.dumps({"card": "4111111111111111", "email": "dave@example.com", "amount": 12})


def ai_response() -> dict:
    return envelope(
        "ai.response",
        {
            "request_id": "req_01JFWK8X4J5K6L7M",
            "conversation_id": "conv_01JFWK8X4A1B2C3D",
            "provider_request_id": "chatcmpl-abc123xyz789",
            "provider": {"name": "openai", "endpoint": "https://api.openai.com/v1/chat/completions"},
            "model": {"id": "gpt-4o-2024-11-20", "family": "gpt-4o"},
            "status_code": 200,
            "success": True,
            "choices": [{"index": 0, "finish_reason": "tool_calls",
                         "message": {"role": "assistant", "content": "Charging the card now."}}],
            "tool_calls": [{"id": "call_abc123", "name": "charge", "type": "function",
                            "arguments": TOOL_ARGS, "arguments_hash": sha16(TOOL_ARGS)}],
            "tool_calls_count": 1,
            "usage": {"prompt_tokens": 1823, "completion_tokens": 156, "total_tokens": 1979,
                      "total_cost_usd": 0.00612},
            "latency_ms": 2222,
            "time_to_first_token_ms": 187,
            "finish_reason": "tool_calls",
        },
    )  # fmt: skip


def ai_error_response() -> dict:
    return envelope(
        "ai.response",
        {
            "request_id": "req_2",
            "provider": {"name": "google",
                         "endpoint": "https://generativelanguage.googleapis.com/v1beta/models/"
                                     "gemini-1.5-pro:generateContent?key=" + GOOGLE_KEY},
            "model": {"id": "gemini-1.5-pro"},
            "status_code": 400,
            "success": False,
            "error": {"type": "INVALID_ARGUMENT", "code": "400",
                      "message": "API key not valid: %s (owner erin@example.com)" % GOOGLE_KEY},
        },
    )  # fmt: skip


def streaming_chunk() -> dict:
    return envelope(
        "ai.streaming_chunk",
        {"request_id": "req_3", "chunk_index": 4,
         "delta": {"role": "assistant", "content": "reach me on frank@example.com"}},
    )  # fmt: skip


def agent_tool_call() -> dict:
    return envelope(
        "agent.tool_call",
        {
            "agent": {"name": "custom-agent", "type": "server", "session_id": "sess_abc123"},
            "tool": {"name": "http_get", "type": "http", "provider": "native"},
            "call_id": "call_abc123",
            "triggered_by": "llm_decision",
            "arguments": {
                "url": "https://maps.googleapis.com/maps/api?key=" + GOOGLE_KEY,
                "headers": {"Authorization": "token " + GITHUB, "X-Custom-Password": "hunter2"},
                "retries": 3,
                "cc": ["grace@example.com", {"nested": CARD}],
            },
            "risk_level": "low",
        },
    )  # fmt: skip


def agent_tool_result() -> dict:
    return envelope(
        "agent.tool_result",
        {
            "tool": {"name": "read_file", "type": "file_read"},
            "call_id": "call_abc123",
            "success": True,
            "result": "contact ivan@example.com, card " + CARD,
            "result_size_bytes": 50,
            "duration_ms": 12,
        },
    )


def process_exec() -> dict:
    return envelope(
        "process.exec",
        {
            "exe": "/usr/bin/curl",
            "args": ["curl", "-H", "Authorization: Bearer " + OPENAI_KEY, "--user-token", "utok-9f8e7d6c",
                     "https://api.openai.com/v1/models"],
            "env": {"GITHUB_TOKEN": GITHUB, "HOME": "/root", "SMTP_PASSWORD": "pw-2024!"},
            "cwd": "/root",
        },
    )  # fmt: skip


EVENTS = {
    "ai.request": (ai_request, "events/ai.schema.json#/$defs/request"),
    "ai.response": (ai_response, "events/ai.schema.json#/$defs/response"),
    "ai.response error": (ai_error_response, "events/ai.schema.json#/$defs/response"),
    "ai.streaming_chunk": (streaming_chunk, "events/ai.schema.json#/$defs/streaming_chunk"),
    "agent.tool_call": (agent_tool_call, "events/agent.schema.json#/$defs/tool_call"),
    "agent.tool_result": (agent_tool_result, "events/agent.schema.json#/$defs/tool_result"),
    "process.exec": (process_exec, "events/process.schema.json#/$defs/exec"),
}


@pytest.fixture(scope="module")
def validate():
    """Validate an event's envelope and its data against the published OISP v0.1 schema."""
    if not SPEC.is_dir():
        pytest.skip("OISP schema not found (set OISP_SPEC_DIR)")
    store = {}
    for path in SPEC.rglob("*.schema.json"):
        doc = json.loads(path.read_text())
        store[doc["$id"]] = doc
    root = store[SCHEMA_BASE + "envelope.schema.json"]
    resolver = jsonschema.RefResolver.from_schema(root, store=store)

    def check(event: dict, data_schema: str) -> None:
        jsonschema.Draft202012Validator(root, resolver=resolver).validate(event)
        data_validator = jsonschema.Draft202012Validator({"$ref": SCHEMA_BASE + data_schema}, resolver=resolver)
        data_validator.validate(event["data"])

    return check


def findings(event: dict) -> dict:
    return {f["type"]: f["count"] for f in event["attrs"]["redaction"]["findings"]}


def leaks(event: dict, *secrets: str) -> list:
    text = json.dumps(event)
    return [s for s in secrets if s in text]


# --- schema and structure ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(EVENTS))
def test_hand_built_events_are_valid_before_redaction(kind, validate):
    build, data_schema = EVENTS[kind]
    validate(build(), data_schema)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", sorted(EVENTS))
def test_redacted_events_still_validate(kind, mode, validate):
    build, data_schema = EVENTS[kind]
    validate(Redactor(mode).redact_event(build()), data_schema)


STRUCTURAL = [
    ("event_id",), ("event_type",), ("ts",), ("ts_mono",), ("source",), ("related_events",),
    ("host",), ("actor",), ("process", "pid"), ("process", "exe"), ("process", "hash"),
    ("data", "request_id"), ("data", "conversation_id"), ("data", "provider"), ("data", "model"),
    ("data", "auth"), ("data", "system_prompt_hash"), ("data", "tools", 0, "name"),
    ("data", "parameters"), ("data", "messages", 0, "role"), ("data", "messages", 0, "content_hash"),
    ("data", "messages", 2, "tool_call_id"),
]  # fmt: skip


def dig(obj, path):
    for part in path:
        obj = obj[part]
    return obj


@pytest.mark.parametrize("mode", MODES)
def test_structural_fields_are_untouched(mode):
    event = ai_request()
    out = Redactor(mode).redact_event(event)
    for path in STRUCTURAL:
        assert dig(out, path) == dig(event, path), path


@pytest.mark.parametrize("mode", ["safe", "minimal"])
def test_response_ids_model_and_usage_are_untouched(mode):
    event = ai_response()
    out = Redactor(mode).redact_event(event)
    for key in ("request_id", "provider_request_id", "model", "usage", "status_code", "finish_reason"):
        assert out["data"][key] == event["data"][key]
    call = out["data"]["tool_calls"][0]
    assert (call["id"], call["name"], call["arguments_hash"]) == ("call_abc123", "charge", sha16(TOOL_ARGS))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", sorted(EVENTS))
def test_input_event_is_never_mutated_nor_shared(kind, mode):
    event = EVENTS[kind][0]()
    before = copy.deepcopy(event)
    out = Redactor(mode).redact_event(event)
    assert event == before
    # The copy shares nothing mutable: another session may change its own copy freely.
    out["data"].clear()
    out["process"]["env"].clear()
    out["confidence"]["reasons"].append("x")
    out["related_events"][0].clear()
    assert event == before


# --- safe mode ----------------------------------------------------------------------------------


def test_safe_mode_replaces_each_finding_with_its_marker():
    out = Redactor("safe").redact_event(ai_request())
    messages = out["data"]["messages"]
    assert messages[0]["content"] == SYSTEM_PROMPT
    assert messages[1]["content"] == (
        "My card is [REDACTED:card_number], mail me at [REDACTED:email]. AWS key [REDACTED:aws_access_key_id]"
    )
    assert messages[2]["content"] == "lookup ok: [REDACTED:phone_number]"
    assert out["data"]["tools"][0]["description"] == "Find a customer by email, e.g. [REDACTED:email]"
    assert out["confidence"]["redaction_applied"] is True
    assert out["confidence"]["redaction_profile"] == "safe"


def test_safe_mode_counts_findings_by_detector():
    out = Redactor("safe").redact_event(ai_request())
    assert out["attrs"]["redaction"]["findings"] == [
        {"type": "aws_access_key_id", "count": 1},
        {"type": "card_number", "count": 1},
        {"type": "email", "count": 2},
        {"type": "named_secret", "count": 3},
        {"type": "openai_key", "count": 3},
        {"type": "phone_number", "count": 1},
    ]


def test_safe_mode_command_line_and_environment():
    proc = Redactor("safe").redact_event(ai_request())["process"]
    assert proc["cmdline"] == (
        "python3 agent.py --api-key [REDACTED:openai_key] --model gpt-4o --password [REDACTED:named_secret]"
    )
    assert proc["cmdline_args"] == ["python3", "agent.py", "--api-key", "[REDACTED:openai_key]", "--model", "gpt-4o"]
    assert proc["env"] == {"OPENAI_API_KEY": "[REDACTED:openai_key]", "DB_PASSWORD": "[REDACTED:named_secret]",
                           "LANG": "C.UTF-8"}
    # An assignment's value is the rest of its argument: a password may hold spaces.
    assert proc["parent"]["cmdline"] == "bash -c GITHUB_TOKEN=[REDACTED:named_secret]"
    assert proc["cwd"] == "/home/alice/agent"


def test_safe_mode_tool_call_arguments_text():
    out = Redactor("safe").redact_event(ai_response())
    args = json.loads(out["data"]["tool_calls"][0]["arguments"])
    assert args == {"card": "[REDACTED:card_number]", "email": "[REDACTED:email]", "amount": 12}
    assert out["data"]["choices"][0]["message"] == {"role": "assistant", "content": "Charging the card now."}


def test_safe_mode_agent_arguments_nested_strings():
    args = Redactor("safe").redact_event(agent_tool_call())["data"]["arguments"]
    assert args == {
        "url": "https://maps.googleapis.com/maps/api?key=[REDACTED:google_api_key]",
        "headers": {"Authorization": "[REDACTED:named_secret]", "X-Custom-Password": "[REDACTED:named_secret]"},
        "retries": 3,
        "cc": ["[REDACTED:email]", {"nested": "[REDACTED:card_number]"}],
    }


def test_secrets_outside_content_are_removed_but_pii_there_is_kept():
    out = Redactor("safe").redact_event(ai_error_response())
    assert out["data"]["provider"]["endpoint"].endswith("?key=[REDACTED:google_api_key]")
    assert out["data"]["error"]["message"] == "API key not valid: [REDACTED:google_api_key] (owner [REDACTED:email])"
    assert out["actor"]["identity"]["email"] == "alice@company.com"  # identity, not content


def test_process_exec_args_and_env():
    data = Redactor("safe").redact_event(process_exec())["data"]
    assert data["args"] == ["curl", "-H", "Authorization: Bearer [REDACTED:openai_key]", "--user-token",
                            "[REDACTED:named_secret]", "https://api.openai.com/v1/models"]
    assert data["env"] == {"GITHUB_TOKEN": "[REDACTED:github_token]", "HOME": "/root",
                           "SMTP_PASSWORD": "[REDACTED:named_secret]"}
    assert data["exe"] == "/usr/bin/curl"


@pytest.mark.parametrize("kind", sorted(EVENTS))
@pytest.mark.parametrize("mode", ["safe", "minimal"])
def test_no_planted_secret_survives(kind, mode):
    out = Redactor(mode).redact_event(EVENTS[kind][0]())
    assert leaks(out, OPENAI_KEY, GOOGLE_KEY, AWS_ID, GITHUB, CARD, "4111111111111111", "hunter2",
                 "pw-2024!", "utok-9f8e7d6c") == []


def test_event_without_findings_is_marked_not_redacted():
    event = envelope("ai.request", {"request_id": "r", "messages": [{"role": "user", "content": "hello"}]})
    del event["process"]
    out = Redactor("safe").redact_event(event)
    assert out["data"] == event["data"]
    assert out["confidence"]["redaction_applied"] is False
    assert out["confidence"]["redaction_profile"] == "safe"
    assert "attrs" not in out


def test_findings_are_added_beside_existing_attrs():
    event = ai_request()
    event["attrs"] = {"local_model": False, "redaction": {"note": "kept"}}
    out = Redactor("safe").redact_event(event)
    assert out["attrs"]["local_model"] is False
    assert out["attrs"]["redaction"]["note"] == "kept"
    assert findings(out)["email"] == 2


def test_content_parts_and_lists_of_strings():
    event = envelope(
        "ai.request",
        {"request_id": "r", "input": ["a@example.com", "plain"],
         "messages": [{"role": "user", "content": [{"type": "text", "text": "x b@example.com"}]}]},
    )  # fmt: skip
    data = Redactor("safe").redact_event(event)["data"]
    assert data["input"] == ["[REDACTED:email]", "plain"]
    assert data["messages"][0]["content"] == [{"type": "text", "text": "x [REDACTED:email]"}]


def test_existing_redacted_object_keeps_its_facts_but_not_a_leaky_preview():
    marker = {"$redacted": {"reason": "pii_detected", "original_length": 40, "hash": "sha256:abc",
                            "preview": "mail hank@example.com"}}  # fmt: skip
    event = envelope("ai.request", {"request_id": "r", "messages": [{"role": "user", "content": marker}]})
    safe = Redactor("safe").redact_event(event)["data"]["messages"][0]["content"]["$redacted"]
    assert safe == {"reason": "pii_detected", "original_length": 40, "hash": "sha256:abc",
                    "preview": "mail [REDACTED:email]"}  # fmt: skip
    minimal = Redactor("minimal").redact_event(event)["data"]["messages"][0]["content"]["$redacted"]
    assert "preview" not in minimal and minimal["hash"] == "sha256:abc"


# --- minimal mode -------------------------------------------------------------------------------


def test_minimal_mode_content_becomes_redacted_content_object():
    out = Redactor("minimal").redact_event(ai_request())
    assert out["data"]["messages"][0]["content"] == {
        "$redacted": {"reason": "policy", "redaction_profile": "minimal",
                      "original_length": len(SYSTEM_PROMPT), "hash": sha16(SYSTEM_PROMPT)}
    }  # fmt: skip
    user = out["data"]["messages"][1]["content"]["$redacted"]
    assert user["original_length"] == len(USER_TEXT) and user["hash"] == sha16(USER_TEXT)
    assert user["findings"] == [{"type": "aws_access_key_id", "count": 1}, {"type": "card_number", "count": 1},
                                {"type": "email", "count": 1}]
    assert out["confidence"]["redaction_applied"] is True
    assert out["confidence"]["redaction_profile"] == "minimal"


def test_minimal_mode_uses_strings_where_the_schema_wants_strings():
    description = ai_request()["data"]["tools"][0]["description"]
    out = Redactor("minimal").redact_event(ai_request())
    assert out["data"]["tools"][0]["description"] == "[REDACTED:policy original_length=%d hash=%s]" % (
        len(description),
        sha16(description),
    )
    error = Redactor("minimal").redact_event(ai_error_response())["data"]["error"]
    assert error["message"].startswith("[REDACTED:policy original_length=")
    assert (error["type"], error["code"]) == ("INVALID_ARGUMENT", "400")
    delta = Redactor("minimal").redact_event(streaming_chunk())["data"]["delta"]
    assert delta["content"].startswith("[REDACTED:policy ") and delta["role"] == "assistant"


def test_minimal_mode_tool_arguments():
    # ai tool_call arguments: the schema's oneOf [string, object, redacted_content] rejects a
    # redacted_content (it is an object too), so arguments text becomes the string form.
    call = Redactor("minimal").redact_event(ai_response())["data"]["tool_calls"][0]
    assert call["arguments"] == "[REDACTED:policy original_length=%d hash=%s]" % (len(TOOL_ARGS), sha16(TOOL_ARGS))
    args = Redactor("minimal").redact_event(agent_tool_call())["data"]["arguments"]
    assert args["retries"] == 3
    assert set(args["headers"]) == {"Authorization", "X-Custom-Password"}
    assert args["cc"][1]["nested"]["$redacted"]["findings"] == [{"type": "card_number", "count": 1}]


def test_raw_tool_arguments_kept_in_attrs_are_content():
    event = agent_tool_call()
    event["attrs"] = {"arguments_raw": '{"to": "judy@example.com", "truncat', "parse_error": "bad json"}
    safe = Redactor("safe").redact_event(event)["attrs"]
    assert safe["arguments_raw"] == '{"to": "[REDACTED:email]", "truncat'
    assert safe["parse_error"] == "bad json"
    minimal = Redactor("minimal").redact_event(event)["attrs"]
    assert minimal["arguments_raw"].startswith("[REDACTED:policy original_length=")
    assert minimal["parse_error"] == "bad json"


def test_tool_result_text():
    assert Redactor("safe").redact_event(agent_tool_result())["data"]["result"] == (
        "contact [REDACTED:email], card [REDACTED:card_number]"
    )
    result = Redactor("minimal").redact_event(agent_tool_result())["data"]["result"]
    assert result.startswith("[REDACTED:policy original_length=")


def test_minimal_mode_command_lines_keep_only_the_program():
    proc = Redactor("minimal").redact_event(ai_request())["process"]
    assert proc["cmdline"] == "python3 [REDACTED:7 args]"
    assert proc["cmdline_args"] == ["python3", "[REDACTED:5 args]"]
    assert proc["parent"]["cmdline"] == "bash [REDACTED:2 args]"  # -c and its quoted script
    assert proc["env"]["LANG"] == "[REDACTED:policy original_length=7 hash=%s]" % sha16("C.UTF-8")
    data = Redactor("minimal").redact_event(process_exec())["data"]
    assert data["args"] == ["curl", "[REDACTED:5 args]"]


def test_minimal_mode_counts_what_it_dropped():
    counts = findings(Redactor("minimal").redact_event(ai_request()))
    assert counts["openai_key"] == 3  # cmdline, cmdline_args, env (the hash in auth is not a key)
    assert counts["card_number"] == 1 and counts["email"] == 2


def test_minimal_mode_program_alone_is_kept():
    event = envelope("ai.request", {"request_id": "r"})
    event["process"] = {"pid": 1, "cmdline": "ollama", "cmdline_args": ["ollama"]}
    proc = Redactor("minimal").redact_event(event)["process"]
    assert (proc["cmdline"], proc["cmdline_args"]) == ("ollama", ["ollama"])


# --- full mode ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(EVENTS))
def test_full_mode_removes_nothing(kind):
    event = EVENTS[kind][0]()
    out = Redactor("full", [{"name": "x", "regex": "python3"}]).redact_event(event)
    assert out["confidence"] == dict(event["confidence"], redaction_applied=False, redaction_profile="full")
    out["confidence"] = event["confidence"]
    assert out == event


# --- custom patterns and configuration ---------------------------------------------------------


def custom_event() -> dict:
    return envelope(
        "ai.request",
        {"request_id": "r", "messages": [{"role": "user", "content": "employee EMP-123456 ticket T#77 x@example.com"}]},
    )  # fmt: skip


PATTERNS = [{"name": "employee_id", "regex": r"EMP-\d{6}"}, {"name": "ticket", "regex": r"T#\d+", "replacement": "<ticket>"}]


def test_custom_patterns_apply_in_safe_mode_beside_detectors():
    out = Redactor("safe", PATTERNS).redact_event(custom_event())
    assert out["data"]["messages"][0]["content"] == "employee [REDACTED:employee_id] ticket <ticket> [REDACTED:email]"
    assert findings(out)["employee_id"] == 1 and findings(out)["ticket"] == 1


def test_custom_patterns_are_counted_in_minimal_mode():
    out = Redactor("minimal", PATTERNS).redact_event(custom_event())
    inner = out["data"]["messages"][0]["content"]["$redacted"]
    assert {f["type"] for f in inner["findings"]} == {"employee_id", "ticket", "email"}


def test_invalid_custom_regex_is_a_config_error_naming_the_pattern():
    with pytest.raises(RedactionConfigError, match="'bad_one'"):
        Redactor("safe", [{"name": "bad_one", "regex": "[unclosed"}])


def test_unknown_mode_is_a_config_error():
    with pytest.raises(RedactionConfigError, match=r"unknown redaction mode 'paranoid'.*safe, minimal, full"):
        Redactor("paranoid")


def test_no_regex_is_compiled_while_redacting(monkeypatch):
    redactors = [Redactor(mode, PATTERNS) for mode in MODES]

    def refuse(*args, **kwargs):
        raise AssertionError("re.compile called while redacting")

    monkeypatch.setattr(re, "compile", refuse)
    for redactor in redactors:
        for build, _ in EVENTS.values():
            redactor.redact_event(build())


def test_default_mode_is_safe():
    assert Redactor().mode == "safe"
