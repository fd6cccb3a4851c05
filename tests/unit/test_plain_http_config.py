"""capture.plain_http: which destinations the kernel tracks, as LPM trie entries, and the checks
check-config makes (capture/plain_http.py)."""
from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest

from oisp_daemon.capture import plain_http
from oisp_daemon.capture.plain_http import Destination, PlainHttpConfigError, parse_entry
from oisp_daemon.config.load import ConfigError, load


def dest(net: str, port: int) -> Destination:
    return Destination(ipaddress.ip_network(net), port)


@pytest.mark.parametrize("entry,expected", [
    ("127.0.0.1:11434", [dest("127.0.0.1/32", 11434)]),
    ("10.0.0.0/8:8000", [dest("10.0.0.0/8", 8000)]),
    ("[::1]:1234", [dest("::1/128", 1234)]),
    ("[fd00::/8]:8080", [dest("fd00::/8", 8080)]),
    ("0.0.0.0/0:9000", [dest("0.0.0.0/0", 9000)]),
    (" 192.168.1.20:65535 ", [dest("192.168.1.20/32", 65535)]),
])
def test_addresses_and_prefixes_become_destinations(entry, expected):
    assert parse_entry(entry) == expected


def test_a_host_name_is_resolved_to_each_of_its_addresses():
    found = parse_entry("localhost:11434")
    addresses = {info[4][0] for info in socket.getaddrinfo("localhost", None, proto=socket.IPPROTO_TCP)}
    assert {str(d.network.network_address) for d in found} == addresses
    assert {d.port for d in found} == {11434}


def test_a_name_that_does_not_resolve_tracks_nothing_and_is_no_error(caplog):
    assert parse_entry("no-such-host.invalid:8000") == []
    assert "does not resolve" in caplog.text


@pytest.mark.parametrize("entry,why", [
    ("127.0.0.1", "a port is required"),
    ("127.0.0.1:0", "port must be a number from 1 to 65535"),
    ("127.0.0.1:70000", "port must be a number from 1 to 65535"),
    ("127.0.0.1:http", "port must be a number"),
    ("::1:8000", "in brackets"),
    ("[::1:8000", "expected \\[address\\]:port"),
    ("10.0.0.1/8:8000", "has host bits set"),
    ("10.0.0.0/40:8000", "10.0.0.0/40"),
    ("bad_host!:8000", "neither an IP address"),
    (":8000", "a port is required"),
    (8000, "expected a string"),
])
def test_malformed_entries_are_named_with_the_reason(entry, why):
    with pytest.raises(PlainHttpConfigError, match=why):
        parse_entry(entry)


def test_check_does_not_resolve_names():
    plain_http.check({"capture": {"plain_http": ["no-such-host.invalid:8000", "10.0.0.0/8:1"]}})


def test_ipv4_keys_are_ipv4_mapped_behind_the_port():
    prefixlen, port, addr = dest("10.1.0.0/16", 11434).key()
    assert prefixlen == 16 + 96 + 16
    assert port == (11434).to_bytes(2, "big")
    assert addr == ipaddress.IPv6Address("::ffff:10.1.0.0").packed


def test_ipv6_keys_keep_their_prefix():
    prefixlen, port, addr = dest("fd00::/8", 80).key()
    assert (prefixlen, port, addr) == (16 + 8, b"\x00\x50", ipaddress.IPv6Address("fd00::").packed)


def test_defaults_are_the_local_model_servers_on_loopback():
    config = plain_http.from_config({})
    assert config.ports == {11434, 1234, 8000, 8080}
    assert {str(d.network) for d in config.destinations} == {"127.0.0.0/8", "::1/128"}
    assert len(config.destinations) == 8 and not config.server_side


def test_entries_add_to_the_defaults_once_each():
    config = plain_http.from_config({"plain_http": ["127.0.0.1:9000", "127.0.0.1:9000", "127.0.0.0/8:8000"],
                                     "plain_http_server": True})
    assert config.destinations.count(dest("127.0.0.1/32", 9000)) == 1
    assert config.destinations.count(dest("127.0.0.0/8", 8000)) == 1
    assert config.server_side


def test_defaults_can_be_turned_off():
    config = plain_http.from_config({"plain_http": ["[::1]:9000"], "plain_http_defaults": False})
    assert config.destinations == (dest("::1/128", 9000),)


def test_the_config_file_takes_entries_and_switches(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("capture:\n  plain_http: ['10.0.0.0/8:11434', 'gpu-box:8000']\n  plain_http_server: true\n"
                    "  plain_http_defaults: false\n")
    capture = load([str(path)], environ={})["capture"]
    assert capture["plain_http"] == ["10.0.0.0/8:11434", "gpu-box:8000"]
    assert capture["plain_http_server"] is True and capture["plain_http_defaults"] is False


@pytest.mark.parametrize("value,needle", [
    ("['10.0.0.1/8:11434']", r"c\.yaml: capture\.plain_http: '10\.0\.0\.1/8:11434': .*host bits set"),
    ("['127.0.0.1:99999']", r"c\.yaml: capture\.plain_http: '127\.0\.0\.1:99999': port must be"),
    ("['127.0.0.1']", r"c\.yaml: capture\.plain_http\.0: '127\.0\.0\.1' does not match"),
    ("'127.0.0.1:8000'", r"c\.yaml: capture\.plain_http: '127\.0\.0\.1:8000' is not of type 'array'"),
])
def test_check_config_names_a_bad_entry_and_its_file(tmp_path: Path, value, needle):
    path = tmp_path / "c.yaml"
    path.write_text("capture:\n  plain_http: %s\n" % value)
    with pytest.raises(ConfigError, match=needle):
        load([str(path)], environ={})


def test_check_config_command_fails_on_a_bad_entry(tmp_path: Path, capsys):
    from oisp_daemon.cli import main

    path = tmp_path / "c.yaml"
    path.write_text("capture:\n  plain_http: ['::1:8000']\n")
    assert main(["check-config", str(path)]) == 1
    assert "capture.plain_http: '::1:8000': write an IPv6 address in brackets" in capsys.readouterr().err
