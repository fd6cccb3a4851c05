"""Real eBPF, a real SDK: an agent loop (tool calls, their results, the history resent) comes out of
`oisp-sensor record` as one `agent.tool_result` per result, linked to its `agent.tool_call`, and
all the loop's events in one trace. An OpenAI-shaped gateway on a host no table knows is seen as
`openai_compatible` with no configuration.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest

from tests.support import clients
from tests.support.oisp_schema import assert_valid_event

pytestmark = pytest.mark.bpf

GATEWAY = "llm-gateway.internal.example"  # in tests/support/tls.py SERVER_NAMES, in no provider table


def agent_loop(namespace, ca_file, base_url: str, first: str, reply: str = "openai-chat-001") -> clients.ClientResult:
    argv = clients.python_client("openai_agent_loop.py", "--ca", ca_file, "--base-url", base_url,
                                 "--first", first, "--reply", reply)
    return clients.run_client(namespace, argv)


def loop_events(sensor, pid: int, results: int) -> Dict[str, List[Dict[str, Any]]]:
    """The loop's events by type, once its three exchanges and its results are written."""
    events = sensor.wait_for_types(pid, ai_request=3, ai_response=3, agent_tool_call=results, agent_tool_result=results)
    by_type: Dict[str, List[Dict[str, Any]]] = {}
    for event in events:
        assert_valid_event(event)
        by_type.setdefault(event["event_type"], []).append(event)
    return by_type


def check_loop(by_type: Dict[str, List[Dict[str, Any]]], sent: List[Dict[str, Any]]) -> None:
    calls, results = by_type["agent.tool_call"], by_type["agent.tool_result"]
    # One result event per result, though the third request resent them all.
    assert len(results) == len(sent) == len(calls)
    requests = by_type["ai.request"]
    for call, result, expected in zip(calls, results, sent):
        assert result["related_events"][0] == {"event_id": call["event_id"], "relationship": "parent"}
        assert result["data"]["tool"]["name"] == expected["name"] == call["data"]["tool"]["name"]
        assert result["data"]["result"] == json.loads(expected["content"])
        assert result["data"]["success"] is True
        if expected["call_id"]:
            assert result["data"]["call_id"] == expected["call_id"] == call["data"]["call_id"]
        # Seen in the second request (the first that carried it).
        assert {"event_id": requests[1]["event_id"], "relationship": "related"} in result["related_events"]
        assert result["ts_mono"] == requests[1]["ts_mono"]
    traces = {e["trace_context"]["trace_id"] for events in by_type.values() for e in events}
    assert len(traces) == 1, traces


def test_openai_tool_loop_links_results_by_call_id(sensor, module_server, module_hosts, test_pki):
    result = agent_loop(module_hosts, test_pki.ca_file, "https://api.deepseek.com", "deepseek-chat-tools-001")
    summary = result.check()
    assert summary["requests"] == 3 and summary["results"][0]["call_id"]
    by_type = loop_events(sensor, result.pid, len(summary["results"]))
    check_loop(by_type, summary["results"])


def test_legacy_function_loop_links_results_by_name(sensor, module_server, module_hosts, test_pki):
    result = agent_loop(module_hosts, test_pki.ca_file, "https://api.openai.com/v1", "openai-chat-tools-002")
    summary = result.check()
    assert summary["results"][0]["call_id"] is None  # legacy function calling has no ids
    by_type = loop_events(sensor, result.pid, 1)
    check_loop(by_type, summary["results"])
    # No id in the API: the result's call_id names the tool_call event it answers.
    assert by_type["agent.tool_result"][0]["data"]["call_id"] == by_type["agent.tool_call"][0]["event_id"]


def test_openai_compatible_gateway_on_an_unknown_host(sensor, module_server, module_hosts, test_pki):
    result = agent_loop(module_hosts, test_pki.ca_file, "https://%s/v1" % GATEWAY, "deepseek-chat-tools-001")
    summary = result.check()
    by_type = loop_events(sensor, result.pid, len(summary["results"]))
    for event in by_type["ai.request"] + by_type["ai.response"]:
        provider = event["data"]["provider"]
        assert provider["name"] == "other" and provider["id"] == "openai_compatible"
        assert provider["endpoint"] == "https://%s/v1/chat/completions" % GATEWAY
        assert event["confidence"]["ai_detection_method"] == "payload_inspection"
    assert by_type["ai.request"][0]["data"]["model"]["id"] == "deepseek-reasoner"
    assert by_type["ai.response"][0]["data"]["tool_calls"][0]["name"] == "load_capability"
    check_loop(by_type, summary["results"])
