"""Configuration: defaults, deep merge, and errors that name file, key and problem."""
from __future__ import annotations

import pytest

from oisp_daemon.config.load import ConfigError, load


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_no_file_gives_the_defaults():
    cfg = load([])
    assert cfg["redaction"]["mode"] == "safe"
    assert cfg["capture"]["max_message_bytes"] >= 16 * 1024 * 1024


def test_maps_merge_deeply_and_lists_replace(tmp_path):
    a = write(tmp_path, "a.yaml", "capture:\n  idle_timeout_s: 30\nbinary_paths: [/a]\n")
    b = write(tmp_path, "b.yaml", "capture:\n  ring_buffer_mb: 8\nbinary_paths: [/b]\nproviders:\n  hosts:\n    'gw.local:8443': openai\n")
    cfg = load([a, b])
    assert cfg["capture"]["idle_timeout_s"] == 30 and cfg["capture"]["ring_buffer_mb"] == 8
    assert cfg["binary_paths"] == ["/b"]
    assert cfg["providers"]["hosts"] == {"gw.local:8443": "openai"}


def test_unknown_key_is_named_with_its_file(tmp_path):
    bad = write(tmp_path, "bad.yaml", "capture:\n  ring_bufer_mb: 8\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: capture: .*ring_bufer_mb"):
        load([bad])


def test_wrong_type_is_named_with_its_key(tmp_path):
    bad = write(tmp_path, "t.yaml", "redaction:\n  mode: everything\n")
    with pytest.raises(ConfigError, match=r"t\.yaml: redaction\.mode: 'everything' is not one of"):
        load([bad])


@pytest.mark.parametrize("text,needle", [("capture: [1, 2\n", "not valid YAML"), ("- a\n- b\n", "top level must be a mapping")])
def test_broken_yaml_is_a_clear_error(tmp_path, text, needle):
    with pytest.raises(ConfigError, match=needle):
        load([write(tmp_path, "x.yaml", text)])


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load([str(tmp_path / "nope.yaml")])
