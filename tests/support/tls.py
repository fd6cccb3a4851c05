"""A throw-away certificate authority and server certificate for the provider host names.

Clients trust only this CA (passed explicitly: ``curl --cacert``, an ``ssl.SSLContext`` for httpx,
``NODE_EXTRA_CA_CERTS``), so the replay server can answer as ``api.openai.com`` without touching the
machine's trust store.
"""
from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Tuple

import trustme

# Names a test may point at the replay server: every TLS host of the fixtures is covered (wildcards
# for the per-resource Azure and Vertex names); make_pki() takes more.
SERVER_NAMES: Tuple[str, ...] = (
    "api.openai.com",
    "*.openai.azure.com",
    "*.cognitiveservices.azure.com",
    "api.anthropic.com",
    "generativelanguage.googleapis.com",
    "*.googleapis.com",
    "api.cohere.com",
    "api.cohere.ai",
    "api.mistral.ai",
    "api.groq.com",
    "api.deepseek.com",
    "api.together.xyz",
    "api.cerebras.ai",
    "openrouter.ai",
    "*.amazonaws.com",
    "bedrock-runtime.us-east-1.amazonaws.com",
    "downloads.example.test",
    "ollama.replay.test",  # Ollama behind TLS: a name the sensor's config maps to provider ollama
    "llm-gateway.internal.example",  # a host no provider table knows (an in-house OpenAI-shaped gateway)
    "localhost",
    "127.0.0.1",
    "::1",
)


@dataclass(frozen=True)
class TestPki:
    """Paths of the PEM files: clients need ``ca_file``; the server ``cert_file`` + ``key_file``."""

    __test__ = False  # not a pytest test class despite the name

    ca_file: Path
    cert_file: Path
    key_file: Path

    def client_context(self) -> ssl.SSLContext:
        """An ssl context that trusts only the test CA (what SDK clients get as ``verify=``)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def client_env(self) -> Dict[str, str]:
        """Environment variables that make env-honouring clients trust the test CA."""
        ca = str(self.ca_file)
        return {"SSL_CERT_FILE": ca, "NODE_EXTRA_CA_CERTS": ca, "CURL_CA_BUNDLE": ca, "REQUESTS_CA_BUNDLE": ca}


def make_pki(directory: Path, extra_names: Iterable[str] = ()) -> TestPki:
    """Create a CA and one server certificate for SERVER_NAMES plus ``extra_names`` in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = list(dict.fromkeys(list(SERVER_NAMES) + list(extra_names)))
    ca = trustme.CA(organization_name="oisp-sensor tests")
    leaf = ca.issue_cert(*names, common_name="oisp-replay")
    pki = TestPki(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    ca.cert_pem.write_to_path(str(pki.ca_file))
    leaf.private_key_pem.write_to_path(str(pki.key_file))
    with open(pki.cert_file, "wb") as handle:
        for blob in leaf.cert_chain_pems:
            handle.write(blob.bytes())
    return pki
