"""Send recorded Responses API requests over one WebSocket with the official ``openai`` SDK
(``client.responses.connect()``, the API's WebSocket mode) and summarise the answers.

Each fixture's request body becomes one ``response.create`` on the same connection; the events
are read up to the end of that response. ``--deflate`` offers permessage-deflate (the SDK's
websockets library then compresses), with ``--no-takeover`` without context takeover in either
direction; otherwise the connection is uncompressed.

Usage: openai_websocket_client.py --ca CA.pem --fixture NAME [--fixture ...] [--deflate [--no-takeover]]
"""
from __future__ import annotations

import argparse
import sys

from client_common import OPENAI_TEST_KEY, TIMEOUT_S, client_context, emit

import openai
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from tests.support.llm_fixtures import load_fixture
from tests.support.ws_replay import response_create

ENDS = ("response.completed", "response.failed", "response.incomplete", "error")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ca", required=True)
    parser.add_argument("--fixture", action="append", required=True)
    parser.add_argument("--deflate", action="store_true")
    parser.add_argument("--no-takeover", action="store_true")
    args = parser.parse_args()
    client = openai.OpenAI(api_key=OPENAI_TEST_KEY, base_url="https://api.openai.com/v1", max_retries=0,
                           timeout=TIMEOUT_S)
    options = {"ssl": client_context(args.ca), "compression": "deflate" if args.deflate else None,
               "open_timeout": TIMEOUT_S}
    if args.deflate and args.no_takeover:
        options.update(compression=None, extensions=[ClientPerMessageDeflateFactory(
            server_no_context_takeover=True, client_no_context_takeover=True)])
    answers = []
    with client.responses.connect(websocket_connection_options=options, max_retries=0) as connection:
        for name in args.fixture:
            connection.send(response_create(load_fixture(name)))
            text, last = [], None
            for event in connection:
                last = event.type
                if last == "response.output_text.delta":
                    text.append(event.delta)
                if last in ENDS:
                    break
            answers.append({"fixture": name, "text": "".join(text), "last": last})
    emit({"answers": answers})
    return 0 if all(a["last"] == "response.completed" for a in answers) else 1


if __name__ == "__main__":
    sys.exit(main())
