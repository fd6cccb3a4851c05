"""capture.tls_servers: a gateway's inbound exchanges are decoded, and the provider calls it makes
while serving one point back to it. Records are fed to a real Pipeline as the kernel writes them."""
from __future__ import annotations

from typing import Any, Dict, List

import pytest

from oisp_daemon.capture import records as rec
from oisp_daemon.events.context import HostContext, ProcessCache
from oisp_daemon.pipeline import Pipeline
from tests.support.oisp_schema import assert_valid_event
from tests.unit.test_pipeline_pairing import Capture, chat_request, chat_response

GATEWAY = 5151
INBOUND = (GATEWAY, 0x7F0000001000)  # the connection its client opened to it
OUTBOUND = (GATEWAY, 0x7F0000002000)  # its own call to the provider


def gateway_request(mark: str) -> bytes:
    return chat_request(mark).replace(b"Host: api.openai.com", b"Host: gateway.internal:4000")


def make_pipeline(events: List[Dict[str, Any]], tmp_path, servers) -> Pipeline:
    host = HostContext(hostname="test", os="linux", arch="x86_64", kernel_version="6.18")
    return Pipeline(emit=events.append, provider_hosts={}, max_message_bytes=1 << 20, idle_timeout_s=30,
                    ignore_connection=lambda pid, ssl: None, host=host,
                    processes=ProcessCache(proc_root=str(tmp_path)), tls_servers=servers)


class GatewayCapture(Capture):
    def call(self, direction: str, data: bytes, key=INBOUND, lose: bool = False) -> None:
        seq = self.seq.get(key, -1) + 1
        self.seq[key] = seq
        self.pipeline.handle(rec.DataChunk(
            direction=direction, pid=key[0], tid=key[0], uid=1000, ssl=key[1], seq=seq, total=len(data),
            offset=0, ts_ns=self.tick(), comm="gateway", data=data, read_failed=False))


def serve_one(capture: GatewayCapture, mark: str) -> None:
    capture.read(gateway_request(mark), INBOUND)  # the gateway reads its client's request
    capture.write(chat_request(mark + "-upstream"), OUTBOUND)  # and calls the provider
    capture.read(chat_response(mark + "-upstream"), OUTBOUND)
    capture.write(chat_response(mark), INBOUND)  # then answers its client


def by_type(events, kind):
    return [e for e in events if e["event_type"] == kind]


def test_a_configured_gateway_has_its_inbound_exchange_decoded_and_linked(tmp_path):
    events: List[Dict[str, Any]] = []
    capture = GatewayCapture(make_pipeline(events, tmp_path, ["gateway"]))
    serve_one(capture, "one")
    requests, responses = by_type(events, "ai.request"), by_type(events, "ai.response")
    assert len(requests) == len(responses) == 2
    inbound = next(e for e in requests if e["attrs"].get("exchange_side") == "server")
    outbound = next(e for e in requests if e is not inbound)
    assert "one" in inbound["data"]["messages"][0]["content"]
    assert outbound["related_events"][-1] == {"event_id": inbound["event_id"], "relationship": "caused_by"}
    assert outbound["attrs"]["served_request_id"] == inbound["data"]["request_id"]
    inbound_answer = next(e for e in responses if e["data"]["request_id"] == inbound["data"]["request_id"])
    assert inbound_answer["attrs"]["exchange_side"] == "server"
    assert inbound_answer["confidence"]["completeness"] == "full"
    for event in events:
        assert_valid_event(event)


def test_a_later_provider_call_outside_any_served_request_is_not_linked(tmp_path):
    events: List[Dict[str, Any]] = []
    capture = GatewayCapture(make_pipeline(events, tmp_path, ["gateway"]))
    serve_one(capture, "one")
    later = (GATEWAY, 0x7F0000003000)
    capture.write(chat_request("alone"), later)
    capture.read(chat_response("alone"), later)
    alone = [e for e in by_type(events, "ai.request") if "alone" in e["data"]["messages"][0]["content"]]
    assert len(alone) == 1 and "served_request_id" not in alone[0].get("attrs", {})


@pytest.mark.parametrize("servers", [[], ["another"]])
def test_an_unconfigured_process_reading_a_request_is_not_decoded_as_a_server(tmp_path, servers):
    events: List[Dict[str, Any]] = []
    capture = GatewayCapture(make_pipeline(events, tmp_path, servers))
    serve_one(capture, "one")
    assert all(e.get("attrs", {}).get("exchange_side") != "server" for e in events)
    assert len(by_type(events, "ai.request")) == 1  # only its own provider call


def test_a_gateway_connection_whose_first_bytes_are_no_request_is_left_alone(tmp_path):
    events: List[Dict[str, Any]] = []
    capture = GatewayCapture(make_pipeline(events, tmp_path, ["gateway"]))
    capture.read(b"\x16\x03\x01garbage that is no request", INBOUND)
    capture.write(chat_request("x"), OUTBOUND)
    capture.read(chat_response("x"), OUTBOUND)
    requests = by_type(events, "ai.request")
    assert len(requests) == 1 and "served_request_id" not in requests[0].get("attrs", {})
