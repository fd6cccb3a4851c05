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


def test_dropins_apply_after_the_main_file_in_lexical_order(tmp_path):
    from oisp_daemon.config.load import system_files

    main = write(tmp_path, "config.yaml", "capture:\n  idle_timeout_s: 10\n")
    (tmp_path / "config.d").mkdir()
    write(tmp_path / "config.d", "20-b.yaml", "capture:\n  idle_timeout_s: 30\n")
    write(tmp_path / "config.d", "10-a.yaml", "capture:\n  idle_timeout_s: 20\n  ring_buffer_mb: 4\n")
    write(tmp_path / "config.d", "notes.txt", "not yaml config\n")
    files = system_files(main)
    assert [f.rsplit("/", 1)[1] for f in files] == ["config.yaml", "10-a.yaml", "20-b.yaml"]
    cfg = load(files, environ={})
    assert cfg["capture"]["idle_timeout_s"] == 30 and cfg["capture"]["ring_buffer_mb"] == 4


def test_missing_main_file_leaves_only_dropins(tmp_path):
    from oisp_daemon.config.load import system_files

    assert system_files(str(tmp_path / "config.yaml")) == []


def test_environment_overrides_win_and_are_validated():
    cfg = load([], environ={"OISP_CONTROL__SOCKET": "/tmp/s.sock", "OISP_DBUS__ENABLED": "false", "OISP_SOCKET": "/ignored"})
    assert cfg["control"]["socket"] == "/tmp/s.sock" and cfg["dbus"]["enabled"] is False
    with pytest.raises(ConfigError, match=r"environment OISP_TAIL__REPLAY: tail\.replay: -1 is less than the minimum"):
        load([], environ={"OISP_TAIL__REPLAY": "-1"})


def test_bad_custom_redaction_pattern_names_its_file(tmp_path):
    bad = write(tmp_path, "p.yaml", "redaction:\n  custom_patterns:\n    - {name: ticket, regex: 'T-('}\n")
    with pytest.raises(ConfigError, match=r"p\.yaml: redaction\.custom_patterns: .*'ticket'"):
        load([bad], environ={})


def test_check_config_command_exit_codes(tmp_path, capsys):
    from oisp_daemon.cli import main

    good = write(tmp_path, "good.yaml", "sessions:\n  - name: fleet\n    filters: {types: ['ai.*']}\n")
    assert main(["check-config", good]) == 0
    assert "configuration OK" in capsys.readouterr().out
    bad = write(tmp_path, "bad.yaml", "sessions:\n  - name: 'no spaces allowed'\n")
    assert main(["check-config", good, bad]) == 1
    assert "bad.yaml: sessions.0.name: 'no spaces allowed' does not match" in capsys.readouterr().err
