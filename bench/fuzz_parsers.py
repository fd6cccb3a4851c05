"""Fuzz every API family's parsers for a fixed time each, with hypothesis, from the recordings.

For each family, hypothesis draws a recorded exchange of that family (../shared/fixtures/llm)
and mutates it: bytes of the request or response body flipped, cut, duplicated or replaced by
JSON of its own making; the live stream decoder is fed the mutated body in arbitrary pieces. The
parsers must never raise and must return their typed results: a malformed exchange gives
`parse_error` or a partial answer, never an exception that would stop the pipeline.

    .venv/bin/python bench/fuzz_parsers.py --minutes 10            # every family, one after another
    .venv/bin/python bench/fuzz_parsers.py --minutes 1 --family gemini

Prints, per family, the wall time, the examples run and any failure (with the example). Not run
by the test suite (tests/unit/test_providers_robustness.py runs a short version of the same idea).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from oisp_daemon.providers.exchange import AiRequestInfo, AiResponseInfo  # noqa: E402
from oisp_daemon.providers.families import FAMILIES  # noqa: E402
from oisp_daemon.providers.parse import family_for, parse_request, parse_response, stream_decoder  # noqa: E402
from oisp_daemon.providers.registry import detect_provider  # noqa: E402
from tests.support.fixtures import (  # noqa: E402
    fixture_host, fixture_paths, fixture_request, fixture_response, http_request, http_response, load_fixture,
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 2**40) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=6),
    max_leaves=30,
)


def corpus() -> Dict[str, List[Dict[str, Any]]]:
    """Exchanges by the family that parses them: the recordings, and for the families no
    recording covers (Hugging Face, Replicate) exchanges of the documented shapes."""
    by_family: Dict[str, List[Dict[str, Any]]] = {}
    items = []
    for path in fixture_paths("*.json"):
        fx = load_fixture(str(path))
        items.append((detect_provider(fixture_host(fx), None) or fx["provider"], fixture_host(fx),
                      fixture_request(fx), fixture_response(fx)))
    items += synthetic()
    for provider, host, req, resp in items:
        family = family_for(provider, req)
        if family is not None:
            by_family.setdefault(family.FAMILY, []).append({"provider": provider, "host": host, "req": req, "resp": resp})
    return by_family


def synthetic() -> List[Any]:
    tokens = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in (
        {"token": {"id": 1, "text": "Hel", "special": False}},
        {"token": {"id": 2, "text": "lo", "special": False}, "generated_text": "Hello",
         "details": {"finish_reason": "eos_token", "generated_tokens": 2}}))
    return [
        ("huggingface", "api-inference.huggingface.co",
         http_request("/models/gpt2", {"inputs": "Hi", "parameters": {"max_new_tokens": 5}}),
         http_response([{"generated_text": "Hello", "details": {"finish_reason": "length", "generated_tokens": 5}}])),
        ("huggingface", "tgi.internal:8080", http_request("/generate_stream", {"inputs": "Hi"}),
         http_response(tokens, content_type="text/event-stream")),
        ("replicate", "api.replicate.com",
         http_request("/v1/models/meta/llama/predictions", {"input": {"prompt": "Hi", "max_tokens": 9}}),
         http_response({"id": "p", "status": "succeeded", "output": ["Hel", "lo"],
                        "metrics": {"input_token_count": 2, "output_token_count": 2}}, status=201)),
    ]


@st.composite
def mutated(draw: Any, body: bytes) -> bytes:
    """The body with a few byte-level edits, or replaced by JSON (of the body's own keys' shape)."""
    kind = draw(st.sampled_from(["flip", "cut", "splice", "json", "garbage"]))
    data = bytearray(body)
    if kind == "json":
        return json.dumps(draw(JSON)).encode()
    if kind == "garbage":
        return draw(st.binary(max_size=256))
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at:at + draw(st.integers(1, 64))]
        else:
            piece = data[at:at + draw(st.integers(1, 64))]
            data[at:at] = piece
    return bytes(data)


def check_family(name: str, exchanges: List[Dict[str, Any]], seconds: float) -> Dict[str, Any]:
    count = [0]

    @settings(max_examples=500, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def run(data: Any) -> None:
        count[0] += 1
        item = data.draw(st.sampled_from(exchanges))
        provider, req, resp = item["provider"], item["req"], item["resp"]
        if data.draw(st.booleans()):
            req = dataclasses.replace(req, body=data.draw(mutated(req.body)))
        info = parse_request(provider, req, item["host"])
        if info is None:
            return
        assert isinstance(info, AiRequestInfo)
        body = data.draw(mutated(resp.body))
        status = data.draw(st.sampled_from([resp.status, 200, 400, 500]))
        resp = dataclasses.replace(resp, body=body, status=status)
        assert isinstance(parse_response(info, resp), AiResponseInfo)
        decoder = stream_decoder(info, dataclasses.replace(resp, body=b""))
        if decoder is not None:
            cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=6)))
            start = 0
            for cut in cuts + [len(body)]:
                decoder.feed(body[start:cut])
                start = cut
            decoder.close()

    started = time.monotonic()
    stop = started + seconds
    failure = None
    while time.monotonic() < stop:
        try:
            run()
        except Exception as exc:  # noqa: BLE001 - a finding: report it with hypothesis's example
            failure = "%s: %s" % (type(exc).__name__, exc)
            break
    return {"family": name, "seconds": round(time.monotonic() - started), "examples": count[0],
            "recordings": len(exchanges), "failure": failure}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="time per family")
    parser.add_argument("--family", action="append", help="only these families (default: every registered one)")
    args = parser.parse_args()
    by_family = corpus()
    names = args.family or [f.FAMILY for f in FAMILIES]
    failed = False
    for name in names:
        result = check_family(name, by_family.get(name, []), args.minutes * 60)
        print(json.dumps(result), flush=True)
        failed = failed or result["failure"] is not None
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
