"""One source for the redaction modes: oisp_ctl/protocol.py owns the list (issue 7).

The engine sits on the event path, which may not import oisp_ctl (test_layering.py), and the
config schema is JSON: both keep a copy, and these tests fail the moment a copy disagrees.
"""
from __future__ import annotations

import json

from oisp_ctl import cli, protocol
from oisp_daemon.config.defaults import defaults
from oisp_daemon.config.load import SCHEMA_PATH
from oisp_daemon.control import authz
from oisp_daemon.redact import engine


def schema_enums():
    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        schema = json.load(fh)
    found = []

    def walk(node, path):
        if isinstance(node, dict):
            if path and path[-1] in ("mode", "redaction") and "enum" in node:
                found.append(("/".join(path), node["enum"]))
            for key, value in node.items():
                walk(value, path + [key])
        elif isinstance(node, list):
            for item in node:
                walk(item, path)

    walk(schema, [])
    return found


def test_the_engine_uses_the_protocol_modes_in_order():
    assert engine.MODES == protocol.REDACTION_MODES


def test_the_default_mode_is_the_first():
    assert defaults()["redaction"]["mode"] == protocol.REDACTION_MODES[0]


def test_authz_ranks_exactly_the_protocol_modes():
    assert set(authz.REDACTION_STRENGTH) == set(protocol.REDACTION_MODES)
    # full removes nothing, minimal the most
    assert sorted(authz.REDACTION_STRENGTH, key=authz.REDACTION_STRENGTH.get) == ["full", "safe", "minimal"]


def test_the_config_schema_accepts_exactly_the_protocol_modes():
    enums = schema_enums()
    paths = [path for path, _ in enums]
    assert "properties/redaction/properties/mode" in paths and len(paths) >= 2  # global and per session
    for path, enum in enums:
        assert sorted(enum) == sorted(protocol.REDACTION_MODES), path


def test_oisp_ctl_offers_the_protocol_modes():
    assert cli.REDACTION_MODES is protocol.REDACTION_MODES
