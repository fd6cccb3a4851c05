"""Send one recorded chat request through an agent framework, as applications use them: litellm,
or LangChain's ChatOpenAI, ChatAnthropic and ChatGoogleGenerativeAI.

The framework builds the request from the recording's model and first user message, trusts the
test CA (through the HTTP client it accepts, or SSL_CERT_FILE for the ones that take none) and
adds the replay's X-Fixture header. Prints one JSON summary line.

Usage: framework_client.py --ca CA.pem --fixture openai-chat-001 --framework litellm
"""
from __future__ import annotations

import os
from typing import Any, Dict, List

from client_common import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, SDK_TEST_KEY, TIMEOUT_S, client_context, emit, fixture_parser

import httpx
from tests.support.llm_fixtures import Fixture, load_fixture


def _prompt(fixture: Fixture) -> List[Dict[str, str]]:
    body = fixture.request_json()
    for message in body.get("messages", []):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return [{"role": "user", "content": message["content"]}]
    for content in body.get("contents", []):
        for part in content.get("parts", []):
            if isinstance(part.get("text"), str):
                return [{"role": "user", "content": part["text"]}]
    return [{"role": "user", "content": "Hello"}]


def _model(fixture: Fixture) -> str:
    return fixture.request_json().get("model") or fixture.path.rsplit("/models/", 1)[1].split(":", 1)[0]


def litellm_chat(fixture: Fixture, ca: str) -> Dict[str, Any]:
    import litellm

    litellm.client_session = httpx.Client(verify=client_context(ca), timeout=TIMEOUT_S)
    litellm.ssl_verify = ca  # its Anthropic handler builds its own client
    provider = "anthropic" if fixture.provider == "anthropic" else "openai"
    key = ANTHROPIC_TEST_KEY if provider == "anthropic" else OPENAI_TEST_KEY
    answer = litellm.completion(model="%s/%s" % (provider, _model(fixture)), messages=_prompt(fixture), api_key=key,
                                extra_headers={"X-Fixture": fixture.name}, max_tokens=fixture.request_json().get("max_tokens"))
    return {"text": answer.choices[0].message.content}


def langchain_openai(fixture: Fixture, ca: str) -> Dict[str, Any]:
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(model=_model(fixture), api_key=OPENAI_TEST_KEY, default_headers={"X-Fixture": fixture.name},
                      http_client=httpx.Client(verify=client_context(ca), timeout=TIMEOUT_S))
    return {"text": chat.invoke(_prompt(fixture)[0]["content"]).content}


def langchain_anthropic(fixture: Fixture, ca: str) -> Dict[str, Any]:
    from langchain_anthropic import ChatAnthropic

    os.environ["SSL_CERT_FILE"] = ca  # ChatAnthropic builds its own HTTP client
    chat = ChatAnthropic(model=_model(fixture), api_key=ANTHROPIC_TEST_KEY, default_headers={"X-Fixture": fixture.name},
                         max_tokens=fixture.request_json().get("max_tokens", 1024))
    return {"text": chat.invoke(_prompt(fixture)[0]["content"]).content}


def langchain_google(fixture: Fixture, ca: str) -> Dict[str, Any]:
    from langchain_google_genai import ChatGoogleGenerativeAI

    os.environ["SSL_CERT_FILE"] = ca  # the google-genai client underneath builds its own HTTP client
    chat = ChatGoogleGenerativeAI(model=_model(fixture), google_api_key=SDK_TEST_KEY,
                                  client_options=None, additional_headers={"X-Fixture": fixture.name})
    return {"text": chat.invoke(_prompt(fixture)[0]["content"]).content}


FRAMEWORKS = {"litellm": litellm_chat, "langchain-openai": langchain_openai, "langchain-anthropic": langchain_anthropic,
              "langchain-google": langchain_google}


def main() -> None:
    parser = fixture_parser(__doc__.splitlines()[0])
    parser.add_argument("--framework", required=True, choices=sorted(FRAMEWORKS))
    args = parser.parse_args()
    fixture = load_fixture(args.fixture, args.fixtures_dir)
    emit(dict(FRAMEWORKS[args.framework](fixture, args.ca), framework=args.framework, pid=os.getpid()))


if __name__ == "__main__":
    main()
