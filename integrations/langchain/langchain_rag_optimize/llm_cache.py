"""``SemanticLLMCache``: LangChain's global LLM cache, answered by meaning.

``set_llm_cache(SemanticLLMCache(cache))`` routes every ``invoke``/``ainvoke``/``batch`` of
every LLM and chat model of an existing app through a :class:`rag_optimize.SemanticCache`.

What is compared by meaning and what must match exactly (see ``_keys``): only the user's
question in the last human message is embedded. When that message is a rendered RAG prompt
(instructions, retrieved context and the question in one message, as hub ``rlm/rag-prompt``),
the question is the text after its ``Question:`` label and the rest of the message must match
exactly; a long or multi-line message with no such label is matched exactly only (logged
once). The rule: :func:`rag_optimize.cache.decision.prompt.find_question`. The model
identity and its parameters (LangChain's ``llm_string``, which also holds bound tools and
output schemas), the system prompt, earlier turns and non-text content are hashed into the
exact part of the key, so prompts that differ in any of those never share an answer.

Scope (tenant, user, retrieval filter), first found wins:

1. ``SemanticLLMCache(cache, scope="tenant-a")``;
2. an active ``with cache_scope("tenant-a"):`` block (a contextvar: works with the global
   cache, across threads LangChain starts and asyncio tasks);
3. ``config={"metadata": {"cache_scope": "tenant-a"}}`` given to a chain the model runs in.
   LangChain exposes that config to the cache only while a *runnable containing the model*
   runs (e.g. ``prompt | model``); ``model.invoke(..., config=...)`` called directly does not
   expose it, use ``cache_scope`` there.

With ``SemanticCache(..., require_scope=True)`` a call that has no scope from any of these
bypasses the cache (fails closed: no lookup, no write).

Not cached by default: answers with tool calls (they depend on tool results to come) and
calls whose sampling temperature (read from ``llm_string``) is above ``max_temperature``.
LangChain itself does not consult the LLM cache for ``model.stream()``; to cache streamed
answers wrap the chain with :func:`langchain_rag_optimize.with_semantic_cache`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.outputs import ChatGeneration, Generation

from langchain_rag_optimize._keys import (
    SCOPE_METADATA_KEY,
    ScopedKey,
    check_cache,
    fails_closed,
    resolve_user_scope,
    scoped_key,
    split_prompt,
    temperature_of,
)
from langchain_rag_optimize._serialization import (
    NotCacheable,
    decode_generations,
    encode_generations,
)
from rag_optimize import SemanticCache
from rag_optimize.cache import digest, find_question

__all__ = ["SemanticLLMCache"]

logger = logging.getLogger("rag_optimize.langchain")


class SemanticLLMCache(BaseCache):
    """A LangChain ``BaseCache`` backed by a :class:`~rag_optimize.SemanticCache`.

    Args:
        cache: the semantic cache (embedder, threshold, TTL, store) to use.
        scope: a fixed user-level scope for every call; ``None`` reads it per call from
            ``cache_scope`` or the runnable config (see the module docs).
        scope_metadata_key: the ``RunnableConfig`` metadata key holding a scope.
        max_temperature: calls with a larger sampling temperature are neither looked up
            nor stored; ``None`` caches every temperature.
        cache_tool_calls: also store answers that contain tool calls.
        index_version: version of the data behind the app's prompts; part of the exact
            key and stored as entry metadata (``cache.invalidate(index_version=...)``).
        ttl_seconds: lifetime of the entries written here (default: the cache's).

    Example::

        from langchain_core.globals import set_llm_cache
        set_llm_cache(SemanticLLMCache(SemanticCache(embedder, threshold=0.9)))
    """

    def __init__(
        self,
        cache: SemanticCache,
        *,
        scope: str | None = None,
        scope_metadata_key: str = SCOPE_METADATA_KEY,
        max_temperature: float | None = 0.7,
        cache_tool_calls: bool = False,
        index_version: str | None = None,
        ttl_seconds: float | None = None,
    ) -> None:
        self.cache = check_cache(cache)
        self.scope = scope
        self.scope_metadata_key = scope_metadata_key
        self.max_temperature = max_temperature
        self.cache_tool_calls = cache_tool_calls
        self.index_version = index_version
        self.ttl_seconds = ttl_seconds
        self._warned_exact = False

    # ------------------------------------------------------------- BaseCache API
    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """The cached generations for a prompt of the same meaning, or ``None``."""
        key = self._key(prompt, llm_string)
        if key is None:
            return None
        hit = self.cache.get(key.question, scope=key.scope, exact=key.exact)
        return None if hit is None else _revive(hit.response)

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Async :meth:`lookup` (never blocks the event loop on the embedder)."""
        key = self._key(prompt, llm_string)
        if key is None:
            return None
        hit = await self.cache.aget(key.question, scope=key.scope, exact=key.exact)
        return None if hit is None else _revive(hit.response)

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Store the model's generations, unless they must not be cached."""
        write = self._write(prompt, llm_string, return_val)
        if write is not None:
            self.cache.set(*write[0], **write[1])

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Async :meth:`update`."""
        write = self._write(prompt, llm_string, return_val)
        if write is not None:
            await self.cache.aset(*write[0], **write[1])

    def clear(self, **kwargs: Any) -> None:
        """Drop every entry; ``clear(scope="tenant-a")`` drops only that user scope's."""
        if "scope" in kwargs:
            self.invalidate(kwargs["scope"])
        else:
            self.cache.clear()

    async def aclear(self, **kwargs: Any) -> None:
        """Async :meth:`clear` (the store's async calls: never blocks the event loop)."""
        if "scope" in kwargs:
            await self.ainvalidate(kwargs["scope"])
        else:
            await self.cache.aclear()

    # ------------------------------------------------------------------- extras
    def invalidate(self, scope: str | None = None) -> int:
        """Drop every entry written under user scope ``scope`` (all models, system prompts
        and tools; ``None``: the active ``cache_scope`` or the default scope); returns how
        many. The same as ``SemanticCache.invalidate(scope)``: a scope holds every exact
        part written under it."""
        return self.cache.invalidate(scope)

    async def ainvalidate(self, scope: str | None = None) -> int:
        """Async :meth:`invalidate`."""
        return await self.cache.ainvalidate(scope)

    # ---------------------------------------------------------------- internals
    def _key(self, prompt: str, llm_string: str) -> ScopedKey | None:
        temperature = temperature_of(llm_string)
        if (
            self.max_temperature is not None
            and temperature is not None
            and temperature > self.max_temperature
        ):
            return None
        parts = split_prompt(prompt, llm_string)
        if not parts.question.strip():
            return None
        user_scope = resolve_user_scope(self.scope, key=self.scope_metadata_key)
        if fails_closed(self.cache, user_scope):
            return None
        question, exact = self._question(parts.question, parts.context_digest)
        return scoped_key(question, user_scope, exact, self.index_version)

    def _question(self, message: str, exact: str) -> tuple[str, str]:
        """The question to compare by meaning and the exact-match digest (see the module
        docs): a message with no findable question is matched exactly only."""
        found = find_question(message)
        if found.rule == "plain":
            return found.question, exact
        if found.rule == "exact" and not self._warned_exact:
            self._warned_exact = True
            logger.warning(
                "semantic LLM cache: a prompt message holds more than a question and has no "
                "'Question:' line, so it is matched exactly only (never by meaning over its "
                "context); to cache a RAG chain by its question, wrap the chain with "
                "langchain_rag_optimize.with_semantic_cache"
            )
        return found.question, digest(exact, found.rule, found.rest)

    def _write(
        self, prompt: str, llm_string: str, return_val: Sequence[Generation]
    ) -> tuple[tuple[str, dict[str, Any]], dict[str, Any]] | None:
        """The arguments of the ``cache.set``/``cache.aset`` call storing ``return_val``
        (positional, keyword), or ``None`` when nothing is to be stored."""
        key = self._key(prompt, llm_string)
        stored = None if key is None else self._stored(return_val)
        if key is None or stored is None:
            return None
        options = {
            "scope": key.scope,
            "exact": key.exact,
            "metadata": self._metadata(),
            "ttl_seconds": self.ttl_seconds,
        }
        return (key.question, stored), options

    def _stored(self, return_val: Sequence[Generation]) -> dict[str, Any] | None:
        if not return_val:
            return None
        if not self.cache_tool_calls and any(_has_tool_calls(g) for g in return_val):
            return None
        try:
            # "text" is what judges (shadow mode, error-budget probes) compare.
            return {"text": return_val[0].text, "generations": encode_generations(return_val)}
        except NotCacheable as exc:
            logger.debug("semantic LLM cache: answer not cached: %s", exc)
            return None

    def _metadata(self) -> dict[str, Any]:
        if self.index_version is None:
            return {}
        return {"index_version": self.index_version}


def _has_tool_calls(generation: Generation) -> bool:
    if not isinstance(generation, ChatGeneration):
        return False
    message = generation.message
    extra = message.additional_kwargs
    return bool(
        getattr(message, "tool_calls", None)
        or getattr(message, "invalid_tool_calls", None)
        or extra.get("tool_calls")
        or extra.get("function_call")
    )


def _revive(response: Any) -> list[Generation] | None:
    """Generations from a stored response; a malformed entry is a miss, not an error."""
    try:
        stored = response.get("generations") if isinstance(response, dict) else None
        return decode_generations(stored)
    except (ValueError, TypeError, KeyError) as exc:
        logger.warning("semantic LLM cache: ignoring a malformed entry: %s", exc)
        return None
