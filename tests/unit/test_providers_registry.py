"""Provider detection from Host headers / remote addresses, overrides, and the derived tables."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from oisp_daemon.data import load_table
from oisp_daemon.providers.registry import detect_provider, provider_auth, split_host_port
from tests.support.paths import BUNDLE_PATH

REPO = Path(__file__).resolve().parents[2]
BUNDLE = BUNDLE_PATH


@pytest.mark.parametrize(
    "host, port, expected",
    [
        ("api.openai.com", None, "openai"),
        ("API.OpenAI.com.", 443, "openai"),
        ("api.openai.com:443", None, "openai"),
        ("api.anthropic.com", 443, "anthropic"),
        ("traceloop-stg.openai.azure.com", None, "azure_openai"),
        ("bedrock-runtime.us-east-1.amazonaws.com", 443, "aws_bedrock"),
        ("generativelanguage.googleapis.com", 443, "google"),
        ("localhost:11434", None, "ollama"),
        ("localhost", 11434, "ollama"),
        ("127.0.0.1", 11434, "ollama"),
        ("gpu-box.local:11434", None, "ollama"),
        ("localhost:1234", None, "lmstudio"),
    ],
)
def test_detects_bundle_hosts(host, port, expected):
    assert detect_provider(host, port) == expected


@pytest.mark.parametrize(
    "host, port",
    [(None, 443), ("", 443), ("example.com", 443), ("localhost", 443), ("localhost:8080", None), ("openai.azure.com.evil.org", 443)],
)
def test_unknown_hosts_are_none(host, port):
    assert detect_provider(host, port) is None


def test_port_in_host_header_wins_over_remote_port():
    assert detect_provider("localhost:11434", 443) == "ollama"


def test_override_adds_a_host():
    assert detect_provider("llm.corp.internal", 443, {"llm.corp.internal": "openai"}) == "openai"


def test_override_beats_bundle():
    assert detect_provider("api.openai.com", 443, {"api.openai.com": "azure_openai"}) == "azure_openai"


def test_override_host_port_beats_override_host():
    overrides = {"gw.corp": "openai", "gw.corp:8443": "anthropic"}
    assert detect_provider("gw.corp:8443", None, overrides) == "anthropic"
    assert detect_provider("gw.corp", 9000, overrides) == "openai"


def test_override_host_port_needs_that_port():
    overrides = {"gw.corp:8443": "anthropic"}
    assert detect_provider("gw.corp", 443, overrides) is None
    assert detect_provider("gw.corp", None, {"gw.corp:443": "openai"}) == "openai"


def test_override_ipv6_address():
    assert detect_provider("[fd00::5]:8000", None, {"[fd00::5]:8000": "vllm"}) == "vllm"
    assert detect_provider("fd00::5", 8000, {"[fd00::5]:8000": "vllm"}) == "vllm"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("Api.OpenAI.com", ("api.openai.com", None)),
        ("host:8080", ("host", 8080)),
        ("[::1]:11434", ("::1", 11434)),
        ("::1", ("::1", None)),
        ("host:notaport", ("host", None)),
        ("host:70000", ("host", None)),
    ],
)
def test_split_host_port(value, expected):
    assert split_host_port(value) == expected


def test_provider_auth_conventions():
    assert provider_auth("openai")["auth_header"] == "Authorization"
    assert provider_auth("openai")["organization_header"] == "OpenAI-Organization"
    assert provider_auth("anthropic")["auth_header"] == "x-api-key"
    assert provider_auth("azure_openai")["auth_header"] == "api-key"
    assert provider_auth("nope") == {}


def _derive_module():
    spec = importlib.util.spec_from_file_location("derive_bundle_tables", REPO / "tools" / "derive_bundle_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_package_tables_are_up_to_date_with_bundle(tmp_path):
    derive = _derive_module()
    assert derive.main(["--bundle", str(BUNDLE), "--out", str(tmp_path)]) == 0
    for name in ("provider_domains", "model_prices", "model_families"):
        assert json.loads((tmp_path / f"{name}.json").read_text()) == load_table(name), name


def test_tables_carry_attribution():
    for name in ("provider_domains", "model_prices", "model_families"):
        attribution = load_table(name)["attribution"]
        assert attribution["source"] == "https://github.com/OximyHQ/oisp-spec"
        assert attribution["license"] == "Apache-2.0"
        assert attribution["bundle_version"] and attribution["generated_at"]


def test_every_bundle_domain_index_entry_is_detected():
    bundle = json.loads(BUNDLE.read_text())
    for host, pid in bundle["domain_index"].items():
        assert detect_provider(host, None) == pid, host


@pytest.mark.parametrize("host,provider", [
    ("us-central1-aiplatform.googleapis.com", "google"),
    ("europe-west4-aiplatform.googleapis.com", "google"),
    ("openrouter.ai", "openrouter"),
    ("api.x.ai", "xai"),
    ("api.cerebras.ai", "cerebras"),
    ("api.writer.com", "writer"),
])
def test_hosts_the_bundle_lacks_are_known(host, provider):
    assert detect_provider(host, None) == provider


def test_the_supplement_does_not_shadow_the_bundle():
    assert detect_provider("aiplatform.googleapis.com", None) == "google"
    assert detect_provider("evil-aiplatform.googleapis.com.example.com", None) is None
