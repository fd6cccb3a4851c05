"""Shell completion scripts: valid syntax, every command covered, and real completions in bash."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from oisp_ctl import completion
from oisp_ctl.cli import build_parser, main


@pytest.fixture(scope="module")
def bash_script():
    return completion.render("bash", build_parser())


def complete(script, words, cwd=None):
    """What bash offers for the last of `words` (the command line so far)."""
    quoted = " ".join("'%s'" % w for w in words)
    program = script + '\nCOMP_WORDS=(%s)\nCOMP_CWORD=%d\n_oisp_ctl\nprintf "%%s\\n" "${COMPREPLY[@]}"\n' \
        % (quoted, len(words) - 1)
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", program], capture_output=True,
                          text=True, timeout=10, check=True, cwd=cwd)
    return [line for line in done.stdout.splitlines() if line]


def test_bash_script_is_valid_bash(bash_script, tmp_path):
    path = tmp_path / "oisp-ctl.bash"
    path.write_text(bash_script)
    subprocess.run(["bash", "-n", str(path)], check=True, timeout=10)


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_script_is_valid_zsh(tmp_path):
    path = tmp_path / "_oisp-ctl"
    path.write_text(completion.render("zsh", build_parser()))
    subprocess.run(["zsh", "-n", str(path)], check=True, timeout=10)


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_completes_subcommands_choices_and_files(tmp_path):
    script = tmp_path / "_oisp-ctl"
    script.write_text(completion.render("zsh", build_parser()))
    # compadd and _files only work inside the completion system: record what would be offered
    program = """
        autoload -U compinit && compinit -u -D
        source %s
        compadd() { shift; print -l -- "$@"; }
        _files() { print FILES; }
        words=(oisp-ctl session ""); CURRENT=3; _oisp_ctl; print END
        words=(oisp-ctl --socket /x redaction set ""); CURRENT=6; _oisp_ctl; print END
        words=(oisp-ctl session start n --output ""); CURRENT=6; _oisp_ctl; print END
    """ % script
    done = subprocess.run(["zsh", "-f", "-c", program], capture_output=True, text=True,
                          timeout=10, check=True)
    session, redaction, output = done.stdout.split("END\n")[:3]
    assert session.split() == ["start", "stop", "list", "-h", "--help"]
    assert redaction.split()[-3:] == ["safe", "minimal", "full"]
    assert output.split() == ["FILES"]


def test_zsh_script_covers_every_command_path():
    script = completion.render("zsh", build_parser())
    assert script.startswith("#compdef oisp-ctl\n")
    for path in ("session start", "binary-paths add", "redaction set", "tail", "completion"):
        assert '("%s") compadd -- ' % path in script


def test_top_level_commands(bash_script):
    offered = complete(bash_script, ["oisp-ctl", ""])
    for word in ("status", "session", "binary-paths", "redaction", "tail", "reload", "doctor",
                 "completion", "--socket", "--bus", "--json"):
        assert word in offered


def test_subcommands_and_choices(bash_script):
    assert complete(bash_script, ["oisp-ctl", "session", ""]) == ["start", "stop", "list", "-h",
                                                                  "--help"]
    assert complete(bash_script, ["oisp-ctl", "--socket", "/x", "redaction", "set", "m"]) == \
        ["minimal"]
    assert complete(bash_script, ["oisp-ctl", "session", "start", "n", "--redaction", ""]) == \
        ["safe", "minimal", "full"]
    assert complete(bash_script, ["oisp-ctl", "completion", "z"]) == ["zsh"]
    assert "--follow" in complete(bash_script, ["oisp-ctl", "tail", "--f"])


def test_paths_complete_to_files(bash_script, tmp_path):
    (tmp_path / "agent-binary").write_text("")
    assert complete(bash_script, ["oisp-ctl", "binary-paths", "add", "agent-"],
                    cwd=str(tmp_path)) == ["agent-binary"]
    assert complete(bash_script, ["oisp-ctl", "tail", "--socket", "age"],
                    cwd=str(tmp_path)) == ["agent-binary"]


def test_completion_command_prints_the_script(capsys):
    assert main(["completion", "bash"]) == 0
    assert capsys.readouterr().out == completion.render("bash", build_parser())


def test_unknown_shell_is_refused():
    with pytest.raises(ValueError, match="fish"):
        completion.render("fish", build_parser())
