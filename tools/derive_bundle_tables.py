#!/usr/bin/env python3
"""Derive the sensor's provider and price tables from the OISP spec bundle.

The daemon must not read the spec checkout at run time (it is not installed on the hosts), so
this script writes the parts it needs into the package, with attribution (Apache-2.0):

- oisp_daemon/data/provider_domains.json: exact host -> provider id, host regexes, and per
  provider the auth header conventions used to find the API key.
- oisp_daemon/data/model_prices.json: per provider, model id -> USD per 1k tokens (input,
  output, and cache read/write where the bundle has them).
- oisp_daemon/data/model_families.json: per provider, model id -> model family.

Run it again when the bundle is updated and commit the result:

    python3 tools/derive_bundle_tables.py [--bundle PATH] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = REPO_ROOT.parent / "shared" / "oisp-spec" / "spec" / "v0.1" / "bundle.json"
DEFAULT_OUT = REPO_ROOT / "oisp_daemon" / "data"

SOURCE_REPO = "https://github.com/OximyHQ/oisp-spec"
SOURCE_LICENSE = "Apache-2.0"

# The bundle names a few providers differently in `providers` (what hosts resolve to) and in
# `models` (the price namespace). Prices are looked up under the provider id, so alias them.
MODEL_NAMESPACE_ALIASES = {"together": "togetherai"}

_PRICE_FIELDS = (
    ("input", "input_cost_per_1k"),
    ("output", "output_cost_per_1k"),
    ("cache_read", "cache_read_cost_per_1k"),
    ("cache_write", "cache_write_cost_per_1k"),
)


def source_commit(bundle_path: Path) -> Optional[str]:
    """Commit of the spec repository, when the checkout records it in SOURCE.md."""
    for parent in bundle_path.resolve().parents:
        source_md = parent / "SOURCE.md"
        if source_md.is_file():
            match = re.search(r"\b([0-9a-f]{40})\b", source_md.read_text(encoding="utf-8"))
            return match.group(1) if match else None
    return None


def attribution(bundle: Dict[str, Any], bundle_path: Path, what: str) -> Dict[str, Any]:
    info = {
        "description": what,
        "source": SOURCE_REPO,
        "source_path": "spec/v0.1/bundle.json",
        "license": SOURCE_LICENSE,
        "oisp_version": bundle.get("version"),
        "bundle_version": bundle.get("bundle_version"),
        "generated_at": bundle.get("generated_at"),
        "derived_by": "tools/derive_bundle_tables.py",
    }
    commit = source_commit(bundle_path)
    if commit:
        info["source_commit"] = commit
    return info


def wildcard_regex(pattern: str) -> str:
    """Same convention as the bundle's domain_patterns: '*' matches any run of characters."""
    return "^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$"


def provider_domains(bundle: Dict[str, Any], bundle_path: Path) -> Dict[str, Any]:
    hosts = {host.lower(): pid for host, pid in sorted(bundle.get("domain_index", {}).items())}
    patterns: List[Dict[str, str]] = []
    seen = set()
    for entry in bundle.get("domain_patterns", []):
        patterns.append({"pattern": entry["pattern"], "regex": entry["regex"], "provider": entry["provider"]})
        seen.add(entry["pattern"])
    # Provider domain lists hold a few wildcards that domain_patterns lacks (e.g. *.local:11434).
    for pid, provider in sorted(bundle.get("providers", {}).items()):
        for domain in provider.get("domains", []):
            if "*" in domain and domain not in seen:
                patterns.append({"pattern": domain, "regex": wildcard_regex(domain), "provider": pid})
                seen.add(domain)
            elif "*" not in domain:
                hosts.setdefault(domain.lower(), pid)

    rules = bundle.get("extraction_rules", {})
    providers: Dict[str, Any] = {}
    for pid, provider in sorted(bundle.get("providers", {}).items()):
        auth = provider.get("auth", {})
        entry: Dict[str, Any] = {"display_name": provider.get("display_name", pid), "auth_type": auth.get("type")}
        if auth.get("header"):
            entry["auth_header"] = auth["header"]
        if auth.get("prefix"):
            entry["auth_prefix"] = auth["prefix"]
        rule_auth = rules.get(pid, {}).get("auth", {})
        for key in ("organization_header", "project_header"):
            if rule_auth.get(key):
                entry[key] = rule_auth[key]
        providers[pid] = entry
    return {
        "attribution": attribution(bundle, bundle_path, "AI provider hosts and auth headers"),
        "hosts": dict(sorted(hosts.items())),
        "patterns": patterns,
        "providers": providers,
    }


