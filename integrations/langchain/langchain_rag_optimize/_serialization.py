"""JSON encoding of LangChain values a cache stores: generations, messages, documents.

The core only stores JSON, so cached answers must be turned into plain data and back. We do
not use pickle (a cache entry may come back from Redis), and we do not use
``langchain_core.load.load`` either: it revives arbitrary allow-listed ``Serializable``
classes. Decoding here can only ever build messages (through ``messages_from_dict``),
``Document``s, ``Generation``/``ChatGeneration`` and plain JSON values.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.documents import Document
from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict
from langchain_core.outputs import ChatGeneration, Generation

from rag_optimize.errors import InvalidInputError, InvalidTypeError

_TAG = "__rag_optimize__"


class NotCacheable(InvalidTypeError):
    """The value holds something we cannot store as JSON and revive safely."""


def encode_generations(generations: Sequence[Generation]) -> list[dict[str, Any]]:
    """Plain-JSON form of LLM/chat generations (text, generation_info, message)."""
    out: list[dict[str, Any]] = []
    for gen in generations:
        item: dict[str, Any] = {"text": gen.text, "generation_info": gen.generation_info}
        if isinstance(gen, ChatGeneration):
            item["message"] = message_to_dict(gen.message)
        out.append(item)
    _check_json(out)
    return out


def decode_generations(data: Any) -> list[Generation]:
    """Inverse of :func:`encode_generations`; raises ``ValueError`` on a malformed entry."""
    if not isinstance(data, list):
        raise InvalidInputError(f"cached generations must be a list, got {type(data).__name__}")
    out: list[Generation] = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise InvalidInputError("cached generation is not a {'text': ...} mapping")
        info = item.get("generation_info")
        if "message" in item:
            (message,) = messages_from_dict([item["message"]])
            out.append(ChatGeneration(message=message, generation_info=info))
        else:
            out.append(Generation(text=item["text"], generation_info=info))
    return out


def encode_value(value: Any) -> Any:
    """Plain-JSON form of a chain output: JSON values, messages, ``Document``s, nested in
    dicts, lists and tuples. Raises :class:`NotCacheable` for anything else."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Document):
        return {
            _TAG: "document",
            "page_content": value.page_content,
            "metadata": _plain(value.metadata),
            "id": value.id,
        }
    if isinstance(value, BaseMessage):
        return {_TAG: "message", "message": _plain(message_to_dict(value))}
    if isinstance(value, (list, tuple)):
        return [encode_value(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise NotCacheable("only dicts with str keys can be cached")
        items = {k: encode_value(v) for k, v in value.items()}
        # A user dict that happens to use our tag is wrapped so it decodes as a dict.
        return {_TAG: "dict", "items": items} if _TAG in value else items
    raise NotCacheable(f"cannot cache a value of type {type(value).__name__}")


def decode_value(data: Any) -> Any:
    """Inverse of :func:`encode_value` (tuples come back as lists)."""
    if isinstance(data, list):
        return [decode_value(v) for v in data]
    if not isinstance(data, dict):
        return data
    tag = data.get(_TAG)
    if tag is None:
        return {k: decode_value(v) for k, v in data.items()}
    if tag == "document":
        return Document(page_content=data["page_content"], metadata=data["metadata"], id=data["id"])
    if tag == "message":
        return messages_from_dict([data["message"]])[0]
    if tag == "dict":
        return {k: decode_value(v) for k, v in data["items"].items()}
    raise InvalidInputError(f"unknown cached value tag {tag!r}")


def _plain(value: Any) -> Any:
    """``value`` if it survives a JSON round trip unchanged in meaning, else NotCacheable."""
    _check_json(value)
    return value


def _check_json(value: Any) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise NotCacheable(f"value is not JSON-serialisable: {exc}") from exc
