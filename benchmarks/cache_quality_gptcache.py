"""GPTCache's default semantic configuration on the cache_quality question stream.

Run by benchmarks/cache_quality.py (``--gptcache-python /tmp/gptvenv/bin/python``) in a
separate virtualenv that has ``gptcache`` and ``faiss-cpu``; not a dependency of
rag-optimize. Input: an .npz with the stream (``queries``, ``answers``, ``vectors``, ``half``).

Configuration: GPTCache's documented similar-search setup (sqlite cache store, faiss vector
store, ``SearchDistanceEvaluation`` and the default ``similarity_threshold=0.8``) and its
``get``/``put`` API, with one change: the embedding function returns our all-MiniLM-L6-v2
vectors, because its default ONNX model would have to be downloaded from the Hugging Face hub
(not possible here). With unit vectors and faiss L2 distances, the default threshold means
a hit when ``4 - ||a - b||^2 >= 3.2``, i.e. cosine >= 0.6.

Prints one JSON object: hit rate and false-hit rate on the held-out half (after the same
warm-up half, storing the right answer on every miss).
"""

from __future__ import annotations

import json
import sys
import tempfile

import numpy as np
from gptcache import Cache
from gptcache.adapter.api import get, put
from gptcache.manager import CacheBase, VectorBase, get_data_manager
from gptcache.processor.pre import get_prompt
from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation


def main(path: str) -> None:
    data = np.load(path, allow_pickle=False)
    queries = [str(q) for q in data["queries"]]
    answers = [str(a) for a in data["answers"]]
    vectors = data["vectors"].astype(np.float32)
    half = int(data["half"])
    index = {q: i for i, q in enumerate(queries)}

    def embed(text: str, **_: object) -> np.ndarray:
        return vectors[index[text]]

    tmp = tempfile.mkdtemp(prefix="gptcache-bench-")  # GPTCache writes its index at exit
    cache = Cache()
    manager = get_data_manager(
        CacheBase("sqlite", sql_url=f"sqlite:///{tmp}/cache.db"),
        VectorBase("faiss", dimension=vectors.shape[1], index_path=f"{tmp}/faiss.index"),
    )
    cache.init(
        pre_embedding_func=get_prompt,
        embedding_func=embed,
        data_manager=manager,
        similarity_evaluation=SearchDistanceEvaluation(),
    )
    hits = wrong = 0
    for i, (query, answer) in enumerate(zip(queries, answers, strict=True)):
        found = get(query, cache_obj=cache)
        if found is None:
            put(query, answer, cache_obj=cache)
        elif i >= half:
            hits += 1
            wrong += found != answer
    held = len(queries) - half
    print(json.dumps({
        "threshold_setting": cache.config.similarity_threshold,
        "lookups": held, "hits": hits, "wrong": wrong,
        "hit_rate": hits / held, "false_hit_rate": wrong / hits if hits else 0.0,
    }))


if __name__ == "__main__":
    main(sys.argv[1])
