"""The interface every API family implements: one module per family, registered by one line in
providers/families.py.

A family is a module (openai.py, anthropic.py, ...) with these names. It decides which requests
are its own (`route`), what a request asks (`parse_request`), how its streamed answers decode
while they arrive (`stream_decoder`) and what a whole response says (`parse_response`). Usage
semantics (whether cached tokens are inside the prompt count, reasoning tokens) are set by the
family on the Usage it returns; nothing downstream looks at provider ids to guess them.
"""
from __future__ import annotations

from typing import FrozenSet, Optional, Protocol, Tuple, runtime_checkable

from oisp_daemon.decode.messages import HttpRequest, HttpResponse
from oisp_daemon.providers.exchange import AiRequestInfo, AiResponseInfo
from oisp_daemon.providers.stream import StreamDecoder

Route = Tuple[str, str]  # (api, OISP request_type), e.g. ("openai.chat_completions", "chat")


@runtime_checkable
class ApiFamily(Protocol):
    FAMILY: str  # the prefix of the `api` names it produces ("openai" for "openai.responses")
    NATIVE_PROVIDERS: FrozenSet[str]  # providers whose own API this is: tried first for them
    ANY_PROVIDER: bool  # the shape is served by many providers (OpenAI-compatible servers)

    def route(self, method: str, target: str) -> Optional[Route]:
        """(api, request_type) when a request with this method and target is this family's call."""
        ...

    def parse_request(self, provider: str, req: HttpRequest, host: str) -> Optional[AiRequestInfo]:
        """What the request asks: model, messages, tools, parameters, credentials."""
        ...

    def stream_decoder(self, info: AiRequestInfo, resp: HttpResponse) -> Optional[StreamDecoder]:
        """A decoder fed the body as it arrives, for a streamed answer whose headers just
        arrived (resp.body may be empty); None when the answer is not a stream."""
        ...

    def parse_response(self, info: AiRequestInfo, resp: HttpResponse) -> AiResponseInfo:
        """What the whole response says: text, tool calls, usage, finish reason, errors."""
        ...
