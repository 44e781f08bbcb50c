"""The stored query's word vectors travel with its cache entry (in process and in Redis, on the
mirror and the server path), so a cold candidate's token alignment runs no forward pass;
entries without them, or with a damaged record, fall back to computing them.

Real parts: the packaged MiniLM (``LocalEmbedder``, ONNX) and real Redis 7 / 8.2 servers. A
fresh process is simulated by giving the module a fresh word LRU (the cache's lookup then
knows only what the entry carries); forward passes are counted on the real model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from rag_optimize import LocalEmbedder, RedisStore, SemanticCache
from rag_optimize.cache.decision.alignment import alignment_score
from rag_optimize.cache.decision.lexicon import default_lexicon
from rag_optimize.cache.decision.verifiers import MismatchVerifier
from rag_optimize.cache.decision.words import (
    MAX_WORDS,
    QueryWords,
    WordsCorrupt,
    stored_words,
    uses_word_vectors,
)
from rag_optimize.cache.redis.codec import decode_entry, encode_entry
from rag_optimize.embedding import local
from tests.redis_server import any_server, namespace  # noqa: F401

pytest.importorskip("onnxruntime")

STORED = "What time does the store open?"
PARAPHRASE = "When does the store open?"


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    return LocalEmbedder(backend="onnx")


class ForwardCounter:
    """Counts the real model's forward passes, in every LocalEmbedder of the process (the
    alignment signal's own source is the shared default embedder); the model still runs."""

    def __init__(self) -> None:
        self.calls = 0
        self._forward = local._OnnxBackend.forward

    def wrapper(self) -> Any:
        counter = self

        def forward(backend: Any, *args: Any, **kwargs: Any) -> Any:
            counter.calls += 1
            return counter._forward(backend, *args, **kwargs)

        return forward


@pytest.fixture
def forwards(monkeypatch: pytest.MonkeyPatch) -> Iterator[ForwardCounter]:
    counter = ForwardCounter()
    monkeypatch.setattr(local._OnnxBackend, "forward", counter.wrapper())
    yield counter


