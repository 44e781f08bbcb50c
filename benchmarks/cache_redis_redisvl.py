"""The RedisVL side of benchmarks/cache_redis.py: runs in RedisVL's own venv, never imports
rag_optimize. Commands on stdin (JSON lines), one reply line each:
``["fill", texts]`` -> seconds; ``["check", kind, i]`` -> [ns, found]; ``["quit"]``.

Run by cache_redis.py as: PYTHON cache_redis_redisvl.py URL NAME DATA.npz DISTANCE_THRESHOLD
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from redisvl.extensions.cache.llm import SemanticCache
from redisvl.utils.vectorize import CustomTextVectorizer


def main() -> None:
    url, name, data_path, distance = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    data = np.load(data_path)
    stored, near, fresh = data["stored"], data["near"], data["fresh"]
    dim = stored.shape[1]

    def zeros(_text: str) -> list[float]:  # only probed for the dimension: calls pass vectors
        return [0.0] * dim

    vectorizer = CustomTextVectorizer(embed=zeros, dtype="float32")
    cache = SemanticCache(name=name, redis_url=url, distance_threshold=distance,
                          vectorizer=vectorizer, overwrite=True)
    queries = {"semantic_hit": near, "miss": fresh,
               "exact_hit": stored[data["near_of"]]}
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd[0] == "quit":
            print("null", flush=True)
            break
        if cmd[0] == "fill":
            t0 = time.perf_counter()
            for i, text in enumerate(cmd[1]):
                cache.store(text, "answer to " + text, vector=stored[i].tolist())
            print(json.dumps(round(time.perf_counter() - t0, 1)), flush=True)
        elif cmd[0] == "check":
            vec = queries[cmd[1]][cmd[2]].tolist()
            t = time.perf_counter_ns()
            found = cache.check(vector=vec, num_results=1)
            print(json.dumps([time.perf_counter_ns() - t, bool(found)]), flush=True)
    cache.delete()


if __name__ == "__main__":
    main()
