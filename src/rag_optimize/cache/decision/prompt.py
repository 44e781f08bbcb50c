"""Which part of a rendered prompt is the user's question: what an LLM-level cache compares.

An LLM-level cache (LangChain's ``set_llm_cache``) sees the rendered prompt, not the app's
input. When that prompt is one message holding instructions, retrieved context and the
question (LangChain's hub prompt ``rlm/rag-prompt``: "You are an assistant for
question-answering tasks. ... Question: {question} Context: {context} Answer:"), the context
dominates the embedding: two different questions with overlapping context look alike, and a
cache that compares the whole message serves one's answer for the other.

:func:`find_question` splits such a message by this rule:

1. **Labelled question.** The last line that starts with a question label (``Question:``,
   ``Query:``, ``User question:``, ``User query:``, ``Q:``; any case) starts the question; it
   runs up to the next line that starts with a section label (``Context:``, ``Answer:``,
   ``Helpful answer:``, ``Documents:``, ``Sources:``, ``Passages:``, ``Chat history:``,
   ``History:``) or to the end. The question is compared by meaning; *everything else* (the
   instructions and the retrieved context) must match exactly. So a hit needs the same
   template and the same retrieved context: an answer is never reused over another context,
   and extracting the wrong span can only cost hits, never serve a wrong answer.
2. **Plain question.** A message with no label, on one line and at most
   :data:`PLAIN_MAX_CHARS` characters, is the question itself (compared by meaning).
3. **Anything else** (several lines, or long, and no label) is matched exactly only:
   ``rule == "exact"``. The caller should say so once and point to a chain-level cache
   (``with_semantic_cache``), which sees the app's input before the prompt is rendered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from rag_optimize.errors import InvalidTypeError

__all__ = ["PLAIN_MAX_CHARS", "PromptQuestion", "find_question"]

PLAIN_MAX_CHARS = 500
"""The longest message with no label that is taken as a plain question."""

_QUESTION_LABEL = re.compile(
    r"^[ \t]*(?:user[ \t]+question|user[ \t]+query|question|query|q)[ \t]*:[ \t]*",
    re.IGNORECASE | re.MULTILINE,
)
_SECTION_LABEL = re.compile(
    r"^[ \t]*(?:context|answer|helpful[ \t]+answer|documents?|sources?|passages?|"
    r"chat[ \t]+history|history)[ \t]*:",
    re.IGNORECASE | re.MULTILINE,
)

Rule = Literal["label", "plain", "exact"]


@dataclass(frozen=True)
class PromptQuestion:
    """A message split into the question (compared by meaning) and the rest (matched
    exactly). ``rule`` says which case of :func:`find_question` applied."""

    question: str
    rest: str
    rule: Rule


def find_question(message: str) -> PromptQuestion:
    """Split a rendered prompt message by the rule in this module's docs."""
    if not isinstance(message, str):
        raise InvalidTypeError(f"message must be str, got {type(message).__name__}")
    labels = list(_QUESTION_LABEL.finditer(message))
    if labels:
        label = labels[-1]
        start = label.end()
        section = _SECTION_LABEL.search(message, start)
        end = section.start() if section is not None else len(message)
        question = message[start:end].strip()
        if question:
            rest = message[: label.start()] + "\x00" + message[end:]
            return PromptQuestion(question, rest, "label")
    stripped = message.strip()
    if "\n" not in stripped and len(stripped) <= PLAIN_MAX_CHARS:
        return PromptQuestion(stripped, "", "plain")
    return PromptQuestion(stripped, message, "exact")
