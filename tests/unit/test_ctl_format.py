"""oisp-ctl's human output: event lines from real OISP events (built from recorded fixtures by the
daemon's own builders), hostile or partial events, colors only on a terminal, status and sessions."""
from __future__ import annotations

import io
from datetime import datetime

import pytest

from oisp_ctl.format import (cost, duration, format_dropped, format_event, format_sessions,
                             format_status, use_color)
from oisp_daemon.events.ai import build_ai_request, build_ai_response, build_tool_call_events
from oisp_daemon.events.envelope import Clock
from oisp_daemon.providers.parse import parse_request, parse_response
from oisp_daemon.providers.registry import detect_provider
from tests.support.fixtures import (fixture_host, fixture_paths, fixture_request, fixture_response,
                                    load_fixture)

ANSI = "\033["
CONTEXT = dict(clock=Clock(offset_ns=1_700_000_000_000_000_000),
               host={"hostname": "box", "os": "linux", "arch": "x86_64"},
               process={"pid": 4242, "ppid": 1, "name": "python3"},
               actor={"uid": 1000, "user": "alice"})


def fixture_events(name):
    """ai.request, ai.response and agent.tool_call events of a recorded exchange, as the daemon
    builds them."""
    fx = load_fixture(str(next(p for p in fixture_paths("*.json") if p.name == name)))
    host = fixture_host(fx)
    req, resp = fixture_request(fx), fixture_response(fx)
    info = parse_request(detect_provider(host, None) or fx["provider"], req, host)
    out = parse_response(info, resp)
    request = build_ai_request(info, req, **CONTEXT)
    response = build_ai_response(info, out, req, resp, request_event=request, **CONTEXT)
    return request, response, build_tool_call_events(out, response)


def local_clock(ts):
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S.%f")[:12]


def test_a_response_line_has_time_type_process_model_and_summary():
    _, response, _ = fixture_events("openai-chat-tools-002.json")
    line = format_event(response)
    assert line.startswith(local_clock(response["ts"]) + " ai.response ")
    assert " python3[4242] openai/gpt-4-0613 82→16 tok $0.003420 150ms tool_calls" in line
    assert line.endswith("→ get_current_weather")


def test_a_streaming_response_shows_time_to_first_token():
    _, response, _ = fixture_events("anthropic-messages-stream-tools-002.json")
    line = format_event(response)
    assert "anthropic/claude-3-5-sonnet-20240620 506→153 tok" in line
    assert "ttft 180ms" in line and "→ get_weather, get_time" in line


def test_a_request_line_counts_messages_and_tools():
    request, _, _ = fixture_events("anthropic-messages-stream-tools-002.json")
    assert format_event(request).endswith("ai.request      python3[4242] "
                                          "anthropic/claude-3-5-sonnet-20240620 stream 1 msg 2 tools")


def test_a_tool_call_line_names_the_tool():
    _, _, tools = fixture_events("openai-chat-tools-002.json")
    assert format_event(tools[0]).endswith("agent.tool_call python3[4242] get_current_weather")


def test_an_error_response_shows_status_and_error():
    _, response, _ = fixture_events("openai-chat-error-003.json")
    line = format_event(response)
    assert "HTTP 400 invalid_request_error You uploaded an unsupported image" in line
    assert "…" in line  # long provider messages are cut


@pytest.mark.parametrize("event", [
    {}, {"event_type": 3, "data": "x", "process": [], "ts": 7},
    {"event_type": "ai.response", "data": {"usage": {"prompt_tokens": "many"}, "error": "x",
                                           "tool_calls": [None, {"name": 5}], "success": False}},
    {"event_type": "process.exec", "data": {"args": ["sh", "-c", "a\nb"]}},
    {"event_type": "network.connect", "data": {"dest": {"ip": "10.0.0.1", "port": 443}}},
])
def test_odd_events_still_give_one_line(event):
    line = format_event(event)
    assert "\n" not in line and line


def test_captured_text_cannot_break_the_line():
    event = {"event_type": "ai.response",
             "data": {"success": False, "status_code": 500,
                      "error": {"message": "line one\nline two\r\n" + "x" * 500}}}
    line = format_event(event)
    assert "\n" not in line and "\r" not in line
    assert "line one line two" in line and len(line) < 200


