"""Structured cache keys for LangChain calls: what is embedded and what must match exactly.

A chat prompt is split into the *question* (the text of the last human message, the only
part compared by meaning) and the *context* (system prompt, earlier turns, tool messages,
non-text content blocks), which LangChain's ``llm_string`` joins (model identity, sampling
parameters, bound tools and schemas). Everything but the question is the *exact part* of the
key, given to the core as ``exact=`` beside the user scope (``SemanticCache.get(question,
scope, exact=...)``), so two calls that differ in any of it can never share an answer, and
``SemanticCache.invalidate(scope)`` drops a user scope with all its exact parts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.runnables.config import var_child_runnable_config

from rag_optimize import InvalidTypeError, SemanticCache
from rag_optimize.cache import current_scope, digest

SCOPE_METADATA_KEY = "cache_scope"
"""The ``RunnableConfig`` metadata key read for a scope (``config={"metadata": {...}}``)."""

_HUMAN = frozenset({"HumanMessage", "HumanMessageChunk"})
_TEMPERATURE = re.compile(r"""["']temperature["']\s*[:,]\s*(-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)""")


@dataclass(frozen=True)
class PromptKey:
    """The embedded question and the digest of everything that must match exactly."""

    question: str
    context_digest: str


def split_prompt(prompt: str, llm_string: str) -> PromptKey:
    """Split a prompt as LangChain passes it to ``BaseCache.lookup`` into a :class:`PromptKey`.

    Chat models pass ``dumps(messages)`` (a JSON list of serialised messages); text LLMs pass
    the prompt text, which is embedded whole.
    """
    messages = _parse_messages(prompt)
    if messages is None:
        return PromptKey(prompt, digest("text", llm_string))
    last_human = max((i for i, m in enumerate(messages) if _class_name(m) in _HUMAN), default=None)
    if last_human is None:
        text = "\n".join(_text(m.get("kwargs", {}).get("content")) for m in messages)
        return PromptKey(text, digest("chat-no-human", llm_string, prompt))
    content = messages[last_human].get("kwargs", {}).get("content")
    context = [m for i, m in enumerate(messages) if i != last_human]
    extra = _non_text_blocks(content)
    context_json = json.dumps([context, last_human, extra], sort_keys=True, default=str)
    return PromptKey(_text(content), digest("chat", llm_string, context_json))


def check_cache(cache: object) -> SemanticCache:
    """``cache`` if it is a :class:`~rag_optimize.SemanticCache`, else a clear
    :class:`~rag_optimize.InvalidTypeError` (a ``TypeError``)."""
    if not isinstance(cache, SemanticCache):
        raise InvalidTypeError(
            f"cache must be a rag_optimize.SemanticCache, got {type(cache).__name__}"
        )
    return cache


def fails_closed(cache: SemanticCache, user_scope: str | None) -> bool:
    """Whether a call without a scope must bypass the cache (``require_scope=True``)."""
    return user_scope is None and bool(getattr(cache, "require_scope", False))


@dataclass(frozen=True)
class ScopedKey:
    """A call's cache key, as the core takes it: the question (compared by meaning), the
    user scope and the exact part (``SemanticCache.get(question, scope, exact=exact)``)."""

    question: str
    scope: str
    exact: dict[str, str | None]


def scoped_key(
    question: str, user_scope: str | None, exact: str, index_version: str | None
) -> ScopedKey:
    """The key of a call whose scope is resolved (and did not fail closed): the exact part
    is ``exact`` (the digest of everything but the question) and the ``index_version``."""
    return ScopedKey(question, user_scope or "", {"key": exact, "index_version": index_version})


def resolve_user_scope(
    explicit: str | None, config: Mapping[str, Any] | None = None, key: str = SCOPE_METADATA_KEY
) -> str | None:
    """The scope to use: ``explicit``, else the active ``cache_scope`` block, else
    ``metadata[key]`` of ``config`` or of the ``RunnableConfig`` LangChain is running under
    (only set while the model runs inside a chain/runnable call that received ``config``)."""
    if explicit is not None:
        return explicit
    scope = current_scope()
    if scope is not None:
        return scope
    if config is None:
        config = var_child_runnable_config.get()
    metadata = (config or {}).get("metadata") or {}
    value = metadata.get(key)
    return value if isinstance(value, str) else None


def temperature_of(llm_string: str) -> float | None:
    """The sampling temperature named in ``llm_string`` (the last one given), or ``None``."""
    found = _TEMPERATURE.findall(llm_string)
    return float(found[-1]) if found else None


def _parse_messages(prompt: str) -> list[dict[str, Any]] | None:
    if not prompt.startswith("["):
        return None
    try:
        data = json.loads(prompt)
    except ValueError:
        return None
    if not isinstance(data, list) or not all(
        isinstance(m, dict) and m.get("lc") == 1 for m in data
    ):
        return None
    return data


def _class_name(message: dict[str, Any]) -> str:
    ident = message.get("id")
    return str(ident[-1]) if isinstance(ident, list) and ident else ""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            block if isinstance(block, str) else str(block.get("text", ""))
            for block in content
            if isinstance(block, str) or _is_text_block(block)
        )
    return ""


def _non_text_blocks(content: Any) -> list[Any]:
    """Images, files and other blocks of the question: they must match exactly."""
    if not isinstance(content, list):
        return []
    return [b for b in content if not (isinstance(b, str) or _is_text_block(b))]


def _is_text_block(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") == "text"
