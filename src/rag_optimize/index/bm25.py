"""BM25 keyword index on ``bm25s`` (scores precomputed into a sparse matrix at build time).

Why bm25s: it stores every document's BM25 weight per token in a CSC matrix, so a query is a
handful of column sums instead of a pass over every document, and its index files can be
memory-mapped. The tokenizer here is our own small one (lowercase, word characters, English
stopwords, optional PyStemmer stemming) so indexing and querying always tokenize alike.

``bm25s`` builds an index in one go; :meth:`BM25Index.add` therefore marks the index stale
and the next search rebuilds it (about a second per 100k short documents on a quiet machine,
20 s at load ~6). A delete does not: the deleted rows are left out of every search until a
quarter of the rows are deleted (see :meth:`BM25Index.delete`).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from rag_optimize.errors import ConfigurationError, InvalidInputError
from rag_optimize.index.documents import (
    DocumentStore,
    Hit,
    check_k,
    check_mask,
    check_rows,
    check_texts,
    loading,
    read_meta,
)

_WORD = re.compile(r"\w+", re.UNICODE)
#: Deleted documents' matrix rows are dropped by a rebuild once they are this fraction of
#: the matrix's rows (and at least :data:`COMPACT_MIN`), as in the dense index.
COMPACT_FRACTION = 0.25
COMPACT_MIN = 1_024
_META_FILE = "bm25.json"
_FORMAT = 1


def _import_bm25s() -> Any:
    try:
        import bm25s
        import bm25s.stopwords
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "BM25 keyword search (BM25Index, HybridRetriever) needs bm25s: "
            "pip install 'rag-optimize[retrieval]'"
        ) from exc
    return bm25s


class _SavedScores:
    """A saved bm25s score matrix, searched without importing bm25s.

    Importing bm25s imports scipy.sparse: measured 0.55 of the 0.63 s of a fresh process's
    ``HybridRetriever.load`` of 100k documents (load ~10). A search only needs the matrix's
    CSC arrays and the vocabulary, so a loaded index reads bm25s's saved files itself and
    scores a query as bm25s does (per query token, add that token's column of precomputed
    weights to its documents; float32, in the same order, so the scores are the same). The
    BM25 variants with a non-occurrence term (``bm25l``, ``bm25+``) are loaded by bm25s.
    bm25s is imported only when the index has to be built again (an add, a compaction).
    """

    FILES = ("data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy")

    def __init__(self, directory: Path, mmap: bool) -> None:
        params = json.loads((directory / "params.index.json").read_text())
        if not isinstance(params, dict):
            raise ValueError("params.index.json is not a JSON object")
        self.params = params
        mode: Literal["r"] | None = "r" if mmap else None
        data, indices, indptr = (
            np.load(directory / name, mmap_mode=mode, allow_pickle=False) for name in self.FILES
        )
        vocab = json.loads((directory / "vocab.index.json").read_text(encoding="utf-8"))
        num_docs = int(params["num_docs"])
        if (
            data.ndim != 1
            or data.shape != indices.shape
            or indptr.ndim != 1
            or not 1 <= indptr.shape[0] <= len(vocab) + 1  # bm25s's "" token has no column
            or int(indptr[-1]) != data.shape[0]
            or not isinstance(vocab, dict)
        ):
            raise ValueError("the BM25 score matrix files do not fit together")
        self.scores = {"data": data, "indices": indices, "indptr": indptr, "num_docs": num_docs}
        self.vocab_dict: dict[str, int] = vocab
        self.dtype = np.dtype(params.get("dtype", "float32"))

    @classmethod
    def readable(cls, directory: Path, params: Mapping[str, Any]) -> bool:
        """Whether this reader gives bm25s's scores for the index saved in ``directory``."""
        return params.get("method") in ("lucene", "robertson", "atire") and all(
            (directory / name).exists()
            for name in (*cls.FILES, "vocab.index.json", "params.index.json")
        )

    def get_tokens_ids(self, tokens: list[str]) -> list[int]:
        vocab, columns = self.vocab_dict, self.scores["indptr"].shape[0] - 1
        return [i for i in (vocab[t] for t in tokens if t in vocab) if i < columns]

    def get_scores_from_ids(self, token_ids: list[int]) -> npt.NDArray[np.float32]:
        data, indices, indptr = self.scores["data"], self.scores["indices"], self.scores["indptr"]
        scores = np.zeros(self.scores["num_docs"], dtype=self.dtype)
        for token in token_ids:
            start, end = int(indptr[token]), int(indptr[token + 1])
            scores[indices[start:end]] += data[start:end]  # a document once per column
        return scores

    def save(self, directory: str, show_progress: bool = False) -> None:
        """Write the same files back (a loaded, unchanged index saved again)."""
        target = Path(directory)
        for name, key in zip(self.FILES, ("data", "indices", "indptr"), strict=True):
            np.save(target / name, np.asarray(self.scores[key]), allow_pickle=False)
        (target / "vocab.index.json").write_text(json.dumps(self.vocab_dict), encoding="utf-8")
        (target / "params.index.json").write_text(json.dumps(self.params))


