"""Google Gemini API family: generateContent, streamGenerateContent (SSE with alt=sse, else a
streamed JSON array) and embedContent, on the Gemini API (generativelanguage.googleapis.com,
`/v1beta/models/<model>:<method>`) and on Vertex AI (`aiplatform.googleapis.com` and the
regional hosts, `/v1/projects/<p>/locations/<l>/publishers/google/models/<model>:<method>`).

The model and the method are in the path, not the body. Thought parts (`"thought": true`) are
the model's reasoning: never response text. `candidatesTokenCount` excludes thought tokens,
which Google bills as output: Usage says so for cost. The API key may travel as `?key=`.
"""
from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional
from urllib.parse import parse_qs, unquote, urlsplit

from oisp_daemon.decode.messages import HttpRequest, HttpResponse
from oisp_daemon.providers.endpoint import request_path
from oisp_daemon.providers.errors import stream_error
from oisp_daemon.providers.exchange import AiRequestInfo, AiResponseInfo, Message, StreamDelta, ToolCall, ToolDefinition, Usage
from oisp_daemon.providers.family import Route
from oisp_daemon.providers.fields import as_dict, as_int, as_list, as_str, nonempty
from oisp_daemon.providers.parsing import set_error, start_request, start_response
from oisp_daemon.providers.prompt import named_parameters
from oisp_daemon.providers.stream import JsonArray, JsonEvent, SseJson, StreamDecoder, decode_whole

# The ApiFamily interface (providers/family.py).
FAMILY = "gemini"
NATIVE_PROVIDERS = frozenset({"google", "gemini", "vertex_ai"})
ANY_PROVIDER = True  # the path shape is unmistakable, whatever host serves it

API_GENERATE = "gemini.generateContent"
API_STREAM = "gemini.streamGenerateContent"
API_EMBED = "gemini.embedContent"
API_BATCH_EMBED = "gemini.batchEmbedContents"

_ROUTE = re.compile(
    r"^(?:/v1[a-z0-9]*)(?:/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/publishers/google)?"
    r"/(?:models|tunedModels)/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent|embedContent|batchEmbedContents)$"
)
_APIS = {
    "generateContent": (API_GENERATE, "chat"),
    "streamGenerateContent": (API_STREAM, "chat"),
    "embedContent": (API_EMBED, "embedding"),
    "batchEmbedContents": (API_BATCH_EMBED, "embedding"),
}
_ROLES = {"user": "user", "model": "assistant", "function": "tool", "tool": "tool", "system": "system"}
_TOOL_CHOICES = {"AUTO": "auto", "ANY": "required", "NONE": "none", "VALIDATED": "auto"}
# Candidate.FinishReason by number, for answers sent with enum-encoding=int (Vertex REST).
_FINISH_NUMBERS = {"0": "FINISH_REASON_UNSPECIFIED", "1": "STOP", "2": "MAX_TOKENS", "3": "SAFETY", "4": "RECITATION",
                   "5": "OTHER", "6": "BLOCKLIST", "7": "PROHIBITED_CONTENT", "8": "SPII", "9": "MALFORMED_FUNCTION_CALL"}


def route(method: str, target: str) -> Optional[Route]:
    """(api, request_type) for a Gemini / Vertex google-publisher call; countTokens and the rest: None."""
    match = _ROUTE.match(unquote(request_path(target))) if method.upper() == "POST" else None
    return _APIS[match.group("method")] if match else None


# ---------------------------------------------------------------------------------------------
# Requests


