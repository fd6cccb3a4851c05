"""Load YAML configuration, merge it over the defaults, and validate it.

Maps deep-merge and lists replace, so a drop-in can change one key without restating the rest.
Errors name the file, the key and the problem: an operator should not need to read code.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, List

import jsonschema
import yaml

from .defaults import defaults

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema.json")


class ConfigError(ValueError):
    """A configuration file is unreadable or invalid; str() is the operator-facing message."""


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
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
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
    for err in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path)):
        key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        errors.append(f"{origin}: {key}: {err.message}")
    if errors:
        raise ConfigError("\n".join(errors))


def load(paths: Iterable[str]) -> Dict[str, Any]:
    """Defaults, then each file in order; each file is validated on its own so errors name it."""
    config = defaults()
    for path in paths:
        overlay = read_file(path)
        validate(deep_merge(defaults(), overlay), path)
        deep_merge(config, overlay)
    validate(config, "merged configuration")
    return config
