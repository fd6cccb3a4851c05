"""The header tree assembled for bcc when the running kernel has no headers."""
from __future__ import annotations

import os

import pytest

from oisp_daemon.capture import kheaders


def _debian_headers(root, version="6.1.0-56"):
    arch = root / f"linux-headers-{version}-amd64"
    common = root / f"linux-headers-{version}-common"
    (arch / "include" / "generated").mkdir(parents=True)
    (arch / "include" / "generated" / "autoconf.h").write_text("#define CONFIG_X 1\n")
    (arch / "arch" / "x86" / "include" / "generated").mkdir(parents=True)
    (common / "include" / "linux").mkdir(parents=True)
    (common / "include" / "linux" / "types.h").write_text("/* types */\n")
    (common / "arch" / "x86" / "include" / "asm").mkdir(parents=True)
    return arch, common


def test_running_kernel_headers_are_used_as_they_are(tmp_path):
    build = tmp_path / "modules" / "6.18.0" / "build"
    (build / "include" / "generated").mkdir(parents=True)
    (build / "include" / "generated" / "autoconf.h").write_text("")
    choice = kheaders.choose_headers(str(tmp_path / "cache"), "6.18.0", str(tmp_path / "modules"), str(tmp_path / "src"))
    assert choice.path == str(build)
    assert not choice.assembled


def test_debian_halves_are_merged_into_one_tree(tmp_path):
    src = tmp_path / "src"
    _debian_headers(src)
    choice = kheaders.choose_headers(str(tmp_path / "cache"), "6.18.0", str(tmp_path / "modules"), str(src))
    assert choice.assembled
    tree = choice.path
    assert os.path.isfile(os.path.join(tree, "include", "generated", "autoconf.h"))
    assert os.path.isfile(os.path.join(tree, "include", "linux", "types.h"))
    assert os.path.isdir(os.path.join(tree, "arch", "x86", "include", "asm"))
    assert os.path.isdir(os.path.join(tree, "arch", "x86", "include", "generated"))
    assert "6.18.0" in choice.description and "linux-headers-6.1.0-56-amd64" in choice.description


def test_newest_headers_win_and_tree_is_reused(tmp_path):
    src = tmp_path / "src"
    _debian_headers(src, "6.1.0-9")
    _debian_headers(src, "6.1.0-56")
    first = kheaders.choose_headers(str(tmp_path / "cache"), "6.18.0", str(tmp_path / "modules"), str(src))
    assert first.path.endswith("linux-headers-6.1.0-56-amd64")
    marker = os.path.join(first.path, "marker")
    open(marker, "w").close()
    again = kheaders.choose_headers(str(tmp_path / "cache"), "6.18.0", str(tmp_path / "modules"), str(src))
    assert again.path == first.path and os.path.exists(marker)


def test_no_headers_at_all_says_what_to_install(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(kheaders.KernelHeadersError, match="apt-get install linux-headers"):
        kheaders.choose_headers(str(tmp_path / "cache"), "6.18.0", str(tmp_path / "modules"), str(tmp_path / "src"))


def test_apply_points_bcc_at_an_assembled_tree(monkeypatch):
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    kheaders.apply(kheaders.HeaderChoice("/some/tree", True, ""))
    assert os.environ["BCC_KERNEL_SOURCE"] == "/some/tree"
