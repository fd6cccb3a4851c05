"""Send recorded Responses API requests as WebSocket messages over HTTP/2 (RFC 8441 extended
CONNECT, `:protocol` websocket) with the h2 library and Python's ssl, and summarise the answers.

No SDK speaks WebSocket over HTTP/2 yet; this client does what one would: it waits for the
server's SETTINGS_ENABLE_CONNECT_PROTOCOL, opens the CONNECT stream with the credential, and sends
each fixture's request as a masked `response.create` text frame in the stream's DATA.

Usage: h2_websocket_client.py --ca CA.pem --fixture NAME [--fixture ...]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys

from client_common import OPENAI_TEST_KEY, TIMEOUT_S, client_context, emit

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, RemoteSettingsChanged, ResponseReceived
from h2.settings import SettingCodes

from tests.support.llm_fixtures import load_fixture
from tests.support.ws_replay import dumps, message, read_frames, response_create

HOST = "api.openai.com"
WINDOW = 1 << 24


class Client:
    def __init__(self, ca: str) -> None:
        context = client_context(ca)
        context.set_alpn_protocols(["h2"])
        self.tls = context.wrap_socket(socket.create_connection((HOST, 443), timeout=TIMEOUT_S), server_hostname=HOST)
        assert self.tls.selected_alpn_protocol() == "h2", self.tls.selected_alpn_protocol()
        self.conn = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: WINDOW})
        self.conn.increment_flow_control_window(WINDOW)
        self.flush()
        self.connect_allowed = False
        self.status = None
        self.inbound = bytearray()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.tls.sendall(data)

    def pump(self) -> None:
        data = self.tls.recv(65536)
        if not data:
            raise SystemExit("the server closed the connection")
        for event in self.conn.receive_data(data):
            if isinstance(event, RemoteSettingsChanged) and SettingCodes.ENABLE_CONNECT_PROTOCOL in event.changed_settings:
                self.connect_allowed = event.changed_settings[SettingCodes.ENABLE_CONNECT_PROTOCOL].new_value == 1
            elif isinstance(event, ResponseReceived):
                self.status = dict(event.headers).get(":status")
            elif isinstance(event, DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                self.inbound += event.data
        self.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ca", required=True)
    parser.add_argument("--fixture", action="append", required=True)
    args = parser.parse_args()
    client = Client(args.ca)
    while not client.connect_allowed:
        client.pump()
    sid = client.conn.get_next_available_stream_id()
    client.conn.send_headers(sid, [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"),
                                   (":path", "/v1/responses"), (":authority", HOST),
                                   ("authorization", "Bearer " + OPENAI_TEST_KEY), ("sec-websocket-version", "13")])
    client.flush()
    while client.status is None:
        client.pump()
    if client.status != "200":
        raise SystemExit("CONNECT answered %s" % client.status)
    answers = []
    for name in args.fixture:
        client.conn.send_data(sid, message(dumps(response_create(load_fixture(name))), os.urandom(4)))
        client.flush()
        text, last = [], None
        while last not in ("response.completed", "error"):
            client.pump()
            for opcode, payload in read_frames(client.inbound):
                event = json.loads(payload)
                last = event.get("type")
                if last == "response.output_text.delta":
                    text.append(event["delta"])
        answers.append({"fixture": name, "text": "".join(text), "last": last})
    client.conn.end_stream(sid)
    client.conn.close_connection()
    client.flush()
    client.tls.close()
    emit({"answers": answers})
    return 0 if all(a["last"] == "response.completed" for a in answers) else 1


if __name__ == "__main__":
    sys.exit(main())