def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget every word vector this process holds, as a new replica would."""
    monkeypatch.setattr(local, "_TOKENS", local._TokenCache(2048))


def test_pack_keeps_alignment_scores(embedder: LocalEmbedder) -> None:
    words = default_lexicon().function_words
    pairs = [
        ("Does the premium plan increase the storage limit?",
         "Does the premium plan decrease the storage limit?"),
        ("What are the opening hours on Sunday?", "What are the opening hours on Saturday?"),
        ("How do I reset my password?", "What is the way to change my password?"),
    ]
    for a, b in pairs:
        ta, tb = embedder.token_vectors(a), embedder.token_vectors(b)
        packed = QueryWords.pack("m", tb.words, tb.vectors)
        assert packed is not None
        assert packed.codes.dtype == np.int8
        assert packed.nbytes == len(tb.words) * (local.DIMENSION + 4)
        exact = alignment_score(ta, tb, words)
        quantised = alignment_score(ta, local.TokenVectors(packed.words, packed.vectors()), words)
        assert (quantised.word, quantised.match) == (exact.word, exact.match)
        assert abs(quantised.score - exact.score) < 5e-3


def test_fields_round_trip_and_reject_damage(embedder: LocalEmbedder) -> None:
    tokens = embedder.token_vectors(STORED)
    packed = QueryWords.pack("mini", tokens.words, tokens.vectors)
    assert packed is not None
    header, blob = packed.to_fields()
    back = QueryWords.from_fields(header, blob)
    assert back.model == "mini" and back.words == tokens.words
    assert np.array_equal(back.codes, packed.codes) and np.array_equal(back.scales, packed.scales)
    n = len(tokens.words)
    damaged = [
        (b"not json", blob),
        (b"[1, 2]", blob),
        (b'{"m": "", "w": ["a"], "d": 384}', blob),
        (b'{"m": "mini", "w": [], "d": 384}', blob),
        (b'{"m": "mini", "w": [3], "d": 384}', blob),
        (b'{"m": "mini", "w": ["a"], "d": true}', blob),
        (header, blob[:-1]),
        (header, b"\x00" * len(blob)),  # scales of zero
        (header, np.full(n, np.nan, "<f4").tobytes() + blob[4 * n:]),
        (header, blob[: 4 * n] + b"\x00" * (len(blob) - 4 * n)),  # zero vectors
    ]
    for h, b in damaged:
        with pytest.raises(WordsCorrupt):
            QueryWords.from_fields(h, b)


def test_long_queries_and_rule_verifiers_store_no_words(embedder: LocalEmbedder) -> None:
    long_text = " ".join(f"word{i}" for i in range(MAX_WORDS + 1))
    embedder.embed_query(long_text)
    assert stored_words(long_text) is None
    assert stored_words("a text this process never embedded 123") is None
    cache = SemanticCache(embedder, verifier=MismatchVerifier())
    assert not uses_word_vectors(cache.verifier)
    cache.set(STORED, "9am")
    assert cache.store.entries()[0].words is None  # type: ignore[attr-defined]


def test_in_process_entry_carries_words_and_a_cold_lookup_runs_one_forward_pass(
    embedder: LocalEmbedder, forwards: ForwardCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = SemanticCache(embedder)
    assert uses_word_vectors(cache.verifier)
    cache.set(STORED, "9am")
    entry = cache.store.entries()[0]  # type: ignore[attr-defined]
    assert entry.words is not None and entry.words.words == embedder.token_vectors(STORED).words
    assert entry.words.model == embedder.token_model
    fresh_process(monkeypatch)
    before = forwards.calls
    hit = cache.get(PARAPHRASE)
    assert hit is not None and hit.response == "9am"
    assert forwards.calls - before == 1  # the new question only
    votes = {v["signal"]: v["vote"] for v in hit.metadata["cache_decision"]["verifier_detail"]
             ["signals"]}
    assert votes["alignment"] == "pass"


def _redis_cache(server: Any, ns: str, embedder: LocalEmbedder) -> SemanticCache:
    return SemanticCache(embedder, store=RedisStore(server.url, ns, timeout_ms=2000))


def test_redis_entry_carries_words_to_a_new_replica(
    any_server: Any,  # noqa: F811
    namespace: str,  # noqa: F811
    embedder: LocalEmbedder,
    forwards: ForwardCounter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writer = _redis_cache(any_server, namespace, embedder)
    reader = _redis_cache(any_server, namespace, embedder)
    try:
        assert writer.set(STORED, "9am")
        assert writer.set("Does the premium plan increase the storage limit?", "yes")
        fresh_process(monkeypatch)
        before = forwards.calls
        hit = reader.get(PARAPHRASE)
        assert hit is not None and hit.response == "9am"
        assert forwards.calls - before == 1
        # a near miss is still vetoed by alignment from the stored words
        before = forwards.calls
        assert reader.get("Does the basic plan increase the storage limit?") is None
        assert forwards.calls - before == 1
    finally:
        writer.store.close()  # type: ignore[attr-defined]
        reader.store.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("damage", ["absent", "corrupt"])
def test_old_or_damaged_words_fall_back_to_a_forward_pass(
    any_server: Any,  # noqa: F811
    namespace: str,  # noqa: F811
    embedder: LocalEmbedder,
    forwards: ForwardCounter,
    monkeypatch: pytest.MonkeyPatch,
    damage: str,
) -> None:
    import redis

    writer = _redis_cache(any_server, namespace, embedder)
    reader = _redis_cache(any_server, namespace, embedder)
    client = redis.Redis.from_url(any_server.url)
    try:
        assert writer.set(STORED, "9am")
        keys = [  # the entry's hash, on either path's key layout
            k for k in client.scan_iter(match="*" + namespace + "*")
            if client.type(k) == b"hash" and client.hexists(k, "wm")
        ]
        assert len(keys) == 1
        if damage == "absent":  # an entry written before word vectors were stored
            client.hdel(keys[0], "wm", "wv")
        else:
            client.hset(keys[0], "wv", b"\x01\x02\x03")
        fresh_process(monkeypatch)
        before = forwards.calls
        hit = reader.get(PARAPHRASE)
        assert hit is not None and hit.response == "9am"
        assert forwards.calls - before == 2  # the new question and the stored one
        assert reader.stats.corrupt_entries == 0
    finally:
        client.close()
        writer.store.close()  # type: ignore[attr-defined]
        reader.store.close()  # type: ignore[attr-defined]


def test_codec_round_trips_words(embedder: LocalEmbedder) -> None:
    cache = SemanticCache(embedder)
    cache.set(STORED, "9am")
    entry = cache.store.entries()[0]  # type: ignore[attr-defined]
    fields = encode_entry(entry, "ns")
    back = decode_entry(fields, "ns", local.DIMENSION)
    assert back.words is not None and back.words == entry.words
    assert back.words.words == entry.words.words
    del fields[b"wv"]
    assert decode_entry(fields, "ns", local.DIMENSION).words is None


def test_words_under_a_foreign_model_name_are_ignored(embedder: LocalEmbedder) -> None:
    tokens = embedder.token_vectors(STORED)
    text = "a question written by a replica running another model"
    for name in ("other-model", local.token_model_name(256) + "0", "x:onnx-int8:256"):
        local.remember_token_vectors(name, text, tokens)
        assert local.known_token_vectors(text) is None
    local.remember_token_vectors(local.token_model_name(256), text, tokens)
    assert local.known_token_vectors(text) == (local.token_model_name(256), tokens)
