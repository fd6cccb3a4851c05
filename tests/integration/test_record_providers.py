"""Real clients, real eBPF: every recorded exchange of every provider, sent by curl and by the
provider's official SDK, must come out of `oisp-sensor record` as events that say what the
recording says.

The replay server answers with the recorded response; the fixture's `expect` block (computed by
parsing the recording) is what the events must report, field by field.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Tuple

import pytest

from tests.clients.client_common import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, SDK_TEST_KEY
from tests.support import clients
from tests.integration.conftest import OLLAMA_TLS_HOST
from tests.support.clients import CURL_SIGV4, CURL_TEST_KEY
from tests.support.llm_fixtures import Fixture, load_fixtures
from tests.support.oisp_schema import assert_valid_event
from tests.support.prices import PRICED_AS, expected_cost

pytestmark = pytest.mark.bpf

FIXTURES: Dict[str, Fixture] = load_fixtures()
# The openai SDK is also the documented client of Azure OpenAI and of the OpenAI-compatible APIs
# (DeepSeek, Together, OpenRouter, Cerebras); the anthropic SDK of Anthropic.
OPENAI_SDK = ("openai", "azure_openai", "deepseek", "together", "openrouter", "cerebras")
SDK_FIXTURES: Dict[str, Fixture] = {name: fx for name, fx in FIXTURES.items() if fx.provider in OPENAI_SDK + ("anthropic",)}
# Providers with an official SDK of their own on PyPI: tests/clients/provider_sdk_client.py.
OWN_SDK = ("gemini", "vertex_ai", "bedrock", "cohere", "mistral", "groq", "ollama")
OWN_SDK_FIXTURES: Dict[str, Fixture] = {name: fx for name, fx in FIXTURES.items() if fx.provider in OWN_SDK}
# The fixture's provider -> the OISP provider name (and id, for "other") the events must carry.
OISP_PROVIDER = {"gemini": ("google", None), "vertex_ai": ("google", None), "bedrock": ("aws_bedrock", None),
                 "deepseek": ("other", "deepseek"), "openrouter": ("other", "openrouter"), "cerebras": ("other", "cerebras")}
OISP_FINISH = {"stop", "length", "tool_calls", "content_filter", "error", "other"}
SECRETS = (OPENAI_TEST_KEY, ANTHROPIC_TEST_KEY, CURL_TEST_KEY, CURL_SIGV4.rsplit("=", 1)[1], SDK_TEST_KEY)
PASSES: Dict[str, Dict[str, int]] = {}  # provider -> client -> passed exchanges, for the table


def passed(fx: Fixture, client: str) -> None:
    counts = PASSES.setdefault(fx.provider, {})
    counts[client] = counts.get(client, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def pass_table(request):
    """After the module: exchanges that passed, per provider and client, against the recordings."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not PASSES:
        return
    totals = {}
    for fx in FIXTURES.values():
        totals[fx.provider] = totals.get(fx.provider, 0) + 1
    reporter.write_line("")
    reporter.write_line("%-14s %9s %6s %6s" % ("provider", "fixtures", "curl", "sdk"))
    for provider in sorted(totals):
        counts = PASSES.get(provider, {})
        reporter.write_line("%-14s %9d %6d %6d" % (provider, totals[provider], counts.get("curl", 0), counts.get("sdk", 0)))


def exchange(sensor, pid: int, fx: Fixture) -> Tuple[Dict[str, Any], Dict[str, Any], List[Dict[str, Any]]]:
    """The pid's single request/response pair and its tool calls, once all have been written."""
    tools = len(fx.expect["tool_calls"])
    events = sensor.wait_for_types(pid, ai_request=1, ai_response=1, agent_tool_call=tools)
    by_type: Dict[str, List[Dict[str, Any]]] = {}
    for event in events:
        by_type.setdefault(event["event_type"], []).append(event)
    assert len(by_type["ai.request"]) == 1 and len(by_type["ai.response"]) == 1, [e["event_type"] for e in events]
    return by_type["ai.request"][0], by_type["ai.response"][0], by_type.get("agent.tool_call", [])


