"""Control protocol: encoding, stream decoding (split, garbage, over-long lines), request validation."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oisp_ctl import protocol
from oisp_ctl.protocol import Decoder, ProtocolError


@pytest.fixture
def decoder():
    return Decoder(max_line=64)


def test_encode_is_one_compact_utf8_line():
    line = protocol.encode({"id": 1, "op": "status", "args": {"name": "café"}})
    assert line == '{"id":1,"op":"status","args":{"name":"café"}}\n'.encode("utf-8")
    assert line.count(b"\n") == 1


def test_encode_escapes_newlines_inside_strings():
    line = protocol.encode({"text": "a\nb"})
    assert line.count(b"\n") == 1
    assert json.loads(line) == {"text": "a\nb"}


def test_encode_refuses_nan():
    with pytest.raises(ValueError):
        protocol.encode({"x": float("nan")})


def test_round_trip_of_every_message_kind(decoder):
    messages = [
        protocol.request(1, protocol.OP_TAIL, {"filter": {"types": ["ai.*"]}}),
        protocol.event_item(1, {"event_type": "ai.request"}),
        protocol.dropped_item(1, 7),
        protocol.end_item(1, "shutdown"),
        protocol.error_reply("a", protocol.E_NOT_FOUND, "no session 'x'"),
    ]
    stream = b"".join(protocol.encode(m) for m in messages)
    assert Decoder().feed(stream) == messages


def test_decoder_reassembles_lines_split_at_every_byte():
    messages = [protocol.request(i, protocol.OP_STATUS) for i in range(3)]
    stream = b"".join(protocol.encode(m) for m in messages)
    dec = Decoder()
    out = []
    for i in range(len(stream)):
        out += dec.feed(stream[i:i + 1])
    assert out == messages
    assert dec.pending == 0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=200), max_size=6))
def test_decoder_output_does_not_depend_on_cut_points(cuts):
    messages = [protocol.request(i, protocol.OP_STATUS, {"k": "é" * i}) for i in range(4)]
    stream = b"".join(protocol.encode(m) for m in messages)
    dec = Decoder()
    out = []
    points = sorted(set(c for c in cuts if c < len(stream)))
    for start, end in zip([0] + points, points + [len(stream)]):
        out += dec.feed(stream[start:end])
    assert out == messages


def test_invalid_json_is_an_error_for_that_line_only(decoder):
    out = decoder.feed(b'{"id":1}\nnot json\n{"id":2}\n')
    assert out[0] == {"id": 1}
    assert isinstance(out[1], ProtocolError)
    assert out[1].code == protocol.E_BAD_REQUEST
    assert "line 2 is not valid JSON" in out[1].message
    assert out[2] == {"id": 2}


def test_non_object_json_is_refused(decoder):
    (err,) = decoder.feed(b"[1,2]\n")
    assert isinstance(err, ProtocolError)
    assert "line 1 is a JSON list, not an object" in err.message


def test_invalid_utf8_is_refused(decoder):
    (err,) = decoder.feed(b'{"a":"\xff"}\n')
    assert isinstance(err, ProtocolError)
    assert "line 1 is not UTF-8" in err.message


def test_nan_literal_is_refused(decoder):
    (err,) = decoder.feed(b'{"a":NaN}\n')
    assert isinstance(err, ProtocolError)
    assert "NaN is not valid JSON" in err.message


def test_blank_lines_and_crlf_are_tolerated(decoder):
    assert decoder.feed(b'\n\r\n{"id":1}\r\n') == [{"id": 1}]


def test_over_long_line_is_reported_once_and_skipped(decoder):
    out = decoder.feed(b"x" * 50)
    out += decoder.feed(b"x" * 50)
    assert decoder.pending == 0  # the long line is not buffered
    out += decoder.feed(b"x" * 1000 + b'\n{"id":2}\n')
    assert len(out) == 2
    assert isinstance(out[0], ProtocolError)
    assert out[0].message == ("line 1 is longer than 64 bytes, the protocol's limit; it was "
                              "discarded (send smaller messages)")
    assert out[1] == {"id": 2}


def test_line_of_exactly_the_limit_is_accepted():
    line = protocol.encode({"k": "v" * 100})
    dec = Decoder(max_line=len(line) - 1)  # the limit excludes the newline
    assert dec.feed(line) == [{"k": "v" * 100}]


def test_close_parses_a_last_line_without_newline(decoder):
    assert decoder.feed(b'{"id":1}') == []
    assert decoder.close() == [{"id": 1}]
    assert decoder.close() == []


def test_close_inside_an_over_long_line_reports_nothing_more(decoder):
    assert len(decoder.feed(b"x" * 100)) == 1
    assert decoder.close() == []


def test_decoder_rejects_non_positive_limit():
    with pytest.raises(ValueError):
        Decoder(max_line=0)


def test_parse_request_accepts_a_valid_request():
    req = protocol.parse_request({"id": "r1", "op": "session.start", "args": {"name": "x"}})
    assert req == protocol.Request("r1", "session.start", {"name": "x"})


def test_parse_request_defaults_args_to_empty():
    assert protocol.parse_request({"id": 3, "op": "status"}).args == {}


@pytest.mark.parametrize("msg, code, text, request_id", [
    ({"op": "status"}, "bad_request", 'request has no "id"', None),
    ({"id": True, "op": "status"}, "bad_request", 'request "id" must be an integer or a string, got true', None),
    ({"id": 1.5, "op": "status"}, "bad_request", "got 1.5", None),
    ({"id": 1}, "bad_request", 'request "op" must be a non-empty string', 1),
    ({"id": 1, "op": ""}, "bad_request", 'request "op" must be a non-empty string', 1),
    ({"id": 1, "op": "status", "args": [1]}, "bad_request", 'request "args" must be a JSON object, got a JSON list', 1),
    ({"id": 1, "op": "status", "arg": {}}, "bad_request", "request has unknown keys 'arg'", 1),
    ({"id": 1, "op": "sessions.start"}, "unknown_op", "unknown operation 'sessions.start'; known operations: binary_paths.add", 1),
])
def test_parse_request_refusals(msg, code, text, request_id):
    with pytest.raises(ProtocolError) as info:
        protocol.parse_request(msg)
    assert info.value.code == code
    assert text in info.value.message
    assert info.value.request_id == request_id
    assert info.value.to_reply()["id"] == request_id


def test_every_op_and_code_constant_is_listed():
    ops = {v for k, v in vars(protocol).items() if k.startswith("OP_")}
    codes = {v for k, v in vars(protocol).items() if k.startswith("E_")}
    assert ops == protocol.OPS and len(ops) == 12
    assert codes == protocol.ERROR_CODES and len(codes) == 9


def test_error_reply_refuses_unknown_code():
    with pytest.raises(ValueError):
        protocol.error_reply(1, "oops", "x")


@pytest.mark.parametrize("msg, kind", [
    ({"id": 1, "ok": True, "result": None}, "reply"),
    ({"id": 1, "ok": False, "error": {"code": "internal", "message": "m"}}, "reply"),
    ({"id": 1, "event": {"event_type": "ai.request"}}, "event"),
    ({"id": 1, "dropped": 3}, "dropped"),
])
def test_message_kind(msg, kind):
    assert protocol.message_kind(msg) == kind


@pytest.mark.parametrize("msg", [
    {"id": 1},
    {"id": 1, "ok": True},
    {"id": 1, "ok": False, "error": "boom"},
    {"id": 1, "dropped": True},
    {"id": 1, "event": "x"},
])
def test_message_kind_refuses_malformed(msg):
    with pytest.raises(ProtocolError):
        protocol.message_kind(msg)


def test_reply_result_returns_result_and_raises_errors():
    assert protocol.reply_result(protocol.ok_reply(1, {"a": 1})) == {"a": 1}
    with pytest.raises(ProtocolError) as info:
        protocol.reply_result(protocol.error_reply(1, protocol.E_CONFLICT, "session 'x' exists"))
    assert (info.value.code, info.value.message, info.value.request_id) == (
        "conflict", "session 'x' exists", 1)


def test_hello_round_trip():
    args = protocol.hello_args("oisp-ctl/0.1.0")
    assert args == {"protocol": 1, "client": "oisp-ctl/0.1.0"}
    assert protocol.check_hello_args(args) == "oisp-ctl/0.1.0"
    protocol.check_hello_result({"protocol": 1, "daemon": "0.1.0"})


def test_hello_version_mismatch_names_both_versions_and_the_fix():
    with pytest.raises(ProtocolError) as info:
        protocol.check_hello_args({"protocol": 2, "client": "oisp-ctl/9.0"})
    assert info.value.code == protocol.E_PROTOCOL_VERSION
    assert info.value.message == (
        "oisp-ctl/9.0 speaks control protocol 2 but this daemon speaks protocol 1; "
        "install oisp-ctl from the same release as the daemon")
    with pytest.raises(ProtocolError) as info:
        protocol.check_hello_result({"protocol": 2})
    assert info.value.code == protocol.E_PROTOCOL_VERSION


@pytest.mark.parametrize("args", [{}, {"protocol": "1", "client": "c"}, {"protocol": 1}])
def test_hello_with_missing_fields_is_a_bad_request(args):
    with pytest.raises(ProtocolError) as info:
        protocol.check_hello_args(args)
    assert info.value.code == protocol.E_BAD_REQUEST


def test_socket_path_precedence(monkeypatch):
    monkeypatch.delenv(protocol.SOCKET_PATH_ENV, raising=False)
    assert protocol.socket_path() == "/run/oisp-sensor/control.sock"
    monkeypatch.setenv(protocol.SOCKET_PATH_ENV, "/tmp/x.sock")
    assert protocol.socket_path() == "/tmp/x.sock"
    assert protocol.socket_path("/tmp/y.sock") == "/tmp/y.sock"


def test_protocol_does_not_import_the_daemon():
    code = ("import sys, oisp_ctl.protocol; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('oisp_daemon', 'bcc')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- what an unprivileged peer may send the daemon: depth and lone surrogates ------------------


@pytest.fixture
def daemon_decoder():
    return Decoder(protocol.MAX_LINE_BYTES, protocol.MAX_REQUEST_DEPTH)


def _nested(depth: int, inner: str = "") -> str:
    """`depth` levels of alternating arrays and objects, the outermost being level 1."""
    text = inner
    for level in range(depth):
        text = "[%s]" % text if level % 2 else '{"k":%s}' % (text or "0")
    return text


def test_a_line_too_deep_for_json_itself_is_an_error_not_a_crash(daemon_decoder):
    line = b'{"id":1,"op":"status","args":{"a":' + b"[" * 200000 + b"]" * 200000 + b"}}\n"
    out = daemon_decoder.feed(line + protocol.encode(protocol.request(2, protocol.OP_STATUS)))
    assert isinstance(out[0], ProtocolError) and out[0].code == protocol.E_BAD_REQUEST
    assert "too deeply" in out[0].message
    assert out[1] == protocol.request(2, protocol.OP_STATUS)  # the stream goes on


def test_nesting_is_bounded_for_requests_and_keeps_the_id(daemon_decoder):
    args_depth = protocol.MAX_REQUEST_DEPTH - 1  # the request object is level 1
    ok = '{"id":"a","op":"status","args":%s}\n' % _nested(args_depth)
    deep = '{"id":"b","op":"status","args":%s}\n' % _nested(args_depth + 1)
    out = daemon_decoder.feed((ok + deep).encode())
    assert isinstance(out[0], dict)
    assert isinstance(out[1], ProtocolError) and out[1].request_id == "b"
    assert "deeper than %d levels" % protocol.MAX_REQUEST_DEPTH in out[1].message


def test_brackets_and_escapes_inside_strings_do_not_count_as_nesting(daemon_decoder):
    tricky = json.dumps({"id": 1, "op": "status",
                         "args": {"a": "[" * 50 + '\\"{' * 50, "b\\": ["]]}}\\\\", ["["]]}})
    assert daemon_decoder.feed(tricky.encode() + b"\n") == [json.loads(tricky)]


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max([_depth(v) for v in value.values()] + [0])
    if isinstance(value, list):
        return 1 + max([_depth(v) for v in value] + [0])
    return 0


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab\n\u00e9'),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(alphabet='[]{}"\\a', max_size=4), inner, max_size=3),
    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(_json_values, st.booleans())
def test_the_text_depth_check_agrees_with_the_decoded_depth(value, ascii_only):
    text = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8")
    depth = _depth(value)
    for limit in range(max(1, depth - 1), depth + 2):
        problem = protocol.value_problem(value, text, limit)
        assert (problem is not None) == (depth > limit), (text, limit, depth)


@pytest.mark.parametrize("line", [
    b'{"id":"\\ud800","op":"hello"}',                        # the id itself
    b'{"id":"\\uDFFF","op":"hello"}',
    b'{"id":7,"op":"session.start","args":{"name":"x\\udc80"}}',  # a value
    b'{"id":7,"op":"status","args":{"\\ud83d":1}}',           # a key
])
def test_lone_surrogates_are_refused_with_the_id_when_it_is_clean(daemon_decoder, line):
    [item] = daemon_decoder.feed(line + b"\n")
    assert isinstance(item, ProtocolError) and item.code == protocol.E_BAD_REQUEST
    assert "surrogate" in item.message
    expected_id = 7 if b'"id":7' in line else None
    assert item.request_id == expected_id
    protocol.encode(item.to_reply())  # the reply itself can be sent


def test_surrogate_pairs_and_escaped_backslashes_are_fine(daemon_decoder):
    line = b'{"id":"\\ud83d\\ude00","op":"status","args":{"a":"\\\\ud800"}}\n'
    assert daemon_decoder.feed(line) == [{"id": "\U0001F600", "op": "status",
                                          "args": {"a": "\\ud800"}}]


def test_parse_request_refuses_an_id_with_a_lone_surrogate():
    with pytest.raises(ProtocolError, match="lone surrogate") as info:
        protocol.parse_request({"id": "\ud800", "op": "status"})
    assert info.value.request_id is None


def test_the_client_decoder_accepts_deep_events():
    event = {"id": 1, "event": json.loads(_nested(40))}
    assert Decoder().feed(protocol.encode(event)) == [event]


def test_encode_falls_back_to_ascii_escapes_for_lone_surrogates():
    message = {"path": "/tmp/\udcff/libssl.so", "name": "café"}
    line = protocol.encode(message)
    line.decode("ascii")  # pure ASCII, valid UTF-8
    assert Decoder().feed(line) == [message]


@pytest.mark.parametrize("text, problem", [
    ("[" * 100000 + "]" * 100000, "deeper than"),
    ('{"a":%s}' % _nested(protocol.MAX_REQUEST_DEPTH), "deeper than"),
    ('{"a":"\\ud800"}', "surrogate"),
    ('{"a":NaN}', "NaN"),
    ("{", "Expecting"),
])
def test_loads_refuses_what_a_peer_must_not_send(text, problem):
    with pytest.raises(ValueError, match=problem):
        protocol.loads(text)


def test_loads_accepts_arguments_up_to_the_depth():
    text = '{"a":%s}' % _nested(protocol.MAX_REQUEST_DEPTH - 2)
    assert protocol.loads(text) == json.loads(text)
