"""What the packages ship agrees with the code: the default config with the schema and the built-in
defaults, the man pages with the commands and keys, the dependencies with the imports, the unit
and policies with the daemon, and every version string with pyproject.toml."""
from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

from oisp_ctl.cli import build_parser
from oisp_daemon import __version__
from oisp_daemon.config.defaults import defaults
from oisp_daemon.config.load import _schema, load, read_file
from oisp_daemon.control.polkit import ACTIONS

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "packaging" / "config.yaml"
DEBIAN = ROOT / "packaging" / "deb" / "debian"
SPEC = ROOT / "packaging" / "rpm" / "oisp-sensor.spec"
UNIT = ROOT / "systemd" / "oisp-sensor.service"
MAN = ROOT / "man"

# Third-party modules the code imports -> (Debian package, Fedora package).
DISTRO_PACKAGES: Dict[str, Tuple[str, str]] = {
    "bcc": ("python3-bpfcc", "python3-bcc"),
    "capstone": ("python3-capstone", "python3-capstone"),
    "dbus_next": ("python3-dbus-next", "python3-dbus-next"),
    "elftools": ("python3-pyelftools", "python3-pyelftools"),
    "jsonschema": ("python3-jsonschema", "python3-jsonschema"),
    "regex": ("python3-regex", "python3-regex"),
    "requests": ("python3-requests", "python3-requests"),
    "sdnotify": ("python3-sdnotify", "python3-sdnotify"),
    "yaml": ("python3-yaml", "python3-pyyaml"),
    "aiohttp": ("python3-aiohttp", "python3-aiohttp"),
    "brotli": ("python3-brotli", "python3-brotli"),
    "hpack": ("python3-hpack", "python3-hpack"),
    "zstandard": ("python3-zstandard", "python3-zstandard"),
    "confluent_kafka": ("python3-confluent-kafka", "python3-confluent-kafka"),
}


def schema_keys(node: Dict, prefix: str = "") -> Iterator[str]:
    """Dotted paths of every property in the config schema; session items as sessions[].x."""
    schema = _schema()
    for name, sub in node.get("properties", {}).items():
        path = prefix + name
        yield path
        if "$ref" in sub.get("items", {}):
            ref = schema["$defs"][sub["items"]["$ref"].rsplit("/", 1)[-1]]
            yield from schema_keys(ref, path + "[].")
        yield from schema_keys(sub, path + ".")


def control_fields(path: Path) -> Dict[str, str]:
    """The binary package's fields of a debian/control file (continuation lines joined)."""
    stanzas = path.read_text().split("\n\n")
    fields: Dict[str, str] = {}
    key = ""
    for line in stanzas[1].splitlines():
        if line[:1].isspace() and key:
            fields[key] += " " + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    return fields


def relation_names(field: str) -> List[str]:
    return [alt.strip().split()[0] for rel in field.split(",") if rel.strip() and "${" not in rel
            for alt in rel.split("|")]


def spec_tags(tag: str) -> List[str]:
    return re.findall(r"^%s:\s+(\S+)" % tag, SPEC.read_text(), flags=re.M)


def third_party_imports() -> Set[str]:
    found = set()
    for package in ("oisp_daemon", "oisp_ctl"):
        for source in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text(), str(source))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                found.update(n.split(".")[0] for n in names)
    return {n for n in found if n not in sys.stdlib_module_names and n not in ("oisp_daemon", "oisp_ctl")}


# -- the default configuration ----------------------------------------------------------------

def test_default_config_is_the_built_in_defaults_and_valid():
    assert read_file(str(CONFIG)) == defaults()
    assert load([str(CONFIG)], environ={}) == defaults()


def config_lines() -> Dict[str, int]:
    """Dotted key path -> index of its line in the default config (by YAML indentation)."""
    found: Dict[str, int] = {}
    stack: List[str] = []
    for i, line in enumerate(CONFIG.read_text().splitlines()):
        match = re.match(r"^( *)([a-z_]+):", line)
        if match:
            depth = len(match.group(1)) // 2
            stack[depth:] = [match.group(2)]
            found[".".join(stack)] = i
    return found


def test_default_config_comments_every_key():
    lines = CONFIG.read_text().splitlines()
    comments = "\n".join(line for line in lines if line.lstrip().startswith("#"))
    at = config_lines()
    for path in schema_keys(_schema()):
        if "[]" in path:  # keys of list items are shown in the commented example
            assert re.search(r"#\s+(- )?%s:" % re.escape(path.rsplit(".", 1)[-1]), comments), path
            continue
        assert path in at, "%s has no line in %s" % (path, CONFIG.name)
        assert lines[at[path] - 1].strip().startswith("#"), "%s has no comment above it" % path


# -- man pages --------------------------------------------------------------------------------

MAN_PAGES = sorted(MAN.glob("*.[0-9]"))


@pytest.mark.parametrize("page", MAN_PAGES, ids=lambda p: p.name)
def test_man_page_renders_without_warnings(page):
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed")
    done = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(page)], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_man_pages_are_the_three_the_packages_install():
    assert [p.name for p in MAN_PAGES] == ["oisp-ctl.1", "oisp-sensor.8", "oisp-sensor.yaml.5"]
    assert (DEBIAN / "oisp-sensor.manpages").read_text().split() == ["man/oisp-sensor.8", "man/oisp-ctl.1",
                                                                     "man/oisp-sensor.yaml.5"]


def test_yaml_man_page_documents_every_key():
    text = (MAN / "oisp-sensor.yaml.5").read_text()
    documented = set(re.findall(r"^\.(?:B|SS) (\S+)$", text, flags=re.M))
    missing = [p for p in schema_keys(_schema()) if p.rsplit(".", 1)[-1] not in documented
               and p.rsplit(".", 1)[-1] not in text]
    assert missing == []