def check_against_recording(
    fx: Fixture, request: Dict[str, Any], response: Dict[str, Any], tool_events, pid: int, credential: bool,
    abort_on_stream_error: bool = False,
) -> None:
    expect = fx.expect
    for event in [request, response] + tool_events:
        assert_valid_event(event)
        assert event["process"]["pid"] == pid
        assert event["source"]["collector"] == "oisp-sensor"
    req, resp = request["data"], response["data"]

    oisp_name, oisp_id = OISP_PROVIDER.get(fx.provider, (fx.provider, None))
    assert req["provider"]["name"] == resp["provider"]["name"] == oisp_name
    assert req["provider"].get("id") == oisp_id
    assert req["model"]["id"] == expect["request_model"]
    assert req["streaming"] is expect["streaming"]
    if credential:
        assert req["auth"]["type"] == "api_key" and req["auth"]["key_hash"].startswith("sha256:")
        if fx.provider == "bedrock":  # attributed to the SigV4 access key id, as a prefix and hash
            assert req["auth"]["key_prefix"] == "AKIA"
    else:
        assert "auth" not in req

    assert resp["request_id"] == req["request_id"]
    assert response["related_events"] == [{"event_id": request["event_id"], "relationship": "parent"}]
    assert resp["status_code"] == fx.status
    assert resp["success"] is (fx.status < 400 and expect["error_type"] is None)  # a 200 stream can carry an error
    assert resp["model"]["id"] == expect["model"]

    usage = resp.get("usage", {})
    for field, key in (("prompt_tokens", "input_tokens"), ("completion_tokens", "output_tokens")):
        if expect[key] is None:
            assert field not in usage
        else:
            assert usage[field] == expect[key]

    if expect["finish_reason"] is None:
        assert "provider_finish_reason" not in resp
    else:
        assert resp["provider_finish_reason"] == expect["finish_reason"]
        assert resp["finish_reason"] in OISP_FINISH

    assert [c["name"] for c in resp.get("tool_calls", [])] == expect["tool_calls"]
    assert [t["data"]["tool"]["name"] for t in tool_events] == expect["tool_calls"]
    for tool in tool_events:
        assert tool["related_events"] == [{"event_id": response["event_id"], "relationship": "caused_by"}]

    if expect["text_prefix"] is not None:
        assert resp["choices"][0]["message"]["content"][:40] == expect["text_prefix"]
    if expect["error_type"] is not None:
        assert resp["error"]["type"] == expect["error_type"]
    else:
        assert "error" not in resp

    priced = PRICED_AS[fx.name + ".json"]
    if priced is None:
        assert not {"input_cost_usd", "output_cost_usd", "total_cost_usd"} & set(usage)
    else:
        input_cost, output_cost = expected_cost(fx.raw, priced)
        assert usage["input_cost_usd"] == pytest.approx(input_cost, rel=1e-9, abs=1e-12)
        assert usage["output_cost_usd"] == pytest.approx(output_cost, rel=1e-9, abs=1e-12)

    # Timing from kernel timestamps: the response ends after the request starts.
    assert request["ts_mono"] <= response["ts_mono"]
    assert resp["latency_ms"] >= 0
    if expect["streaming"] and fx.status < 400 and (expect["text_prefix"] or expect["tool_calls"]):
        assert 0 <= resp["time_to_first_token_ms"] <= resp["latency_ms"]
    confidence = response["confidence"]
    if abort_on_stream_error and expect["streaming"] and expect["error_type"] and fx.status < 400:
        # An SDK raises at the error event and closes the connection before the stream's end:
        # the sensor says the client aborted, which is what happened.
        assert confidence["completeness"] == "full" or "client_abort" in confidence["limitations"], confidence
    else:
        assert confidence["completeness"] == "full", confidence

    raw = json.dumps([request, response] + tool_events)
    for secret in SECRETS:
        assert secret not in raw


