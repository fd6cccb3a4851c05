"""Pieces of request bodies that several APIs share: roles, content parts, sampling parameters."""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

from oisp_daemon.providers.exchange import Message
from oisp_daemon.providers.fields import as_dict, as_int, as_list, as_number, as_str

OISP_ROLES = ("system", "user", "assistant", "tool", "function")
# OpenAI's "developer" messages are the system prompt of reasoning models.
_ROLE_ALIASES = {"developer": "system"}

TEXT_PART_TYPES = ("text", "input_text", "output_text")
IMAGE_PART_TYPES = ("image", "image_url", "input_image")


def oisp_role(role: Any) -> str:
    """The OISP role for an API role; unknown roles count as user input."""
    text = as_str(role) or "user"
    text = _ROLE_ALIASES.get(text, text)
    return text if text in OISP_ROLES else "user"


def content_text(content: Any) -> Tuple[Optional[str], int]:
    """(text, image count) of message content: a string, or a list of typed parts.

    Text parts are joined with newlines: in a request they are separate blocks a user wrote.
    """
    if isinstance(content, str):
        return content, 0
    texts: List[str] = []
    images = 0
    for part in as_list(content):
        if isinstance(part, str):
            texts.append(part)
            continue
        part = as_dict(part)
        kind = as_str(part.get("type"))
        if kind in TEXT_PART_TYPES and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind in IMAGE_PART_TYPES:
            images += 1
    return ("\n".join(texts) if texts else None), images


def make_message(role: Any, content: Any, **extra: Any) -> Message:
    text, images = content_text(content)
    return Message(role=oisp_role(role), content=text, has_images=images > 0, image_count=images, **extra)


def system_prompt(messages: Iterable[Message]) -> Optional[str]:
    texts = [m.content for m in messages if m.role == "system" and m.content]
    return "\n".join(texts) if texts else None


def sampling_parameters(body: Dict[str, Any], max_tokens_keys: Iterable[str], stop_key: str = "stop") -> Dict[str, Any]:
    """OISP `parameters` from a request body: only values of the types the schema allows."""
    params: Dict[str, Any] = {}
    for key in ("temperature", "top_p", "frequency_penalty", "presence_penalty"):
        number = as_number(body.get(key))
        if number is not None:
            params[key] = number
    for key in max_tokens_keys:
        count = as_int(body.get(key))
        if count is not None:
            params["max_tokens"] = count
            break
    stop = body.get(stop_key)
    if isinstance(stop, str):
        params["stop"] = [stop]
    elif isinstance(stop, list) and stop and all(isinstance(s, str) for s in stop):
        params["stop"] = list(stop)
    return params


_NUMBER_PARAMETERS = ("temperature", "top_p", "frequency_penalty", "presence_penalty")


def named_parameters(config: Dict[str, Any], **keys: str) -> Dict[str, Any]:
    """OISP `parameters` from a config whose field names are the API's own: `keys` maps an OISP
    name (temperature, top_p, frequency_penalty, presence_penalty, max_tokens, stop) to the
    API's field for it; an unmapped name is looked up as it is."""
    params: Dict[str, Any] = {}
    for name in _NUMBER_PARAMETERS:
        number = as_number(config.get(keys.get(name, name)))
        if number is not None:
            params[name] = number
    count = as_int(config.get(keys.get("max_tokens", "max_tokens")))
    if count is not None:
        params["max_tokens"] = count
    stop = config.get(keys.get("stop", "stop"))
    if isinstance(stop, list) and stop and all(isinstance(s, str) for s in stop):
        params["stop"] = list(stop)
    return params
