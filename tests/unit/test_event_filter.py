"""EventFilter: each key against OISP event fields, AND across keys, strict argument validation."""
from __future__ import annotations

import pytest

from oisp_daemon.sessions.event_filter import EventFilter, event_uid


def make_event(event_type="ai.request", pid=4242, name="python3", uid=1000, provider="openai"):
    event = {
        "event_type": event_type,
        "process": {"pid": pid, "name": name},
        "actor": {"uid": uid},
        "data": {},
    }
    if provider is not None:
        event["data"]["provider"] = {"name": provider}
    return event


@pytest.fixture
def event():
    return make_event()


def test_empty_filter_matches_everything(event):
    assert EventFilter().matches(event)
    assert EventFilter().matches({})


@pytest.mark.parametrize("patterns, expected", [
    (["ai.*"], True),
    (["ai.request"], True),
    (["ai.response", "ai.req*"], True),
    (["agent.*"], False),
    (["AI.*"], False),
    (["ai"], False),
])
def test_types_are_glob_patterns(event, patterns, expected):
    assert EventFilter(types=tuple(patterns)).matches(event) is expected


def test_pids(event):
    assert EventFilter(pids=(1, 4242)).matches(event)
    assert not EventFilter(pids=(1,)).matches(event)


def test_comms_match_process_name_exactly(event):
    assert EventFilter(comms=("python3",)).matches(event)
    assert not EventFilter(comms=("python",)).matches(event)


def test_long_comm_matches_the_kernels_truncated_name():
    event = make_event(name="gunicorn-worker")  # 15 bytes, as the kernel keeps it
    assert EventFilter(comms=("gunicorn-worker-main",)).matches(event)
    assert not EventFilter(comms=("gunicorn-work",)).matches(event)


def test_uids(event):
    assert EventFilter(uids=(1000,)).matches(event)
    assert not EventFilter(uids=(0,)).matches(event)
    assert not EventFilter(uids=(1000,)).matches({"event_type": "ai.request"})


def test_providers_are_case_insensitive(event):
    assert EventFilter(providers=("OpenAI",)).matches(event)
    assert not EventFilter(providers=("anthropic",)).matches(event)
    assert not EventFilter(providers=("openai",)).matches(make_event(provider=None))


def test_sessions_match_the_session_the_event_was_recorded_into(event):
    f = EventFilter(sessions=("s1",))
    assert f.matches(event, "s1")
    assert not f.matches(event, "s2")
    assert not f.matches(event)


def test_keys_combine_with_and(event):
    f = EventFilter(types=("ai.*",), uids=(1000,), providers=("anthropic",))
    assert not f.matches(event)
    assert f.matches(make_event(provider="anthropic"))


def test_missing_or_malformed_fields_do_not_match():
    broken = {"event_type": 5, "process": "x", "actor": {"uid": True}, "data": {"provider": []}}
    for f in (EventFilter(types=("*",)), EventFilter(pids=(1,)), EventFilter(comms=("x",)),
              EventFilter(uids=(1,)), EventFilter(providers=("x",))):
        assert not f.matches(broken)


def test_event_uid():
    assert event_uid(make_event(uid=0)) == 0
    assert event_uid({"actor": {"uid": "0"}}) is None
    assert event_uid({}) is None


def test_from_args_round_trip():
    args = {"types": ["ai.*"], "pids": [1], "comms": ["node"], "uids": [0, 1000],
            "providers": ["openai"], "sessions": ["s"]}
    f = EventFilter.from_args(args)
    assert f == EventFilter(("ai.*",), (1,), ("node",), (0, 1000), ("openai",), ("s",))
    assert f.to_args() == args
    assert EventFilter.from_args(f.to_args()) == f


def test_from_args_none_and_empty():
    assert EventFilter.from_args(None) == EventFilter()
    assert EventFilter.from_args({}).to_args() == {}


@pytest.mark.parametrize("args, message", [
    ({"type": ["ai.*"]}, "unknown filter key 'type'; known keys: types, pids, comms, uids, providers, sessions"),
    ({"types": "ai.*"}, "filter 'types' must be a list, got 'ai.*'"),
    ({"pids": ["12"]}, "filter 'pids' must list non-negative integers, got '12'"),
    ({"uids": [-1]}, "filter 'uids' must list non-negative integers, got -1"),
    ({"uids": [True]}, "filter 'uids' must list non-negative integers, got True"),
    ({"comms": [""]}, "filter 'comms' must list non-empty strings, got ''"),
    ({"providers": [1]}, "filter 'providers' must list non-empty strings, got 1"),
    (["ai.*"], "filter must be an object with keys types, pids, comms, uids, providers, sessions, got list"),
])
def test_from_args_names_the_bad_key(args, message):
    with pytest.raises(ValueError) as info:
        EventFilter.from_args(args)
    assert str(info.value) == message