@pytest.mark.parametrize("name", sorted(SDK_FIXTURES))
def test_official_sdk_exchange_is_recorded(name, sensor, module_server, module_hosts, test_pki):
    fx = FIXTURES[name]
    build = clients.anthropic_client if name.startswith("anthropic-") else clients.openai_client
    result = clients.run_client(module_hosts, build(name, test_pki.ca_file))
    summary = result.check()
    request, response, tools = exchange(sensor, result.pid, fx)
    check_against_recording(fx, request, response, tools, result.pid, credential=True, abort_on_stream_error=True)
    passed(fx, "sdk")
    assert response["process"]["exe"].startswith("/usr/bin/python3")
    # The request event describes what the SDK really sent.
    sent = json.loads(summary["requests"][0]["body"]) if summary["requests"][0].get("body") else {}
    if "messages" in sent:
        # Anthropic's top-level "system" is the conversation's system message in OISP terms.
        assert request["data"]["messages_count"] == len(sent["messages"]) + (1 if sent.get("system") else 0)


@pytest.mark.parametrize("name", sorted(OWN_SDK_FIXTURES))
def test_providers_own_sdk_exchange_is_recorded(name, sensor, module_server, module_hosts, test_pki):
    fx = FIXTURES[name]
    result = clients.run_client(module_hosts, clients.python_client("provider_sdk_client.py", "--ca", test_pki.ca_file, "--fixture", name))
    result.check()
    request, response, tools = exchange(sensor, result.pid, fx)
    # Every SDK sends its credential (a key, a bearer token, SigV4 with an access key id) but
    # Ollama's, which has none.
    check_against_recording(fx, request, response, tools, result.pid, credential=fx.provider != "ollama",
                            abort_on_stream_error=True)
    assert response["process"]["exe"].startswith("/usr/bin/python3")
    passed(fx, "sdk")


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_curl_exchange_is_recorded(name, sensor, module_server, module_hosts, test_pki, tmp_path):
    fx = FIXTURES[name]
    # Ollama's recordings are plain HTTP on 127.0.0.1:11434: replayed over TLS under a name of its own.
    url = f"https://{OLLAMA_TLS_HOST}{fx.path}" if fx.scheme == "http" else None
    cmd = clients.curl_command(fx, test_pki.ca_file, tmp_path, url=url)
    result = clients.run_client(module_hosts, cmd.argv)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["response_code"] == fx.status
    request, response, tools = exchange(sensor, result.pid, fx)
    # Some recordings kept no credential header at all; curl then sends none.
    credential = any(v == "REDACTED" for k, v in fx.request_headers.items()
                     if k.lower() in ("authorization", "x-api-key", "api-key", "x-goog-api-key"))
    check_against_recording(fx, request, response, tools, result.pid, credential)
    passed(fx, "curl")
    process, actor = response["process"], response["actor"]
    assert process["exe"] == "/usr/bin/curl" and process["name"] == "curl"
    assert process["cmdline"].startswith("curl -sS --http1.1")
    # unshare and sh exec in place, so curl's parent is this test process (from the fork tracepoint).
    assert process["ppid"] == os.getpid()
    assert actor["uid"] == 0 and actor["user"] == "root"


@pytest.mark.parametrize("framework,name", [
    ("litellm", "openai-chat-001"),
    ("litellm", "anthropic-messages-001"),
    ("langchain-openai", "openai-chat-001"),
    ("langchain-anthropic", "anthropic-messages-001"),
    ("langchain-google", "gemini-generate-002"),
])
def test_agent_framework_exchange_is_recorded(framework, name, sensor, module_server, module_hosts, test_pki):
    """litellm and LangChain build their own requests; the sensor sees them like the plain SDKs'."""
    fx = FIXTURES[name]
    argv = clients.python_client("framework_client.py", "--ca", test_pki.ca_file, "--fixture", name, "--framework", framework)
    result = clients.run_client(module_hosts, argv)
    summary = result.check()
    assert summary["text"], summary
    request, response, tools = exchange(sensor, result.pid, fx)
    check_against_recording(fx, request, response, tools, result.pid, credential=True)
