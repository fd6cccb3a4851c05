"""Configuration: defaults, deep merge, and errors that name file, key and problem."""
from __future__ import annotations

import subprocess
import sys

import pytest

from oisp_daemon.config.load import ConfigError, load
from tests.support.paths import REPO_ROOT


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


def test_unseen_tls_ports_are_443_by_default_and_must_be_ports(tmp_path):
    assert load([])["capture"]["unseen_tls_ports"] == [443]
    good = write(tmp_path, "p.yaml", "capture:\n  unseen_tls_ports: [443, 8443]\n")
    assert load([good])["capture"]["unseen_tls_ports"] == [443, 8443]
    bad = write(tmp_path, "q.yaml", "capture:\n  unseen_tls_ports: [443, 70000]\n")
    with pytest.raises(ConfigError, match=r"q\.yaml: capture\.unseen_tls_ports\.1: 70000 is greater than"):
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


# --- small bad input, small errors --------------------------------------------------------------


def alias_bomb(levels: int, key: str = "sessions") -> str:
    """The billion-laughs shape: each level is a list of nine aliases of the level before."""
    lines = ['a0: &a0 ["xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"]']
    for i in range(1, levels):
        lines.append("a%d: &a%d [%s]" % (i, i, ",".join(["*a%d" % (i - 1)] * 9)))
    lines.append("%s: *a%d" % (key, levels - 1))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("levels,key", [(6, "sessions"), (9, "binary_paths"), (8, "redaction")])
def test_alias_bombs_are_refused_with_a_short_error(tmp_path, levels, key):
    bomb = write(tmp_path, "bomb.yaml", alias_bomb(levels, key))
    assert len(alias_bomb(levels, key)) < 1024
    with pytest.raises(ConfigError) as info:
        load([bomb])
    message = str(info.value)
    assert "bomb.yaml" in message and "YAML aliases (*a0) are not allowed" in message
    assert len(message) < 1024


def test_merge_keys_need_aliases_and_are_refused(tmp_path):
    path = write(tmp_path, "merge.yaml", "base: &b {idle_timeout_s: 5}\ncapture:\n  <<: *b\n")
    with pytest.raises(ConfigError, match="aliases"):
        load([path])


def test_an_anchor_without_alias_is_harmless(tmp_path):
    path = write(tmp_path, "anchor.yaml", "capture: &c\n  idle_timeout_s: 7\n")
    assert load([path])["capture"]["idle_timeout_s"] == 7


def test_aliases_are_refused_in_environment_overrides():
    with pytest.raises(ConfigError, match="aliases"):
        load([], environ={"OISP_CAPTURE__IDLE_TIMEOUT_S": "[&a 1, *a]"})


def test_a_huge_wrong_value_gives_a_short_error(tmp_path):
    path = write(tmp_path, "big.yaml", "redaction:\n  mode: '%s'\n" % ("m" * 1_000_000))
    with pytest.raises(ConfigError) as info:
        load([path])
    assert "big.yaml: redaction.mode:" in str(info.value) and len(str(info.value)) < 1000


def test_many_errors_are_listed_up_to_a_limit(tmp_path):
    path = write(tmp_path, "many.yaml", "capture:\n" + "".join("  bad_key_%d: 1\n" % i for i in range(3000)))
    path2 = write(tmp_path, "list.yaml", "binary_paths: [%s]\n" % ", ".join(["1"] * 5000))
    for p in (path, path2):
        with pytest.raises(ConfigError) as info:
            load([p])
        assert len(str(info.value)) <= 4096 + 100


def test_deep_nesting_is_a_yaml_error(tmp_path):
    path = write(tmp_path, "deep.yaml", "[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load([path])


def test_error_text_is_cut_with_a_note():
    assert str(ConfigError("x" * 10_000)).endswith("... [5904 more characters not shown]")


def test_check_config_on_a_bomb_stays_small(tmp_path):
    """A 400-byte bomb took check-config to 1.6 GB: run the real command, it reports its peak RSS."""
    bomb = alias_bomb(10)
    path = write(tmp_path, "bomb.yaml", bomb)
    assert len(bomb) < 1024
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forked pytest process.
    code = ("import sys\n"
            "from oisp_daemon.cli import main\n"
            "rc = main(['check-config', sys.argv[1]])\n"
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')][0])\n"
            "sys.exit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=120,
                          cwd=str(REPO_ROOT))
    assert proc.returncode == 1 and "aliases" in proc.stderr
    assert len(proc.stderr) < 1024
    peak_kib = int(proc.stdout.split()[-1])
    assert peak_kib < 150 * 1024, "check-config peaked at %d MiB" % (peak_kib // 1024)
