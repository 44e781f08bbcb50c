"""The demo's generation stage: any LangChain chat model, or a local extractive stand-in.

With ``RAG_OPTIMIZE_OPENAI_BASE_URL`` and ``RAG_OPTIMIZE_MODEL`` set (and ``langchain-openai``
installed) the demo calls that OpenAI-compatible endpoint (``RAG_OPTIMIZE_OPENAI_API_KEY``
for the key). Otherwise it uses :class:`ExtractiveChatModel`: a real ``BaseChatModel`` that
answers with the sentences of the retrieved context that best match the question, streamed
word by word with a simulated model delay (a prefill delay before the first token and a
per-token delay), so latency has the shape of a hosted model. It is labelled as such in the
demo output: the absolute generation times are simulated, the retrieval, embedding and cache
times are measured.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_TOKEN = re.compile(r"\S+\s*")
_STOP = frozenset(
    "a an the of to in on for and or is are was be do does did i my me you your it this that "
    "can could how what when with should we our which about explain mean means best way use "
    "using common mistakes watch out wrong go pitfalls".split()
)
NOT_FOUND = "I could not find that in the documents."


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


def extract_answer(prompt: str, max_sentences: int = 2) -> str:
    """The context sentences that share most words with the question, in context order.

    ``prompt`` holds ``Context:`` ... ``Question:`` ... (the demo's prompt); without those
    markers the whole text is both context and question.
    """
    context, _, question = prompt.rpartition("Question:")
    if not context:
        context = question
    context = context.split("Context:", 1)[-1]
    wanted = _words(question)
    sentences = [s.strip() for line in context.splitlines() for s in _SENTENCE.split(line)]
    scored = [(len(wanted & _words(s)), i, s) for i, s in enumerate(sentences) if s]
    best = sorted((x for x in scored if x[0] > 0), key=lambda x: (-x[0], x[1]))[:max_sentences]
    if not best:
        return NOT_FOUND
    return " ".join(s for _, _, s in sorted(best, key=lambda x: x[1]))


class ExtractiveChatModel(BaseChatModel):
    """A local chat model that streams the best-matching sentences of the context.

    ``first_token_delay_s`` simulates prefill (the wait before the first token),
    ``token_delay_s`` the time per further token. Deterministic; no network.
    """

    first_token_delay_s: float = 0.15
    token_delay_s: float = 0.015
    max_sentences: int = 2

    @property
    def _llm_type(self) -> str:
        return "rag-optimize-extractive"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": "extractive", "max_sentences": self.max_sentences}

    def _tokens(self, messages: list[BaseMessage]) -> list[str]:
        prompt = str(messages[-1].content) if messages else ""
        return _TOKEN.findall(extract_answer(prompt, self.max_sentences))

    def _delays(self, n: int) -> Iterator[float]:
        for i in range(n):
            yield self.first_token_delay_s if i == 0 else self.token_delay_s

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        tokens = self._tokens(messages)
        time.sleep(sum(self._delays(len(tokens))))
        return ChatResult(generations=[ChatGeneration(message=AIMessage("".join(tokens)))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        tokens = self._tokens(messages)
        await asyncio.sleep(sum(self._delays(len(tokens))))
        return ChatResult(generations=[ChatGeneration(message=AIMessage("".join(tokens)))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        tokens = self._tokens(messages)
        for token, delay in zip(tokens, self._delays(len(tokens)), strict=True):
            time.sleep(delay)
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=token))
            if run_manager is not None:
                run_manager.on_llm_new_token(token, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        tokens = self._tokens(messages)
        for token, delay in zip(tokens, self._delays(len(tokens)), strict=True):
            await asyncio.sleep(delay)
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=token))
            if run_manager is not None:
                await run_manager.on_llm_new_token(token, chunk=chunk)
            yield chunk


def make_chat_model(
    first_token_delay_s: float = 0.15, token_delay_s: float = 0.015
) -> tuple[BaseChatModel, str]:
    """The configured OpenAI-compatible model, else the extractive model; with its label."""
    base_url = os.environ.get("RAG_OPTIMIZE_OPENAI_BASE_URL")
    model = os.environ.get("RAG_OPTIMIZE_MODEL")
    if base_url and model:
        try:
            from langchain_openai import ChatOpenAI
        except ImportError:
            pass
        else:
            key = os.environ.get("RAG_OPTIMIZE_OPENAI_API_KEY", "not-needed")
            chat = ChatOpenAI(
                base_url=base_url, model=model, api_key=key, temperature=0, streaming=True
            )
            return chat, f"{model} at {base_url} (OpenAI-compatible endpoint)"
        label_note = " (RAG_OPTIMIZE_OPENAI_BASE_URL is set but langchain-openai is not installed)"
    else:
        label_note = ""
    chat = ExtractiveChatModel(first_token_delay_s=first_token_delay_s, token_delay_s=token_delay_s)
    label = (
        "local extractive model (streams the best-matching sentences of the retrieved "
        f"context; simulated {first_token_delay_s * 1000:.0f} ms to first token, "
        f"{token_delay_s * 1000:.0f} ms per token){label_note}"
    )
    return chat, label