def test_other_event_types_get_a_summary():
    assert format_event({"event_type": "process.exec",
                         "data": {"args": ["curl", "https://api.openai.com"]}}).endswith(
        "curl https://api.openai.com")
    assert format_event({"event_type": "network.connect",
                         "data": {"dest": {"domain": "api.openai.com", "port": 443}}}).endswith(
        "api.openai.com:443")
    assert format_event({"event_type": "file.open", "data": {"path": "/etc/passwd"}}).endswith(
        "/etc/passwd")


def test_colors_only_when_asked():
    _, response, _ = fixture_events("openai-chat-tools-002.json")
    assert ANSI not in format_event(response)
    colored = format_event(response, color=True)
    assert ANSI in colored
    assert ANSI not in format_dropped(3) and ANSI in format_dropped(3, color=True)


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_use_color_needs_a_terminal_and_no_NO_COLOR(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_color(Tty()) is True
    assert use_color(io.StringIO()) is False
    monkeypatch.setenv("NO_COLOR", "1")
    assert use_color(Tty()) is False
    monkeypatch.setenv("NO_COLOR", "")  # set but empty does not count (no-color.org)
    assert use_color(Tty()) is True


@pytest.mark.parametrize("ms, text", [(812, "812ms"), (1534, "1.53s"), (95000, "95.0s"),
                                      (None, ""), ("fast", "")])
def test_duration(ms, text):
    assert duration(ms) == text


@pytest.mark.parametrize("usd, text", [(0.00342, "$0.003420"), (1.5, "$1.5000"), (0, "$0"),
                                       (1.8e-8, "<$0.000001"), (None, ""), (True, "")])
def test_cost(usd, text):
    assert cost(usd) == text


def test_dropped_notice_says_how_many_and_what_to_do():
    assert format_dropped(1) == ("-- 1 event dropped: this reader fell behind (narrow it with "
                                 "--type, --pid or --comm) --")
    assert "7 events dropped" in format_dropped(7)


def test_status_shows_known_keys_in_order_and_probes():
    text = format_status({"counters": {"events": 3}, "version": "0.1.0", "uptime_s": 3725,
                          "redaction": "safe", "future_key": "x",
                          "probes": [{"path": "/lib/libssl.so.3", "origin": "ldconfig",
                                      "symbols": ["SSL_read", "SSL_write"]}]})
    lines = text.splitlines()
    assert lines[0].split() == ["version:", "0.1.0"]
    assert lines[1].split() == ["uptime:", "1h", "2m"]
    assert "future key:     x" in lines
    assert lines[-1] == "  /lib/libssl.so.3 (origin ldconfig, 2 symbols)"


def test_status_shows_nested_counters_as_grouped_key_values():
    text = format_status({"counters": {"lost_by_uid": {"65534": {"bytes": 9, "records": 1},
                                                       "0": {"bytes": 4, "records": 2}},
                                       "lost_bytes_per_cpu": [13, 0], "events": 3, "queue_dropped_by_uid": {}}})
    assert text == ("counters:       events=3, lost_by_uid=(65534=(bytes=9, records=1), 0=(bytes=4, records=2)), "
                    "lost_bytes_per_cpu=[13, 0], queue_dropped_by_uid=none")


def test_sessions_table():
    text = format_sessions([{"name": "demo", "owner_uid": 1000, "events": 12, "redaction": "safe",
                             "created": "2025-12-22T20:15:05Z", "filters": {"types": ["ai.*"]},
                             "sink": {"path": "/var/lib/oisp-sensor/sessions/demo.jsonl"}}])
    header, row = text.splitlines()
    assert header.split() == ["NAME", "OWNER", "EVENTS", "REDACTION", "CREATED", "FILTERS", "SINK"]
    assert row.split()[:4] == ["demo", "1000", "12", "safe"]
    assert row.endswith("types=ai.* /var/lib/oisp-sensor/sessions/demo.jsonl")
    assert format_sessions([]).startswith("no sessions")