def model_prices(bundle: Dict[str, Any], bundle_path: Path) -> Dict[str, Any]:
    prices: Dict[str, Dict[str, Dict[str, float]]] = {}
    for model in bundle.get("models", {}).values():
        if model.get("input_cost_per_1k") is None or model.get("output_cost_per_1k") is None:
            continue  # no published price: cost stays unknown rather than 0
        entry = {short: model[field] for short, field in _PRICE_FIELDS if model.get(field) is not None}
        prices.setdefault(model["provider"], {})[model["id"]] = entry
    return {
        "attribution": attribution(bundle, bundle_path, "Model prices in USD per 1k tokens"),
        "unit": "usd_per_1k_tokens",
        "aliases": MODEL_NAMESPACE_ALIASES,
        "prices": {pid: dict(sorted(models.items())) for pid, models in sorted(prices.items())},
    }


def model_families(bundle: Dict[str, Any], bundle_path: Path) -> Dict[str, Any]:
    """Per provider, model id -> its family ("gpt-4o", "claude-3.5", "gemini-2.5"), for events."""
    families: Dict[str, Dict[str, str]] = {}
    for model in bundle.get("models", {}).values():
        if model.get("family"):
            families.setdefault(model["provider"], {})[model["id"]] = model["family"]
    return {
        "attribution": attribution(bundle, bundle_path, "Model families"),
        "aliases": MODEL_NAMESPACE_ALIASES,
        "families": {pid: dict(sorted(models.items())) for pid, models in sorted(families.items())},
    }


def render_families(table: Dict[str, Any]) -> str:
    """One provider per line."""
    lines = ["{"]
    for key in ("attribution", "aliases"):
        lines.append(f"{json.dumps(key)}: {json.dumps(table[key], sort_keys=True)},")
    lines.append('"families": {')
    providers = list(table["families"].items())
    for i, (pid, models) in enumerate(providers):
        lines.append(f"{json.dumps(pid)}: {json.dumps(models, sort_keys=True)}" + ("," if i < len(providers) - 1 else ""))
    lines.append("}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_prices(table: Dict[str, Any]) -> str:
    """One model per line: compact, yet diffs stay readable when the bundle changes."""
    lines = ["{"]
    for key in ("attribution", "unit", "aliases"):
        lines.append(f"{json.dumps(key)}: {json.dumps(table[key], sort_keys=True)},")
    lines.append('"prices": {')
    providers = list(table["prices"].items())
    for i, (pid, models) in enumerate(providers):
        lines.append(f"{json.dumps(pid)}: {{")
        items = list(models.items())
        for j, (model, entry) in enumerate(items):
            sep = "," if j < len(items) - 1 else ""
            lines.append(f"{json.dumps(model)}: {json.dumps(entry, sort_keys=True)}{sep}")
        lines.append("}" + ("," if i < len(providers) - 1 else ""))
    lines.append("}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_domains(table: Dict[str, Any]) -> str:
    return json.dumps(table, indent=1, sort_keys=False) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE, help="path to spec/v0.1/bundle.json")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for the generated tables")
    args = parser.parse_args(argv)
    bundle = json.loads(args.bundle.read_text(encoding="utf-8"))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "provider_domains.json").write_text(render_domains(provider_domains(bundle, args.bundle)), encoding="utf-8")
    (args.out / "model_prices.json").write_text(render_prices(model_prices(bundle, args.bundle)), encoding="utf-8")
    (args.out / "model_families.json").write_text(render_families(model_families(bundle, args.bundle)), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