def _subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + name
                yield from _subcommands(sub, prefix + name + " ")


def test_ctl_man_page_covers_every_command():
    text = (MAN / "oisp-ctl.1").read_text().replace("\\-", "-")
    commands = list(_subcommands(build_parser()))
    assert len(commands) > 10
    for command in commands:
        assert re.search(r"^\.(TP\n)?\.BI? \"?%s\b" % re.escape(command), text, flags=re.M) or \
            (".B %s" % command) in text or ('.BI "%s ' % command) in text, command


def test_sensor_man_page_covers_every_command():
    from oisp_daemon.cli import _parser

    text = (MAN / "oisp-sensor.8").read_text()
    for command in _subcommands(_parser()):
        assert ".B %s\n" % command in text, command


# -- versions ---------------------------------------------------------------------------------

def test_every_version_string_is_pyprojects():
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), flags=re.M).group(1)
    assert __version__ == version
    assert (DEBIAN / "changelog").read_text().startswith("oisp-sensor (%s)" % version)
    assert "%%global pkg_version %s}" % version in SPEC.read_text()
    for page in MAN_PAGES:
        assert '"oisp-sensor %s"' % version in page.read_text().splitlines()[0], page.name


# -- dependencies -----------------------------------------------------------------------------

def test_every_third_party_import_is_a_packaged_dependency():
    fields = control_fields(DEBIAN / "control")
    deb = set(relation_names(fields["Depends"]) + relation_names(fields["Recommends"])
              + relation_names(fields.get("Suggests", "")))
    rpm = set(spec_tags("Requires") + spec_tags("Recommends") + spec_tags("Suggests"))
    imports = third_party_imports()
    assert imports - set(DISTRO_PACKAGES) == set(), "map these imports to distro packages here"
    for module in imports:
        deb_name, rpm_name = DISTRO_PACKAGES[module]
        assert deb_name in deb, "%s (import %s) is not in debian/control" % (deb_name, module)
        assert rpm_name in rpm, "%s (import %s) is not in the spec" % (rpm_name, module)


def test_debian_depends_are_distro_packages_and_the_issues_list():
    fields = control_fields(DEBIAN / "control")
    assert relation_names(fields["Depends"]) == [
        "python3-bpfcc", "python3-capstone", "python3-dbus-next", "python3-jsonschema", "python3-pyelftools", "python3-regex",
        "python3-requests", "python3-sdnotify", "python3-yaml"]
    assert relation_names(fields["Recommends"])[0] == "linux-headers-amd64"
    assert {"python3-aiohttp", "python3-hpack", "python3-brotli", "python3-zstandard"} <= set(
        relation_names(fields["Recommends"]))
    assert relation_names(fields["Suggests"]) == ["python3-confluent-kafka"]
    assert "python3-bcc" in spec_tags("Requires")


# -- the unit and the policies ----------------------------------------------------------------

def unit_settings() -> Dict[str, List[str]]:
    settings: Dict[str, List[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_is_notify_with_watchdog_reload_directories_and_start_timeout():
    unit = unit_settings()
    assert unit["Type"] == ["notify"] and unit["ExecReload"] and unit["WatchdogSec"]
    assert int(unit["TimeoutStartSec"][0]) >= 120
    assert unit["StateDirectory"] == unit["RuntimeDirectory"] == unit["CacheDirectory"] == ["oisp-sensor"]
    assert unit["BusName"] == ["dev.oisp.Sensor1"]


def test_unit_keeps_what_bcc_needs():
    unit = unit_settings()
    for setting in ("MemoryDenyWriteExecute", "ProtectKernelTunables", "ProtectKernelModules"):
        assert setting not in unit
    caps = unit["CapabilityBoundingSet"][0].split()
    assert {"CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_DAC_OVERRIDE"} <= set(caps)
    assert "CAP_SYS_MODULE" not in caps and "CAP_NET_BIND_SERVICE" not in caps


def test_polkit_policy_defines_the_actions_the_daemon_asks_for():
    root = ET.parse(ROOT / "systemd" / "dev.oisp.Sensor1.policy").getroot()
    assert {a.get("id") for a in root.iter("action")} == set(ACTIONS.values())


def test_dbus_policy_lets_only_root_own_the_name():
    root = ET.parse(ROOT / "systemd" / "dev.oisp.Sensor1.conf").getroot()
    owners = [(p.attrib, a.get("own")) for p in root.iter("policy") for a in p.iter("allow") if a.get("own")]
    assert owners == [({"user": "root"}, "dev.oisp.Sensor1")]


def test_sysusers_creates_the_configured_groups():
    lines = [l.split() for l in (ROOT / "systemd" / "oisp-sensor.sysusers").read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    control = defaults()["control"]
    assert sorted(l[1] for l in lines if l[0] == "g") == sorted([control["user_group"], control["admin_group"]])
    spec = SPEC.read_text()
    for group in (control["user_group"], control["admin_group"]):
        assert "groupadd -r %s\n" % group in spec


def test_every_file_the_packages_install_exists():
    for line in (DEBIAN / "oisp-sensor.install").read_text().splitlines():
        assert (ROOT / line.split()[0]).exists(), line
    for source in re.findall(r"^install -Dpm \d+ (\S+) ", SPEC.read_text(), flags=re.M):
        if not source.startswith(("oisp-ctl.bash", "_oisp-ctl")):  # made in %build
            assert (ROOT / source).exists(), source