def parse_request(provider: str, req: HttpRequest, host: str) -> Optional[AiRequestInfo]:
    found = route(req.method, req.target)
    if found is None:
        return None
    match = _ROUTE.match(unquote(request_path(req.target)))
    assert match is not None  # route() matched the same path
    info, body = start_request(provider, req, host, found)
    info.model = match.group("model")
    info.streaming = info.api == API_STREAM
    info.project_id = info.project_id or match.group("project")
    info.region = match.group("location")
    info.api_key = info.api_key or _query_key(req.target)
    if body is None:
        return info
    if info.api in (API_EMBED, API_BATCH_EMBED):
        requests = as_list(body.get("requests"))
        info.input_count = len(requests) if info.api == API_BATCH_EMBED else 1
        return info
    system, _, _ = _parts_text(as_dict(body.get("systemInstruction")).get("parts"))
    if system:
        info.system_prompt = system
        info.messages.append(Message(role="system", content=system))
    for content in as_list(body.get("contents")):
        info.messages.extend(_request_messages(as_dict(content)))
    for tool in as_list(body.get("tools")):
        tool = as_dict(tool)
        for declaration in as_list(tool.get("functionDeclarations") or tool.get("function_declarations")):
            declaration = as_dict(declaration)
            if as_str(declaration.get("name")):
                info.tools.append(ToolDefinition(name=declaration["name"], description=as_str(declaration.get("description"))))
        if "codeExecution" in tool or "code_execution" in tool:
            info.tools.append(ToolDefinition(name="code_execution", type="code_interpreter"))
        for builtin in ("googleSearch", "google_search", "googleSearchRetrieval", "urlContext"):
            if builtin in tool:
                info.tools.append(ToolDefinition(name=builtin, type="other"))
    mode = as_str(as_dict(as_dict(body.get("toolConfig")).get("functionCallingConfig")).get("mode"))
    info.tool_choice = _TOOL_CHOICES.get((mode or "").upper()) if mode else None
    info.parameters = named_parameters(as_dict(body.get("generationConfig")), top_p="topP", max_tokens="maxOutputTokens",
                                       stop="stopSequences", frequency_penalty="frequencyPenalty",
                                       presence_penalty="presencePenalty")
    return info


def _query_key(target: str) -> Optional[str]:
    """The API key sent as `?key=` (the Gemini API accepts it there as well as in x-goog-api-key)."""
    values = parse_qs(urlsplit(target).query).get("key")
    return values[0] if values and values[0] else None


def _parts_text(parts: Any) -> "tuple[Optional[str], int, List[Dict[str, Any]]]":
    """(text, image count, other parts) of Gemini content parts; thought parts are left out."""
    texts: List[str] = []
    images = 0
    other: List[Dict[str, Any]] = []
    for part in as_list(parts):
        part = as_dict(part)
        if part.get("thought") is True:
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif "inlineData" in part or "inline_data" in part or "fileData" in part or "file_data" in part:
            images += 1
        elif part:
            other.append(part)
    return ("".join(texts) if texts else None), images, other


def _request_messages(content: Dict[str, Any]) -> List[Message]:
    """A content turn as messages: the turn itself, and one tool message per functionResponse
    (the results of the model's earlier calls, which the API sends as user-role parts)."""
    role = _ROLES.get(as_str(content.get("role")) or "user", "user")
    text, images, other = _parts_text(content.get("parts"))
    results = [as_dict(p.get("functionResponse") or p.get("function_response")) for p in other]
    results = [r for r in results if r]
    messages = []
    if text is not None or images or len(results) < len(other) or not other:
        messages.append(Message(role=role, content=text, has_images=images > 0, image_count=images))
    for response in results:
        payload = response.get("response")
        messages.append(Message(role="tool", name=as_str(response.get("name")), tool_call_id=as_str(response.get("id")),
                                content=json.dumps(payload) if payload is not None else None))
    return messages


# ---------------------------------------------------------------------------------------------
# Responses


def parse_response(info: AiRequestInfo, resp: HttpResponse) -> AiResponseInfo:
    if info.api == API_STREAM and 200 <= resp.status < 300:
        # A stream whatever its Content-Type: SSE with alt=sse, else a JSON array.
        out = AiResponseInfo(status_code=resp.status, success=True, streaming=True)
        decode_whole(_decoder(resp, out), resp.body)
        out.model = out.model or info.model
        return out
    out, body = start_response(info, resp, ())
    if body is not None:
        if info.api in (API_EMBED, API_BATCH_EMBED):
            _embeddings(out, body)
        else:
            chunk = _Chunks(out)
            chunk.apply(body)
            chunk.close()
    out.model = out.model or info.model
    return out


def stream_decoder(info: AiRequestInfo, resp: HttpResponse) -> Optional[StreamDecoder]:
    """A live decoder for streamGenerateContent; None for other methods and errors."""
    if info.api != API_STREAM or resp.status >= 400:
        return None
    return _decoder(resp, AiResponseInfo(status_code=resp.status, success=True, streaming=True))


