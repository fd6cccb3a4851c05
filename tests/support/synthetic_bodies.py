"""Deterministic response bodies the replay server makes up instead of replaying a recording.

Tests compute the expected bytes with the same functions, so a test can assert exact bodies and
SHA-256 digests of what the sensor captured:

- ``@echo-chat``: an OpenAI chat completion whose answer repeats the last user message, so each
  of many concurrent requests is paired with its response by a mark visible in both bodies.
- ``@big-chat``: an OpenAI chat completion whose ``choices[0].message.content`` is N bytes of
  deterministic text (the 4 MiB response test).
- ``deterministic_bytes``: the plain download body of ``GET /big?bytes=N&seed=S``.

The pseudo-random stream is SHAKE-256 of ``b"oisp-bench:" + seed``, so any language can rebuild it.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, List

ECHO_CHAT = "@echo-chat"
BIG_CHAT = "@big-chat"
SYNTHETIC_NAMES = (ECHO_CHAT, BIG_CHAT)

CREATED = 1700000000  # fixed "created" timestamp so bodies are reproducible
ECHO_PREFIX = "echo: "
# 64 characters that never need JSON escaping, so text length in bytes == JSON string length.
TEXT_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 ."
_TEXT_TABLE = bytes(TEXT_ALPHABET[i % 64] for i in range(256))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def deterministic_bytes(size: int, seed: str) -> bytes:
    """``size`` pseudo-random bytes fixed by ``seed``."""
    return hashlib.shake_256(b"oisp-bench:" + seed.encode("utf-8")).digest(size) if size > 0 else b""


def deterministic_text(size: int, seed: str) -> str:
    """``size`` ASCII characters (letters, digits, space, dot) fixed by ``seed``."""
    return deterministic_bytes(size, seed).translate(_TEXT_TABLE).decode("ascii")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _content_text(content: Any) -> str:
    """Text of a chat message ``content`` (a string or a list of typed parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _word_count(text: str) -> int:
    return len(text.split())


def echo_reply_text(request: Dict[str, Any]) -> str:
    """The assistant answer of ``@echo-chat``: ``"echo: "`` + the last user message's text."""
    users = [m for m in request.get("messages", []) if m.get("role") == "user"]
    return ECHO_PREFIX + (_content_text(users[-1].get("content")) if users else "")


def _echo_usage(request: Dict[str, Any], reply: str) -> Dict[str, int]:
    prompt = sum(_word_count(_content_text(m.get("content"))) for m in request.get("messages", []))
    completion = _word_count(reply)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _echo_id(reply: str) -> str:
    return "chatcmpl-echo-" + sha256_hex(reply.encode("utf-8"))[:24]


def echo_chat_response(request_body: bytes) -> bytes:
    """Non-streaming ``@echo-chat`` response body for a chat completion request body."""
    request = json.loads(request_body)
    reply = echo_reply_text(request)
    return _dumps({
        "id": _echo_id(reply),
        "object": "chat.completion",
        "created": CREATED,
        "model": request.get("model", ""),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": reply, "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }],
        "usage": _echo_usage(request, reply),
    })


def echo_chat_stream_events(request_body: bytes) -> List[bytes]:
    """Streaming ``@echo-chat`` response: one SSE event per element, as OpenAI sends them."""
    request = json.loads(request_body)
    reply = echo_reply_text(request)
    base = {"id": _echo_id(reply), "object": "chat.completion.chunk", "created": CREATED,
            "model": request.get("model", "")}

    def chunk(delta: Dict[str, Any], finish: Any = None) -> bytes:
        body = dict(base, choices=[{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])
        return b"data: " + _dumps(body) + b"\n\n"

    words = reply.split(" ")
    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": word if i == 0 else " " + word}) for i, word in enumerate(words)]
    events.append(chunk({}, "stop"))
    if (request.get("stream_options") or {}).get("include_usage"):
        events.append(b"data: " + _dumps(dict(base, choices=[], usage=_echo_usage(request, reply))) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def big_chat_response(model: str, request_sha256: str, request_len: int, content_bytes: int, seed: str) -> bytes:
    """``@big-chat`` response body: the answer is ``deterministic_text(content_bytes, seed)``.

    The id carries the request body's SHA-256 so the response proves which request it answers.
    """
    prompt_tokens = request_len // 4
    completion_tokens = content_bytes // 4
    return _dumps({
        "id": "chatcmpl-big-" + request_sha256[:24],
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": deterministic_text(content_bytes, seed), "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    })
