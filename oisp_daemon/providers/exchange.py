"""What a provider parser extracts from one AI API exchange, independent of the OISP envelope.

Parsers fill these; `events/` turns them into OISP events. Raw provider values are kept raw here
(e.g. Anthropic's `end_turn`); normalisation to OISP enums happens in `events/`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class Message:
    role: str  # system | user | assistant | tool | function (OISP roles)
    content: Optional[str] = None  # text content, concatenated when the API sends parts
    has_images: bool = False
    image_count: int = 0
    # Tool results (role "tool"): the call they answer, by id and/or tool name, and whether the
    # API marks the result as a failure (Anthropic is_error, Bedrock status "error").
    tool_call_id: Optional[str] = None
    name: Optional[str] = None
    is_error: bool = False


@dataclass
class ToolDefinition:
    name: str
    type: str = "function"  # OISP: function | code_interpreter | file_search | computer_use | other
    description: Optional[str] = None


@dataclass
class ToolCall:
    name: str
    id: Optional[str] = None
    type: str = "function"
    arguments: Optional[str] = None  # raw JSON text as the model produced it (streams: joined deltas)


@dataclass
class Usage:
    prompt_tokens: Optional[int] = None
    completion_tokens: Optional[int] = None
    total_tokens: Optional[int] = None
    cached_tokens: Optional[int] = None  # OpenAI cached_tokens / Anthropic cache_read_input_tokens
    cache_creation_tokens: Optional[int] = None  # Anthropic cache_creation_input_tokens
    reasoning_tokens: Optional[int] = None
    # Set by the parser, which knows its API: whether prompt_tokens already includes the cached
    # (and cache-written) tokens (OpenAI) or counts them apart (Anthropic). Totals and cost
    # follow it; nothing downstream guesses from the provider id.
    cache_in_prompt: bool = True
    # Likewise whether completion_tokens includes reasoning tokens (OpenAI) or not (Gemini's
    # candidatesTokenCount): reasoning is billed as output either way.
    reasoning_in_completion: bool = True


@dataclass
class StreamDelta:
    """What one streamed event added to the answer, for an `ai.streaming_chunk` event."""

    offset: int = 0  # body offset just past the event: its kernel timestamp comes from there
    choice_index: int = 0
    role: Optional[str] = None
    content: Optional[str] = None  # answer text (reasoning/thinking excluded)
    tool_call: Optional["ToolCall"] = None  # a call starting or a piece of its arguments
    finish_reason: Optional[str] = None  # raw provider value

    @property
    def carries_output(self) -> bool:
        """Text or a tool call: what time to first token waits for."""
        return bool(self.content) or self.tool_call is not None


@dataclass
class AiRequestInfo:
    provider: str  # bundle provider id: openai, anthropic, google, azure_openai, ...
    api: str  # e.g. openai.chat_completions, openai.embeddings, anthropic.messages
    request_type: str  # OISP: chat | completion | embedding | image | audio | moderation | other
    endpoint: str  # https://host/path
    model: Optional[str] = None
    # The model id without deployment decorations (a Bedrock cross-region prefix), set by the
    # family where the id sent differs from the one prices and families are known under.
    base_model: Optional[str] = None
    streaming: bool = False
    messages: List[Message] = field(default_factory=list)
    system_prompt: Optional[str] = None  # text of the system prompt(s), if any
    tools: List[ToolDefinition] = field(default_factory=list)
    tool_choice: Optional[str] = None
    parameters: Dict[str, Any] = field(default_factory=dict)  # temperature, top_p, max_tokens, stop, ...
    input_count: Optional[int] = None  # embeddings: number of inputs
    api_key: Optional[str] = None  # the credential as sent; events keep only a prefix and a hash
    organization_id: Optional[str] = None
    project_id: Optional[str] = None
    region: Optional[str] = None  # the provider's region where the host or path names one (Bedrock, Vertex)
    # Provider-specific attribution the OISP request has no field for (Azure deployment and
    # api-version, Anthropic beta features, ...): events carry it under attrs.
    attribution: Dict[str, str] = field(default_factory=dict)
    parse_error: Optional[str] = None  # body was not the JSON the API expects


@dataclass
class AiResponseInfo:
    status_code: int
    success: bool
    streaming: bool = False
    model: Optional[str] = None
    provider_request_id: Optional[str] = None  # response id (chatcmpl-..., msg_...) or x-request-id
    text: Optional[str] = None  # assistant text of choice 0 (no reasoning/thinking content)
    choice_texts: List[Optional[str]] = field(default_factory=list)  # per choice, by index
    choice_finish_reasons: List[Optional[str]] = field(default_factory=list)  # raw, per choice
    finish_reason: Optional[str] = None  # raw provider value of choice 0
    # Names of raw values that are enum numbers (Vertex with enum-encoding=int sends "1" for
    # STOP): set by the family that knows its enum, used to normalise; the raw value stays.
    finish_reason_names: Dict[str, str] = field(default_factory=dict)
    tool_calls: List[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    error_type: Optional[str] = None
    error_message: Optional[str] = None
    error_code: Optional[str] = None
    embedding_count: Optional[int] = None
    embedding_dimensions: Optional[int] = None
    # Offset in the decoded body of the first event that carried output (text or tool call):
    # the decode layer maps it to a kernel timestamp for time to first token.
    first_token_offset: Optional[int] = None
    # The stream's own end marker was seen ([DONE], message_stop, response.completed): clients
    # often close the connection right after it, before reading the chunked terminator, and the
    # response is whole all the same.
    stream_finished: bool = False
    parse_error: Optional[str] = None
    # What the OISP response has no field for (a gRPC call's status and message sizes): attrs.
    attribution: Dict[str, str] = field(default_factory=dict)