class Tokenizer:
    """Lowercase word tokens, minus stopwords, optionally stemmed.

    ``stopwords``: ``"en"`` (bm25s's English list), ``None`` (keep all) or your own words.
    ``stemmer``: a PyStemmer language such as ``"english"``, or ``None``.
    """

    def __init__(self, stopwords: str | Iterable[str] | None = "en", stemmer: str | None = None):
        if stopwords == "en":
            stopwords_en = _import_bm25s().stopwords.STOPWORDS_EN
            self.stopwords: frozenset[str] = frozenset(stopwords_en)
            self._stopwords_spec: str | list[str] | None = "en"
        elif stopwords is None:
            self.stopwords = frozenset()
            self._stopwords_spec = None
        elif isinstance(stopwords, str):
            raise ConfigurationError(
                f"unknown stopwords {stopwords!r}: use 'en', None, or a list of words"
            )
        else:
            words = sorted({w.lower() for w in stopwords})
            self.stopwords = frozenset(words)
            self._stopwords_spec = words
        self.stemmer_language = stemmer
        self._stem: Callable[[list[str]], list[str]] | None = None
        if stemmer is not None:
            try:
                import Stemmer
            except ImportError as exc:  # pragma: no cover - depends on the environment
                raise ImportError(
                    "stemming needs PyStemmer: pip install 'rag-optimize[retrieval]'"
                ) from exc
            try:
                self._stem = Stemmer.Stemmer(stemmer).stemWords
            except KeyError as exc:
                raise ConfigurationError(
                    f"unknown stemmer language {stemmer!r}; "
                    f"choose one of {', '.join(Stemmer.algorithms())}"
                ) from exc

    def __call__(self, text: str) -> list[str]:
        words = [w for w in _WORD.findall(text.lower()) if w not in self.stopwords]
        return self._stem(words) if self._stem is not None and words else words

    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings, enough to rebuild an identical tokenizer."""
        return {"stopwords": self._stopwords_spec, "stemmer": self.stemmer_language}


class BM25Index:
    """Keyword search with BM25 over an in-memory corpus.

    >>> index = BM25Index()
    >>> index.add(["the cat sat", "dogs bark loudly"], ids=["a", "b"])
    ['a', 'b']
    >>> index.search("cat", k=1)[0].id
    'a'
    """

    def __init__(
        self,
        *,
        stopwords: str | Iterable[str] | None = "en",
        stemmer: str | None = "english",
        k1: float = 1.5,
        b: float = 0.75,
        method: str = "lucene",
    ) -> None:
        if method not in ("lucene", "robertson", "atire", "bm25l", "bm25+"):
            raise ConfigurationError(
                f"unknown BM25 method {method!r}: use lucene, robertson, atire, bm25l or bm25+"
            )
        if k1 < 0 or not 0 <= b <= 1:
            raise ConfigurationError(f"need k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.tokenizer = Tokenizer(stopwords=stopwords, stemmer=stemmer)
        self.params = {"k1": float(k1), "b": float(b), "method": method}
        self.documents = DocumentStore()
        self._tokens: list[list[str]] | None = []  # None: not kept (loaded index)
        self._bm25: Any = None
        # The built matrix's row of each document row, ascending; None while they are the
        # same. A delete drops the document's entry (its matrix row is then never read)
        # instead of rebuilding; see :meth:`delete`.
        self._slots: npt.NDArray[np.intp] | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.documents)

    def add(
        self,
        texts: Sequence[str],
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[str]:
        """Add documents; return their ids. The next search rebuilds the BM25 matrix."""
        texts = check_texts(texts)
        new_ids = self.documents.extend(len(texts), ids, texts, metadatas)
        with self._lock:
            if self._tokens is None:  # loaded from disk: re-tokenize the stored texts once
                old = self.documents.texts[: len(self.documents) - len(texts)]
                self._tokens = [self.tokenizer(t) for t in old]
            self._tokens.extend(self.tokenizer(t) for t in texts)
            self._bm25 = None
        return new_ids

    def _model(self) -> Any:
        """The built bm25s model, rebuilding it if documents were added since."""
        with self._lock:
            if self._bm25 is None:
                bm25s = _import_bm25s()
                model = bm25s.BM25(**self.params)
                model.index(self._tokens or [], show_progress=False)
                self._bm25, self._slots = model, None
            return self._bm25

    def delete(self, ids: Sequence[str]) -> int:
        """Remove documents by id (all must exist); returns how many were removed.

        A deleted document is never returned from then on: its row of the built matrix is
        no longer read. The matrix is not rebuilt for it (at 100k documents a rebuild takes
        seconds) until deleted rows pass :data:`COMPACT_FRACTION` of the matrix (then the
        next search rebuilds), or at :meth:`save`. Until then BM25's corpus statistics
        (document frequencies, average length) still count the deleted documents, as
        Lucene's do until segments merge: scores may differ slightly from a fresh index.
        """
        with self._lock:
            rows = self.documents.delete(ids)
            if not rows.size:
                return 0
            if self._tokens is not None:
                for row in rows[::-1].tolist():
                    del self._tokens[row]
            if self._bm25 is None:
                return int(rows.size)
            built = int(self._bm25.scores["num_docs"])
            slots = np.arange(built, dtype=np.intp) if self._slots is None else self._slots
            self._slots = np.delete(slots, rows)
            dead = built - self._slots.shape[0]
            if dead >= COMPACT_MIN and dead >= COMPACT_FRACTION * built:
                if self._tokens is None:  # loaded from disk: tokenize the remaining texts
                    self._tokens = [self.tokenizer(t) for t in self.documents.texts]
                self._bm25 = None
        return int(rows.size)

    def search(
        self, query: str, k: int = 10, *, allowed: npt.NDArray[np.bool_] | None = None
    ) -> list[Hit]:
        """The ``k`` best documents for ``query``, best first (only documents scoring > 0).

        ``allowed`` (a boolean row mask, e.g. from a metadata filter) limits the search to
        those rows before the top-k, so no filtered-out document comes back, not even with
        score 0.
        """
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError("query must be a non-empty string")
        check_k(k)
        if not len(self.documents):
            raise InvalidInputError("BM25 index is empty: add documents before searching")
        rows = None
        if allowed is not None:
            rows = np.flatnonzero(check_mask(allowed, len(self.documents)))
            if not rows.size:
                return []
        model = self._model()
        token_ids = model.get_tokens_ids(self.tokenizer(query))
        if not token_ids:
            return []
        scores = np.asarray(model.get_scores_from_ids(token_ids))
        slots = self._slots
        if rows is not None:  # the allowed rows' scores only: the top k is taken among them
            scores = scores[rows if slots is None else slots[rows]]
        elif slots is not None:  # deleted documents' rows are left out
            scores = scores[slots]
        k = min(k, scores.shape[0])
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        at = top if rows is None else rows[top]
        return [
            self.documents.hit(int(r), float(scores[i]))
            for r, i in zip(at, top, strict=True)
            if scores[i] > 0
        ]

    def score(self, query: str, ids: Sequence[str]) -> npt.NDArray[np.float32]:
        """The BM25 scores of the documents ``ids`` for ``query``, in that order.

        What :meth:`search` would give each of them (up to float rounding; 0 where no query
        term occurs), whether or not it is in the top-k: score fusion over two branches'
        candidates uses it to give a document the other branch found its real keyword score
        instead of a floor.
        An unknown id raises :class:`InvalidInputError`; ``query`` may be any text (the
        words of a few documents, say).
        """
        if not isinstance(query, str):
            raise InvalidInputError("query must be a string")
        rows = np.asarray([self.documents.position(str(i)) for i in ids], dtype=np.intp)
        model = self._model()
        token_ids = model.get_tokens_ids(self.tokenizer(query))
        if not rows.size or not token_ids:
            return np.zeros(rows.size, dtype=np.float32)
        # One pass over the postings of the distinct terms, each weighted by how often the
        # query repeats it (what bm25s computes term by term: a long query, such as five
        # documents' words, costs one vectorised sum instead of a loop over its words).
        terms, counts = np.unique(np.asarray(token_ids, dtype=np.int64), return_counts=True)
        matrix = model.scores
        indptr = np.asarray(matrix["indptr"])
        starts = indptr[terms]
        lengths = indptr[terms + 1] - starts
        total = int(lengths.sum())
        if not total:
            return np.zeros(rows.size, dtype=np.float32)
        ends = np.cumsum(lengths)
        where = np.repeat(starts - (ends - lengths), lengths) + np.arange(total)
        full = np.bincount(
            np.asarray(matrix["indices"])[where],
            weights=np.asarray(matrix["data"])[where] * np.repeat(counts, lengths),
            minlength=int(matrix["num_docs"]),
        )
        if self._slots is not None:  # deleted documents' rows are left out
            full = full[self._slots]
        return np.asarray(full[rows], dtype=np.float32)

    def save(self, path: str | Path) -> str:
        """Write the index to directory ``path`` (numpy arrays + JSON, no pickle).

        Returns the sha1 of the saved documents (checked again by :meth:`load`).
        """
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if self._slots is not None:  # deleted rows are not saved: rebuild without them
                if self._tokens is None:
                    self._tokens = [self.tokenizer(t) for t in self.documents.texts]
                self._bm25 = None
        model = self._model()
        model.save(str(directory), show_progress=False)
        documents_sha1 = self.documents.save(directory)
        meta = {
            "format": _FORMAT,
            "tokenizer": self.tokenizer.config(),
            # The stopwords themselves: a load rebuilds the tokenizer without importing
            # bm25s for its list (and keeps this list if a later bm25s changes its own).
            "stopword_list": sorted(self.tokenizer.stopwords),
            "params": self.params,
            "documents_sha1": documents_sha1,
        }
        (directory / _META_FILE).write_text(json.dumps(meta))
        return documents_sha1

    @classmethod
    def load(
        cls, path: str | Path, *, mmap: bool = False, documents: DocumentStore | None = None
    ) -> BM25Index:
        """Read an index written by :meth:`save`.

        ``mmap=True`` maps the score matrix from disk instead of reading it, so a large index
        opens instantly and its pages are shared between processes. An index loaded this way
        can still take :meth:`add` (it rebuilds in memory from the stored texts).
        ``documents``: an already loaded copy of the same documents (a hybrid index shares
        one between its two indexes). A damaged save raises :class:`InvalidInputError`.
        """
        directory = Path(path)
        meta = read_meta(directory, _META_FILE, "BM25Index", _FORMAT)
        with loading("BM25Index", directory):
            tokenizer = dict(meta["tokenizer"])
            words = meta.get("stopword_list")
            if isinstance(words, list) and tokenizer.get("stopwords") == "en":
                tokenizer["stopwords"] = words
            index = cls(**tokenizer, **meta["params"])
            index.tokenizer._stopwords_spec = meta["tokenizer"]["stopwords"]
            index.documents = (
                documents.copy()
                if documents is not None
                else DocumentStore.load(directory, meta.get("documents_sha1"))
            )
            index._tokens = None
            if _SavedScores.readable(directory, meta["params"]):
                index._bm25 = _SavedScores(directory, mmap)
            else:
                bm25s = _import_bm25s()
                index._bm25 = bm25s.BM25.load(str(directory), mmap=mmap, show_progress=False)
            rows = int(index._bm25.scores["num_docs"])
            check_rows("BM25Index", "the bm25s score matrix", rows, len(index.documents))
        return index
