"""Fit retrieved context into a token budget, dropping near-duplicates, keeping order.

A smaller prompt is a faster (and cheaper) LLM call. :class:`ContextBudget` walks the results
in their ranked order and keeps each one that is not a near-duplicate of one already kept
(cosine similarity of their embeddings at or above ``duplicate_threshold``) and still fits in
the remaining token budget; an item too long for what is left is skipped and shorter ones
after it may still fit.

Tokens are counted with tiktoken when it is installed and its encoding can be loaded (it is
fetched once from the network and cached), else estimated from words and punctuation (about
1.3 tokens per English word, the usual BPE ratio). Pass ``token_counter`` to count with the
tokenizer of your own LLM.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from rag_optimize.embedding.protocol import Embedder, check_embedder
from rag_optimize.embedding.vectors import unit_matrix
from rag_optimize.errors import ConfigurationError, InvalidTypeError

T = TypeVar("T")
TokenCounter = Callable[[str], int]
_log = logging.getLogger(__name__)
_PIECES = re.compile(r"\w+|[^\w\s]")


def estimate_tokens(text: str) -> int:
    """Rough BPE token count: words count 1.3, punctuation marks 1 (no tokenizer needed)."""
    words = punct = 0
    for piece in _PIECES.findall(text):
        if piece[0].isalnum() or piece[0] == "_":
            words += 1
        else:
            punct += 1
    return math.ceil(words * 1.3) + punct


def tiktoken_counter(encoding: str = "cl100k_base") -> TokenCounter | None:
    """A tiktoken counter for ``encoding``, or ``None`` if tiktoken or the encoding is missing."""
    try:
        import tiktoken

        enc = tiktoken.get_encoding(encoding)
    except Exception as exc:  # not installed, or offline without a cached encoding
        _log.info("tiktoken unavailable (%s); estimating tokens from words", exc)
        return None
    return lambda text: len(enc.encode(text, disallowed_special=()))


def _default_text(item: Any) -> str:
    if isinstance(item, str):
        return item
    text = getattr(item, "text", None)
    if isinstance(text, str):
        return text
    raise InvalidTypeError(f"cannot read text from {type(item).__name__}; pass text=... to pack()")


@dataclass(frozen=True)
class PackedContext(Generic[T]):
    """The kept items (in input order) and what was dropped."""

    items: list[T]
    tokens: int
    duplicates: int
    over_budget: int


class ContextBudget:
    """Pack ranked items into ``max_tokens``, dropping near-duplicates.

    ``embedder`` enables duplicate detection (without it only the budget applies);
    ``duplicate_threshold`` is the cosine similarity at or above which an item counts as a
    duplicate of an earlier kept one. ``token_counter``: ``"auto"`` (tiktoken if it loads,
    else the word estimate), ``"words"`` (always the estimate), or a function ``str -> int``.
    """

    def __init__(
        self,
        max_tokens: int,
        *,
        embedder: Embedder | None = None,
        duplicate_threshold: float = 0.95,
        token_counter: str | TokenCounter = "auto",
        encoding: str = "cl100k_base",
    ) -> None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0:
            raise ConfigurationError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        if not 0.0 < duplicate_threshold <= 1.0:
            raise ConfigurationError(
                f"duplicate_threshold must be in (0, 1], got {duplicate_threshold}"
            )
        self.max_tokens = max_tokens
        self.embedder = check_embedder(embedder) if embedder is not None else None
        self.duplicate_threshold = float(duplicate_threshold)
        if callable(token_counter):
            self.count_tokens: TokenCounter = token_counter
        elif token_counter == "words":
            self.count_tokens = estimate_tokens
        elif token_counter == "auto":
            self.count_tokens = tiktoken_counter(encoding) or estimate_tokens
        else:
            raise ConfigurationError(
                f"unknown token_counter {token_counter!r}: use 'auto', 'words' or a function"
            )

    def pack(
        self,
        items: Sequence[T],
        *,
        text: Callable[[T], str] = _default_text,
        vectors: Sequence[Sequence[float]] | None = None,
    ) -> PackedContext[T]:
        """Keep items in order while they fit and are not near-duplicates of kept ones.

        ``text`` reads an item's text (default: the item itself if it is a string, else its
        ``.text``). ``vectors`` are the items' embeddings if you already have them; otherwise
        the embedder (if any) embeds the texts in one call.
        """
        texts = [text(item) for item in items]
        matrix = self._vectors(texts, vectors)
        kept: list[T] = []
        kept_rows: list[int] = []
        used = duplicates = over = 0
        for row, (item, body) in enumerate(zip(items, texts, strict=True)):
            if matrix is not None and kept_rows:
                similarity = matrix[kept_rows] @ matrix[row]
                if float(similarity.max()) >= self.duplicate_threshold:
                    duplicates += 1
                    continue
            cost = self.count_tokens(body)
            if used + cost > self.max_tokens:
                over += 1
                continue
            used += cost
            kept.append(item)
            kept_rows.append(row)
        return PackedContext(kept, used, duplicates, over)

    def _vectors(
        self, texts: list[str], vectors: Sequence[Sequence[float]] | None
    ) -> np.ndarray[Any, np.dtype[np.float32]] | None:
        if vectors is not None:
            if len(vectors) != len(texts):
                raise ConfigurationError(f"got {len(texts)} items but {len(vectors)} vectors")
            return unit_matrix(vectors) if texts else None
        if self.embedder is None or len(texts) < 2:
            return None
        return unit_matrix(self.embedder.embed_documents(texts))