def _decoder(resp: HttpResponse, out: AiResponseInfo) -> StreamDecoder:
    sse = "text/event-stream" in (resp.header("Content-Type") or "").lower()
    return StreamDecoder(SseJson() if sse else JsonArray(), _Chunks(out), out)


def _usage(raw: Any) -> Usage:
    raw = as_dict(raw)
    return Usage(
        prompt_tokens=as_int(raw.get("promptTokenCount")),
        completion_tokens=as_int(raw.get("candidatesTokenCount")),
        total_tokens=as_int(raw.get("totalTokenCount")),
        cached_tokens=as_int(raw.get("cachedContentTokenCount")),
        reasoning_tokens=as_int(raw.get("thoughtsTokenCount")),
        reasoning_in_completion=False,
    )


class _Chunks:
    """GenerateContentResponse objects: one for a whole answer, one per streamed chunk (each
    carries the next piece of every candidate, and usage so far)."""

    def __init__(self, out: AiResponseInfo) -> None:
        self.out = out
        self.texts: Dict[int, List[str]] = {}
        self.finishes: Dict[int, Optional[str]] = {}
        self.calls: List[ToolCall] = []

    def on_event(self, event: JsonEvent) -> List[StreamDelta]:
        return self.apply(event.data)

    def apply(self, chunk: Dict[str, Any]) -> List[StreamDelta]:
        out = self.out
        if chunk.get("error"):
            set_error(out, stream_error(chunk["error"]))
        out.model = out.model or nonempty(as_str(chunk.get("modelVersion")))
        out.provider_request_id = as_str(chunk.get("responseId")) or out.provider_request_id
        if isinstance(chunk.get("usageMetadata"), dict):
            out.usage = _usage(chunk["usageMetadata"])
        blocked = as_str(as_dict(chunk.get("promptFeedback")).get("blockReason"))
        if blocked:
            self.finishes.setdefault(0, blocked)
        deltas: List[StreamDelta] = []
        for position, candidate in enumerate(as_list(chunk.get("candidates"))):
            candidate = as_dict(candidate)
            index = as_int(candidate.get("index")) or position
            content = as_dict(candidate.get("content"))
            text, _, other = _parts_text(content.get("parts"))
            if text:
                self.texts.setdefault(index, []).append(text)
            finish = candidate.get("finishReason")
            finish_text = str(finish) if isinstance(finish, (str, int)) and not isinstance(finish, bool) else None
            if finish_text:
                self.finishes[index] = finish_text
                if finish_text in _FINISH_NUMBERS:
                    out.finish_reason_names[finish_text] = _FINISH_NUMBERS[finish_text]
            if text or finish_text:
                deltas.append(StreamDelta(choice_index=index, content=text, finish_reason=finish_text))
            for part in other:
                call = _function_call(part)
                if call is not None:
                    self.calls.append(call)
                    deltas.append(StreamDelta(choice_index=index, tool_call=call))
        return deltas

    def close(self) -> None:
        out = self.out
        count = max(list(self.texts) + list(self.finishes) + [-1]) + 1
        out.choice_texts = [nonempty("".join(self.texts.get(i, []))) for i in range(count)]
        out.choice_finish_reasons = [self.finishes.get(i) for i in range(count)]
        out.text = out.choice_texts[0] if out.choice_texts else None
        out.finish_reason = out.choice_finish_reasons[0] if out.choice_finish_reasons else None
        out.tool_calls = self.calls


def _function_call(part: Dict[str, Any]) -> Optional[ToolCall]:
    call = as_dict(part.get("functionCall") or part.get("function_call"))
    name = as_str(call.get("name"))
    if not name:
        return None
    args = call.get("args")
    return ToolCall(name=name, id=as_str(call.get("id")), arguments=json.dumps(args) if args is not None else None)


def _embeddings(out: AiResponseInfo, body: Dict[str, Any]) -> None:
    vectors = [as_dict(e).get("values") for e in as_list(body.get("embeddings"))]
    if isinstance(as_dict(body.get("embedding")).get("values"), list):
        vectors = [body["embedding"]["values"]]
    out.embedding_count = len(vectors)
    first = vectors[0] if vectors else None
    out.embedding_dimensions = len(first) if isinstance(first, list) else None
