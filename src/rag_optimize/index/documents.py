"""The documents an index holds: ids, texts and metadata, and the hit type searches return.

Both indexes keep their documents the same way, so a hit from either one carries the text
and metadata the caller needs without a second lookup. The store is append-only (indexes are
rebuilt rather than edited) and is saved as JSON lines, never pickled.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from rag_optimize.errors import InvalidInputError

DOCUMENTS_FILE = "documents.jsonl"


class Hit(NamedTuple):
    """One search result: document id, score (higher is better), text and metadata.

    ``payload`` carries an original framework object (a LangChain ``Document``, a LlamaIndex
    node) when a retrieval branch wraps a framework retriever; indexes leave it ``None``.
    """

    id: str
    score: float
    text: str
    metadata: Mapping[str, Any]
    payload: Any = None


def check_k(k: int) -> int:
    """Return ``k`` if it is a positive int, else raise :class:`InvalidInputError`."""
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    return k


def check_texts(texts: Sequence[str]) -> list[str]:
    """``texts`` as a list, refusing a lone string (a common slip that would add characters)."""
    if isinstance(texts, str):
        raise InvalidInputError("texts must be a sequence of strings, not one string")
    return list(texts)


def read_meta(directory: Path, filename: str, kind: str, version: int) -> dict[str, Any]:
    """The JSON settings file of a saved index, checked for presence and format version."""
    path = directory / filename
    if not path.exists():
        raise InvalidInputError(f"{directory} holds no {kind} ({filename} missing)")
    meta: dict[str, Any] = json.loads(path.read_text())
    if meta.get("format") != version:
        raise InvalidInputError(f"unsupported {kind} format {meta.get('format')!r}")
    return meta


class DocumentStore:
    """Append-only list of (id, text, metadata) with O(1) lookup by id."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.texts: list[str] = []
        self.metadatas: list[dict[str, Any]] = []
        self._positions: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._positions

    def position(self, doc_id: str) -> int:
        """Row number of ``doc_id`` (raises ``KeyError`` naming the id if unknown)."""
        try:
            return self._positions[doc_id]
        except KeyError:
            raise KeyError(f"unknown document id {doc_id!r}") from None

    def hit(self, position: int, score: float) -> Hit:
        """The :class:`Hit` for row ``position`` with ``score``."""
        return Hit(self.ids[position], float(score), self.texts[position], self.metadatas[position])

    def extend(
        self,
        count: int,
        ids: Sequence[str] | None,
        texts: Sequence[str] | None,
        metadatas: Sequence[Mapping[str, Any] | None] | None,
    ) -> list[str]:
        """Append ``count`` documents after checking every argument; return their ids.

        Missing ids become ``"0", "1", ...`` continuing the current count; missing texts become
        empty strings. Nothing is appended if any check fails.
        """
        start = len(self.ids)
        new_ids = [str(start + i) for i in range(count)] if ids is None else [str(i) for i in ids]
        new_texts = [""] * count if texts is None else list(texts)
        new_meta = (
            [dict(m or {}) for m in metadatas]
            if metadatas is not None
            else [{} for _ in range(count)]
        )
        for name, seq in (("ids", new_ids), ("texts", new_texts), ("metadatas", new_meta)):
            if len(seq) != count:
                raise InvalidInputError(f"got {count} documents but {len(seq)} {name}")
        for text in new_texts:
            if not isinstance(text, str):
                raise InvalidInputError(f"document texts must be str, got {type(text).__name__}")
        seen = set(self._positions)
        for doc_id in new_ids:
            if doc_id in seen:
                raise InvalidInputError(f"duplicate document id {doc_id!r}")
            seen.add(doc_id)
        for offset, doc_id in enumerate(new_ids):
            self._positions[doc_id] = start + offset
        self.ids.extend(new_ids)
        self.texts.extend(new_texts)
        self.metadatas.extend(new_meta)
        return new_ids

    def __iter__(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        return iter(zip(self.ids, self.texts, self.metadatas, strict=True))

    def save(self, directory: Path) -> None:
        """Write the documents as JSON lines (metadata must be JSON-serialisable)."""
        with open(directory / DOCUMENTS_FILE, "w", encoding="utf-8") as fh:
            for doc_id, text, meta in self:
                fh.write(json.dumps({"id": doc_id, "text": text, "metadata": meta}) + "\n")

    @classmethod
    def load(cls, directory: Path) -> DocumentStore:
        """Read documents written by :meth:`save`."""
        store = cls()
        ids: list[str] = []
        texts: list[str] = []
        metas: list[dict[str, Any]] = []
        with open(directory / DOCUMENTS_FILE, encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                ids.append(row["id"])
                texts.append(row["text"])
                metas.append(row["metadata"])
        store.extend(len(ids), ids, texts, metas)
        return store
