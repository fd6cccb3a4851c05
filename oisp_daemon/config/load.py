"""Load YAML configuration, merge it over the defaults, and validate it.

/etc/oisp-sensor/config.yaml, then config.d/*.yaml in lexical order, then OISP_* environment
overrides. Maps deep-merge and lists replace, so a drop-in can change one key without restating
the rest. Errors name the file, the key and the problem: an operator should not need to read code.

Small bad input gives small errors: YAML aliases are refused (a few hundred bytes of nested
aliases expand to gigabytes), and error text is cut to MAX_ERROR_CHARS wherever it goes (the log,
`last_reload` in status, check-config), with a note saying how much was left out.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional

import jsonschema
import yaml

from .defaults import CONFIG_FILE, DROPIN_DIR, defaults

ENV_PREFIX = "OISP_"  # OISP_CONTROL__SOCKET=/x sets control.socket (value parsed as YAML)

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema.json")

MAX_ERROR_CHARS = 4096  # of one ConfigError's text
MAX_ERRORS = 20  # schema errors listed per source
MAX_ERROR_LINE = 400  # characters of one schema error (its message quotes the offending value)


def truncated(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """`text` cut to about `limit` characters, saying how many were left out."""
    if len(text) <= limit:
        return text
    return text[:limit] + "... [%d more characters not shown]" % (len(text) - limit)


class ConfigError(ValueError):
    """A configuration file is unreadable or invalid; str() is the operator-facing message,
    never longer than MAX_ERROR_CHARS (plus the note that says so)."""

    def __init__(self, message: str) -> None:
        super().__init__(truncated(message))


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (and so merge keys built on them): a configuration does
    not need them, and nested aliases make a tiny file expand without bound."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*%s) are not allowed in the configuration; write the value out" % event.anchor,
                event.start_mark,
            )
        return super().compose_node(parent, index)


def parse_yaml(text: Any) -> Any:
    """YAML without aliases; RecursionError (absurd nesting) is reported as a YAML error."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None


def deep_merge(base: Dict[str, Any], overlay: Dict[str, Any]) -> Dict[str, Any]:
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def _schema() -> Dict[str, Any]:
    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        return json.load(fh)


def read_file(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = parse_yaml(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {type(data).__name__}")
    return data


def validate(config: Dict[str, Any], origin: str) -> None:
    errors: List[str] = []
    validator = jsonschema.Draft202012Validator(_schema())
    found = 0
    for err in sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]):
        found += 1
        if found > MAX_ERRORS:
            continue
        key = truncated(".".join(str(p) for p in err.absolute_path) or "(top level)", MAX_ERROR_LINE)
        errors.append(f"{origin}: {key}: {truncated(err.message, MAX_ERROR_LINE)}")
    if found > MAX_ERRORS:
        errors.append(f"{origin}: ... and {found - MAX_ERRORS} more errors")
    if errors:
        raise ConfigError("\n".join(errors))
    _check_patterns(config, origin)
    _check_plain_http(config, origin)


def _check_patterns(config: Dict[str, Any], origin: str) -> None:
    """Custom redaction regexes must compile: a bad one is a config error naming its source."""
    from ..redact import RedactionConfigError, Redactor

    redaction = config.get("redaction", {})
    try:
        Redactor(redaction.get("mode", "safe"), redaction.get("custom_patterns", []))
    except RedactionConfigError as exc:
        raise ConfigError(f"{origin}: redaction.custom_patterns: {exc}") from exc


def _check_plain_http(config: Dict[str, Any], origin: str) -> None:
    """capture.plain_http entries must be addresses, prefixes or host names with a port."""
    from ..capture import plain_http

    try:
        plain_http.check(config)
    except plain_http.PlainHttpConfigError as exc:
        raise ConfigError(f"{origin}: capture.plain_http: {exc}") from exc


def system_files(config_file: str = CONFIG_FILE, dropin_dir: Optional[str] = None) -> List[str]:
    """The main file (when it exists) and its drop-ins, in the order they apply."""
    if dropin_dir is None:
        dropin_dir = DROPIN_DIR if config_file == CONFIG_FILE else os.path.join(os.path.dirname(config_file), "config.d")
    files = [config_file] if os.path.exists(config_file) else []
    return files + sorted(glob.glob(os.path.join(dropin_dir, "*.yaml")))


def env_overrides(environ: Mapping[str, str]) -> List[tuple]:
    """(origin, overlay) for each OISP_SECTION__KEY variable whose section is a config key.

    Deployment tools set endpoints and paths this way without writing files. Variables whose
    first part is not a top-level key (e.g. OISP_SOCKET, read by oisp-ctl) are not config."""
    known = set(_schema()["properties"])
    out = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        if parts[0] not in known or not all(parts):
            continue
        try:
            value = parse_yaml(environ[name])
        except yaml.YAMLError as exc:
            raise ConfigError(f"environment {name}: not a valid YAML value: {exc}") from exc
        overlay: Dict[str, Any] = {}
        node = overlay
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        out.append((f"environment {name}", overlay))
    return out


def load(paths: Iterable[str], environ: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """Defaults, then each file in order, then environment overrides; each source is validated
    on its own so that an error names it."""
    config = defaults()
    sources = [(path, read_file(path)) for path in paths]
    sources += env_overrides(os.environ if environ is None else environ)
    for origin, overlay in sources:
        validate(deep_merge(defaults(), overlay), origin)
        deep_merge(config, overlay)
    validate(config, "merged configuration")
    return config
