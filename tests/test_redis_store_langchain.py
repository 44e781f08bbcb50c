"""The LangChain adapter works unchanged over RedisStore: two apps share answers."""

from __future__ import annotations

from langchain_core.language_models.fake_chat_models import FakeListChatModel

from langchain_rag_optimize import SemanticLLMCache
from rag_optimize import HashingEmbedder, RedisStore, SemanticCache
from tests.redis_server import RedisServer, namespace, redis_server, wait_until  # noqa: F401


def test_two_langchain_apps_share_one_redis_cache(
    redis_server: RedisServer, namespace: str  # noqa: F811
) -> None:
    with RedisStore(redis_server.url, namespace) as a, RedisStore(redis_server.url, namespace) as b:
        model_a = FakeListChatModel(
            responses=["Refunds within 30 days.", "Second answer."],
            cache=SemanticLLMCache(SemanticCache(HashingEmbedder(dim=64), 0.8, store=a)),
        )
        cache_b = SemanticCache(HashingEmbedder(dim=64), 0.8, store=b)
        # the same model and parameters (they are part of the key) in another app
        model_b = FakeListChatModel(
            responses=["Refunds within 30 days.", "Second answer."],
            cache=SemanticLLMCache(cache_b),
        )
        assert model_a.invoke("What is your refund policy?").content == "Refunds within 30 days."
        assert model_a.i == 1  # a real model call advances the fake's position
        assert wait_until(lambda: b.status()["mirror_entries"] == 1, 2.0)
        answer = model_b.invoke("what is your refund policy")
        assert answer.content == "Refunds within 30 days."
        assert cache_b.stats.hits == 1 and model_b.i == 0  # served by the cache, not the model
