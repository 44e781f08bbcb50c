"""Semantic cache quality: hit rate and false-hit rate of fixed, calibrated and learned thresholds.

Run: .venv/bin/python benchmarks/cache_quality.py [--seeds 3] [--backend auto]

Model: the packaged all-MiniLM-L6-v2 (``LocalEmbedder``). Every text is embedded once up
front; the caches then run on those vectors (a lookup table stands in for the model), so
every configuration sees exactly the same vectors. Definitions: *hit rate* = hits / lookups;
*false-hit rate* = wrong hits / hits (the fraction of served answers that are wrong, which is
what ``max_error_rate`` bounds).

1. MRPC (``mrpc/train.tsv``, 3,674 labelled news-sentence pairs). Shuffled and split in two
   halves: *calibration/warm-up* and *held-out*. Each pair is one lookup: ``text1`` is stored
   (its own scope), ``text2`` is looked up; a hit on a label-0 pair is a false hit.
   Calibrated threshold = ``calibrate_threshold`` on the first half at target precision 0.98
   (and 0.95, 0.90 for reference), measured on the held-out half. Error budget = a
   ``SemanticCache(max_error_rate=0.02)`` run over the first half with feedback on every hit
   and probes on every miss (the pair's label is the truth), then frozen and run on the
   held-out half.

2. A question stream built from the 873 WikiQA questions (``wikiqa/queries.jsonl``). Each
   question gets rule-made variants:

   * paraphrases (same answer): a synonym swap from a small table (movie->film, die->pass
     away, ...), a conversational prefix ("can you tell me ...", "i would like to know ..."),
     and a keyword form with stopwords dropped;
   * near-misses (a different answer): a number changed (1 -> 2), the wh-word changed
     (how -> why, who -> where, when -> where, ...; "how old" -> "how tall", "how many" ->
     "how often", ...), an opposite swapped in (first -> last,
     largest -> smallest, husband -> wife, ...), or the topic word (the longest content word)
     replaced by the topic word of another question.

   Rules that do not apply to a question produce nothing; results equal (after
   normalisation) to an existing query are dropped. Each base question is asked at a random
   time and its variants at random later times; the stream is cut in half: warm-up, then
   held-out. The right answer of a lookup is the id of its base question (paraphrases) or its
   own id (near-misses and bases). Two mixes: "hard" keeps every near-miss a rule makes
   (about a third of the variants), "typical" keeps each with probability 0.2 (about one
   lookup in ten is a near-miss). Every cache stores the right answer on a miss (as an app
   stores the model's answer) in both halves. Error budget: feedback on every warm-up hit
   and a probe on every warm-up miss (exact-match judge on answer ids, i.e. correct labels),
   frozen on the held-out half. "hit feedback only" is the same without probes (learning
   only from served answers, so it can only raise thresholds); "confidence 0.5" the same
   with a coin-flip certificate (35 error-free outcomes certify 2%); "keeps learning" does
   not freeze. Repeated for ``--seeds`` streams.

Every fixed threshold and the error budget run twice: with the cache's default verifier
(the :class:`DecisionPipeline` of ``SemanticCache(LocalEmbedder())``: rule signals and token
alignment on the packaged model's word vectors) and with ``verifier=None`` ("similarity
only"). ``default`` is the cache as constructed by default (the pipeline's candidate
threshold); ``fixed+MismatchVerifier (rules only)`` is the old default verifier at 0.9, kept
for comparison and labelled so. Also reported: the best fixed
threshold chosen with hindsight on the held-out half (0.75 to 0.99 in steps of 0.01, with and
without the verifier; no real deployment can pick it), the uncertified per-stream
calibration (the calibrated threshold on the warm-up lookups' nearest-neighbour outcomes),
and the evidence the warm-up outcomes give (``evidence`` / ``evidence_verified``).

Writes benchmarks/results/cache_quality.json and cache_quality_curve.png (MRPC
precision/recall curve of the calibration half).
"""

from __future__ import annotations

import os

# One BLAS thread: the cache's lookups are single matrix-vector products, and on a shared
# 2-core machine a multi-threaded BLAS spinning on busy cores made each one 10x slower.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from rag_optimize import SemanticCache  # noqa: E402
from rag_optimize.cache.decision.calibration import (  # noqa: E402
    calibrate_similarities,
    verified_similarities,
)
from rag_optimize.cache.decision.error_budget import binomial_upper_bound  # noqa: E402
from rag_optimize.cache.decision.judges import ExactMatchJudge  # noqa: E402
from rag_optimize.cache.decision.pipeline import DecisionPipeline  # noqa: E402
from rag_optimize.cache.decision.verifiers import MismatchVerifier, Verifier  # noqa: E402
from rag_optimize.cache.keys import normalise_query  # noqa: E402
from rag_optimize.cache.semantic import _candidate_threshold  # noqa: E402
from rag_optimize.embedding.local import LocalEmbedder, TokenVectors  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("RAG_OPTIMIZE_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results"
FIXED = [0.80, 0.85, 0.90, 0.95]
BUDGET = 0.02
EVIDENCE_THRESHOLDS = [0.90, 0.95, 0.97, 0.98, 0.99]
VERIFIER: Verifier = MismatchVerifier()  # main() sets the default pipeline
MISMATCH = MismatchVerifier()  # rules only (numbers, negation, question word): the old default

STOP = set(
    "a an the of to in on at for and or is are was were be been do does did i my me you your "
    "it its this that can could with by from as about there".split()
)
WH = {"who": "where", "when": "where", "where": "when", "why": "how", "how": "why"}
AUX = set("is are was were did does do can could will would should has have had".split())
QUESTION_WORDS = {"what", "which", "who", "when", "where", "why", "how"}
SYNONYMS = {
    "movie": "film", "movies": "films", "film": "movie", "die": "pass away", "died": "passed away",
    "big": "large", "large": "big", "start": "begin", "started": "began", "begin": "start",
    "made": "created", "invented": "created", "located": "situated", "country": "nation",
    "buy": "purchase", "kids": "children", "children": "kids", "job": "occupation",
    "famous": "well known", "use": "utilize", "used": "utilized", "show": "programme",
    "song": "track", "money": "cash", "car": "automobile", "cost": "price", "worth": "valued at",
    "build": "construct", "built": "constructed", "live": "reside", "lives": "resides",
    "happened": "occurred", "happen": "occur", "number": "count", "people": "persons",
    "type": "kind", "types": "kinds", "author": "writer", "wrote": "authored",
    "definition": "meaning", "mean": "signify", "means": "signifies", "called": "named",
}
OPPOSITES = {
    "first": "last", "last": "first", "largest": "smallest", "biggest": "smallest",
    "smallest": "largest", "highest": "lowest", "lowest": "highest", "most": "least",
    "least": "most", "before": "after", "after": "before", "north": "south", "south": "north",
    "east": "west", "west": "east", "start": "end", "end": "start", "won": "lost", "win": "lose",
    "male": "female", "female": "male", "men": "women", "women": "men", "old": "new",
    "new": "old", "long": "short", "top": "bottom", "black": "white", "white": "black",
    "positive": "negative", "negative": "positive", "increase": "decrease",
    "husband": "wife", "wife": "husband", "father": "mother", "mother": "father",
    "son": "daughter", "daughter": "son", "king": "queen", "queen": "king", "born": "buried",
    "minimum": "maximum", "maximum": "minimum", "inside": "outside", "summer": "winter",
}
HOW_ADJ = {"much": "often", "many": "often", "old": "tall", "long": "far", "far": "long",
           "big": "old", "deep": "wide", "tall": "old", "large": "old", "often": "long",
           "fast": "far"}
PREFIXES = ["can you tell me ", "i would like to know ", "please explain ", "do you know "]
NUMBER = re.compile(r"\b\d+\b")


class TableEmbedder:
    """Returns precomputed vectors: every cache sees exactly the model's vectors."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table

    def embed_query(self, text: str) -> Any:
        return self.table[text]

    def embed_documents(self, texts: list[str]) -> Any:
        return [self.table[t] for t in texts]


def embed_all(
    texts: set[str], backend: str, saved: Path | None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Embed every text once; ``saved`` (an .npz outside the repo) keeps vectors for reruns."""

    table: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {"backend": backend}
    if saved is not None and saved.exists():
        data = np.load(saved, allow_pickle=False)
        if str(data["backend"]) == backend:
            matrix = data["matrix"]  # each data[...] access reads the file again
            table = {str(t): matrix[i] for i, t in enumerate(data["texts"])}
            info.update(backend=str(data["model_backend"]), reused=len(table))
    missing = sorted(texts - table.keys())
    if missing:
        started = time.perf_counter()
        model = LocalEmbedder(backend=backend)
        matrix = model.encode(missing)
        info.update(backend=model.backend, embedded=len(missing),
                    seconds=round(time.perf_counter() - started, 1))
        table.update({t: matrix[i] for i, t in enumerate(missing)})
        if saved is not None:
            ordered = sorted(table)
            np.savez(saved, texts=np.array(ordered), matrix=np.stack([table[t] for t in ordered]),
                     backend=backend, model_backend=model.backend)
    info["texts"] = len(texts)
    return table, info


class TableTokens:
    """A token source over precomputed word vectors (every text's from one batched pass)."""

    def __init__(self, table: dict[str, TokenVectors]) -> None:
        self.table = table

    def token_vectors(self, text: str) -> TokenVectors:
        return self.table[text]


def embed_with_words(texts: list[str], saved: Path | None) -> tuple[
    dict[str, np.ndarray], dict[str, TokenVectors]
]:
    """Sentence and word vectors of ``texts``; ``saved`` (an .npz outside the repo) keeps
    them between runs (word vectors as float16)."""
    table: dict[str, np.ndarray] = {}
    words: dict[str, TokenVectors] = {}
    if saved is not None and saved.exists():
        data = np.load(saved, allow_pickle=False)
        names, matrix = data["texts"], data["matrix"]
        counts, flat, word_rows = data["counts"], data["words"], data["word_matrix"]
        ends = np.cumsum(counts)
        for i, text in enumerate(names):
            start = int(ends[i] - counts[i])
            table[str(text)] = matrix[i]
            words[str(text)] = TokenVectors(
                tuple(str(w) for w in flat[start : ends[i]]),
                word_rows[start : ends[i]].astype(np.float32),
            )
    missing = [t for t in texts if t not in table]
    if missing:
        started = time.perf_counter()
        matrix, found = LocalEmbedder().encode_with_tokens(missing)
        print(f"embedded {len(missing)} texts in {time.perf_counter() - started:.1f}s")
        for i, text in enumerate(missing):
            table[text], words[text] = matrix[i], found[i]
        if saved is not None:
            names = sorted(table)
            np.savez(
                saved, texts=np.array(names), matrix=np.stack([table[t] for t in names]),
                counts=np.array([len(words[t].words) for t in names]),
                words=np.array([w for t in names for w in words[t].words]),
                word_matrix=np.concatenate([words[t].vectors for t in names]).astype(np.float16),
            )
    return table, words


# ------------------------------------------------------------------------------------ MRPC
def load_mrpc() -> list[tuple[str, str, int]]:
    with open(DATA / "mrpc" / "train.tsv", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(r["text1"], r["text2"], int(r["label"])) for r in reader]


def pair_rates(sims: np.ndarray, labels: np.ndarray, threshold: float | None) -> dict[str, Any]:
    if threshold is None:
        return {"threshold": None}
    hit = sims >= threshold
    hits, wrong = int(hit.sum()), int((hit & ~labels).sum())
    return {
        "threshold": round(float(threshold), 4),
        "hit_rate": hits / len(sims),
        "false_hit_rate": wrong / hits if hits else 0.0,
        "recall": int((hit & labels).sum()) / int(labels.sum()),
        "hits": hits,
        "wrong": wrong,
    }


def mrpc_budget(
    table: dict[str, np.ndarray], warm: list[tuple[str, str, int]],
    held: list[tuple[str, str, int]], start: float, verifier: Verifier | None,
) -> dict[str, Any]:
    """Error-budget cache over pairs: each pair in its own scope, feedback/probes in warm-up."""
    cache = SemanticCache(TableEmbedder(table), threshold=start, max_error_rate=BUDGET,
                          judge=ExactMatchJudge(), max_entries=None, verifier=verifier)
    for i, (a, b, label) in enumerate(warm):
        scope = f"w{i}"
        cache.set(a, f"answer {i}", scope=scope)
        hit = cache.get(b, scope=scope)
        if hit is not None:
            cache.feedback(hit, bool(label))
        else:
            cache.set(b, f"answer {i}" if label else f"other {i}", scope=scope)
    cache.learn_from_misses = False
    hits = wrong = positives = caught = 0
    for i, (a, b, label) in enumerate(held):
        scope = f"h{i}"
        cache.set(a, f"answer {i}", scope=scope)
        hit = cache.get(b, scope=scope)
        positives += label
        if hit is not None:
            hits += 1
            wrong += not label
            caught += label
    cert = cache.error_budget.certificate()  # type: ignore[union-attr]
    return {
        "learned_threshold": round(cert.threshold, 4), "certified": cert.certified,
        "outcomes": len(cache.error_budget or []), "hit_rate": hits / len(held),
        "false_hit_rate": wrong / hits if hits else 0.0, "recall": caught / positives,
        "hits": hits, "wrong": wrong,
    }


def run_mrpc(table: dict[str, np.ndarray], pairs: list[tuple[str, str, int]],
             seed: int) -> tuple[dict[str, Any], Any]:
    rng = random.Random(seed)
    pairs = pairs[:]
    rng.shuffle(pairs)
    half = len(pairs) // 2
    warm, held = pairs[:half], pairs[half:]

    def sims_labels(ps: list[tuple[str, str, int]]) -> tuple[np.ndarray, np.ndarray]:
        s = np.array([float(np.dot(table[a], table[b])) for a, b, _ in ps])
        return s, np.array([bool(y) for _, _, y in ps])

    ws, wl = sims_labels(warm)
    hs, hl = sims_labels(held)
    hs_verified = verified_similarities(hs, held, VERIFIER)
    calibrated = {}
    for target in (0.98, 0.95, 0.90):
        res = calibrate_similarities(ws, wl, target)
        calibrated[str(target)] = {
            "calibration_half": {"threshold": res.threshold, "precision": res.precision,
                                 "recall": res.recall, "hits": res.hits},
            "held_out": pair_rates(hs, hl, res.threshold),
        }
    verified = calibrate_similarities(verified_similarities(ws, warm, VERIFIER), wl, 0.98)
    calibrated["0.98 + verifier"] = {
        "calibration_half": {"threshold": verified.threshold, "precision": verified.precision,
                             "recall": verified.recall, "hits": verified.hits},
        "held_out": pair_rates(hs_verified, hl, verified.threshold),
    }
    main = calibrate_similarities(ws, wl, 0.98)
    start = main.threshold if main.threshold is not None else 0.95
    out = {
        "pairs": len(pairs), "calibration_pairs": len(warm), "held_out_pairs": len(held),
        "fixed": {str(t): pair_rates(hs, hl, t) for t in FIXED},
        "fixed_verified": {str(t): pair_rates(hs_verified, hl, t) for t in FIXED},
        "calibrated": calibrated,
        "error_budget": mrpc_budget(table, warm, held, start, VERIFIER),
        "error_budget_similarity_only": mrpc_budget(table, warm, held, start, None),
        "oracle_fixed": oracle(lambda t: pair_rates(hs, hl, t)),
        "oracle_fixed_verified": oracle(lambda t: pair_rates(hs_verified, hl, t)),
    }
    return out, main


def oracle(rates_at: Callable[[float], dict[str, Any]]) -> dict[str, Any]:
    """The best threshold on a 0.01 grid chosen with hindsight on the evaluated data."""
    best: dict[str, Any] = {"threshold": None, "hit_rate": 0.0, "false_hit_rate": None}
    for t in np.round(np.arange(0.75, 0.9901, 0.01), 2):
        r = rates_at(float(t))
        if r["hits"] and r["false_hit_rate"] <= BUDGET and r["hit_rate"] > best["hit_rate"]:
            best = r
    return best


# ---------------------------------------------------------------------------- the stream
def load_questions() -> list[str]:
    with open(DATA / "wikiqa" / "queries.jsonl", encoding="utf-8") as fh:
        return [" ".join(json.loads(line)["text"].split()) for line in fh if line.strip()]


def _swap(words: list[str], table: dict[str, str]) -> list[str] | None:
    for i, w in enumerate(words):
        if w.lower() in table:
            return words[:i] + table[w.lower()].split() + words[i + 1 :]
    return None


def paraphrases(q: str, rng: random.Random) -> list[str]:
    words = q.split()
    out = []
    swapped = _swap(words, SYNONYMS)
    if swapped:
        out.append(" ".join(swapped))
    core = q.rstrip(" ?")
    out.append(rng.choice(PREFIXES) + core[0].lower() + core[1:] + " ?")
    keywords = [w for w in core.split() if w.lower() not in STOP]
    if 2 <= len(keywords) < len(core.split()):
        out.append(" ".join(keywords))
    return out


def near_misses(q: str, topic_words: list[str], rng: random.Random) -> list[str]:
    words = q.split()
    out = []
    numbers = NUMBER.findall(q)
    if numbers:
        n = numbers[0]
        out.append(NUMBER.sub(str(int(n) + rng.choice([1, 2, 10])), q, count=1))
    for i, w in enumerate(words):
        if w.lower() in QUESTION_WORDS:
            nxt = words[i + 1].lower() if i + 1 < len(words) else ""
            if w.lower() == "how" and nxt in HOW_ADJ:  # how old -> how tall, not "why old"
                out.append(" ".join(words[: i + 1] + [HOW_ADJ[nxt]] + words[i + 2 :]))
            elif w.lower() in WH and nxt in AUX:  # "when did" -> "where did"
                out.append(" ".join(words[:i] + [WH[w.lower()]] + words[i + 1 :]))
            break  # only the first question word; "what X" has no safe swap
    opposite = _swap(words, OPPOSITES)
    if opposite:
        out.append(" ".join(opposite))
    content = [w for w in words
               if w.lower() not in STOP and w.lower() not in QUESTION_WORDS and w.isalpha()]
    if content:
        topic = max(content, key=len)
        other = rng.choice([t for t in topic_words if t.lower() != topic.lower()])
        out.append(" ".join(other if w == topic else w for w in words))
    return out


def build_stream(
    questions: list[str], seed: int, near_miss_keep: float = 1.0
) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """The ordered stream, the right answer of each query, and each query's kind.
    ``near_miss_keep``: the probability that each applicable near-miss is kept."""
    rng = random.Random(seed)
    topics = []
    for q in questions:
        content = [w for w in q.split() if w.lower() not in STOP
                   and w.lower() not in QUESTION_WORDS and w.isalpha()]
        if content:
            topics.append(max(content, key=len))
    answer: dict[str, str] = {}
    kind: dict[str, str] = {}
    seen: set[str] = set()
    timed: list[tuple[float, str]] = []

    def add(text: str, ans: str, what: str, t: float) -> None:
        key = normalise_query(text)
        if key in seen:
            return
        seen.add(key)
        answer[text], kind[text] = ans, what
        timed.append((t, text))

    for qi, q in enumerate(questions):
        add(q, f"q{qi}", "base", rng.uniform(0.0, 0.6))
    for qi, q in enumerate(questions):
        t0 = next(t for t, text in timed if text == q) if q in answer else None
        if t0 is None:
            continue
        for p in paraphrases(q, rng):
            add(p, f"q{qi}", "paraphrase", rng.uniform(t0, 1.0))
        for j, n in enumerate(near_misses(q, topics, rng)):
            if rng.random() < near_miss_keep:
                add(n, f"q{qi}-near{j}", "near_miss", rng.uniform(t0, 1.0))
    timed.sort()
    return [text for _, text in timed], answer, kind


def replay(cache: SemanticCache, queries: list[str], answer: dict[str, str], *,
           feedback: bool) -> dict[str, Any]:
    hits = wrong = 0
    for q in queries:
        hit = cache.get(q)
        if hit is None:
            cache.set(q, answer[q])
            continue
        ok = hit.response == answer[q]
        hits += 1
        wrong += not ok
        if feedback:
            cache.feedback(hit, ok)
    return {"lookups": len(queries), "hits": hits, "wrong": wrong,
            "hit_rate": hits / len(queries), "false_hit_rate": wrong / hits if hits else 0.0}


def nearest_outcomes(table: dict[str, np.ndarray], queries: list[str],
                     answer: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """(similarity of the nearest earlier query, whether its answer is right) per lookup."""
    sims, oks = [], []
    seen_vecs: list[np.ndarray] = []
    seen_ans: list[str] = []
    for q in queries:
        if seen_vecs:
            s = np.stack(seen_vecs) @ table[q]
            j = int(np.argmax(s))
            sims.append(float(s[j]))
            oks.append(seen_ans[j] == answer[q])
        seen_vecs.append(table[q])
        seen_ans.append(answer[q])
    return np.array(sims), np.array(oks)


def evidence(table: dict[str, np.ndarray], queries: list[str], answer: dict[str, str],
             half: int, verifier: Verifier | None = None) -> dict[str, Any]:
    """What the outcomes can support, independent of any cache implementation.

    ``warm_up``: per threshold, the nearest-neighbour outcomes of the warm-up lookups above it
    (what feedback + probes can label), their errors, and the one-sided Clopper-Pearson upper
    bound at 95% and at 50% confidence: a threshold is certifiable at 2% only if that bound is
    <= 2%. ``held_out_by_entry_evidence``: the held-out error rate above each threshold split
    by what the nearest entry had seen before (>= 1 correct and no wrong outcome, or none);
    per-entry learning (vCache-style) can only help if entries with good evidence are safer.
    With ``verifier``, the nearest earlier query is the most similar of the 4 nearest that the
    verifier lets through (as the cache's lookup does), and a lookup with none has no outcome.
    """
    vecs: list[np.ndarray] = []
    answers: list[str] = []
    seen: list[list[bool]] = []
    rows = []  # (held out, similarity, correct, entry had >=1 correct & 0 wrong, no evidence)
    for i, q in enumerate(queries):
        if vecs:
            sims = np.stack(vecs) @ table[q]
            top = np.argsort(-sims)[:4]
            passing = [int(k) for k in top if verifier is None or verifier(q, queries[k])]
            if passing:
                j = passing[0]
                ok = answers[j] == answer[q]
                rows.append((i >= half, float(sims[j]), ok, any(seen[j]) and all(seen[j]),
                             not seen[j]))
                seen[j].append(ok)
        vecs.append(table[q])
        answers.append(answer[q])
        seen.append([])
    r = np.array(rows, dtype=float)
    warm, held = r[r[:, 0] == 0], r[r[:, 0] == 1]
    out: dict[str, Any] = {"warm_up": {}, "held_out_by_entry_evidence": {}}
    for t in EVIDENCE_THRESHOLDS:
        above = warm[:, 1] >= t
        n, e = int(above.sum()), int((above & (warm[:, 2] == 0)).sum())
        out["warm_up"][str(t)] = {
            "outcomes": n, "wrong": e,
            "upper_bound_95": round(binomial_upper_bound(e, n, 0.05), 4),
            "upper_bound_50": round(binomial_upper_bound(e, n, 0.5), 4),
        }
        split = {}
        for name, col in (("entry_had_only_correct", 3), ("entry_had_no_outcome", 4)):
            sel = (held[:, 1] >= t) & (held[:, col] == 1)
            k, w = int(sel.sum()), int((sel & (held[:, 2] == 0)).sum())
            split[name] = {"lookups": k, "wrong": w, "error_rate": round(w / k, 4) if k else None}
        out["held_out_by_entry_evidence"][str(t)] = split
    return out


def run_stream(table: dict[str, np.ndarray], queries: list[str], answer: dict[str, str],
               start: float, mrpc_calibrated: float | None) -> dict[str, Any]:
    half = len(queries) // 2
    warm, held = queries[:half], queries[half:]
    emb = TableEmbedder(table)

    def fixed(t: float, verifier: Verifier | None = None) -> dict[str, Any]:
        cache = SemanticCache(emb, threshold=t, max_entries=None, verifier=verifier)
        replay(cache, warm, answer, feedback=False)
        return {"threshold": t, **replay(cache, held, answer, feedback=False)}

    out: dict[str, Any] = {"lookups_warm": len(warm), "lookups_held_out": len(held)}
    out["fixed"] = {str(t): fixed(t) for t in FIXED}
    out["fixed_verified"] = {str(t): fixed(t, VERIFIER) for t in FIXED}
    out["fixed_mismatch_verifier"] = {"0.9": fixed(0.9, MISMATCH)}
    out["default"] = fixed(_candidate_threshold(VERIFIER), VERIFIER)
    if mrpc_calibrated is not None:
        out["calibrated_mrpc"] = fixed(round(mrpc_calibrated, 4))
    ws, wo = nearest_outcomes(table, warm, answer)
    local = calibrate_similarities(ws, wo, 1 - BUDGET)
    out["calibrated_warmup"] = (
        fixed(round(local.threshold, 4)) if local.threshold is not None else {"threshold": None}
    )
    for name, probes, confidence, verifier in (
        ("error_budget", True, 0.95, VERIFIER),
        ("error_budget_similarity_only", True, 0.95, None),
        ("error_budget_hit_feedback_only", False, 0.95, VERIFIER),
        ("error_budget_confidence_0.5", True, 0.5, VERIFIER),
    ):
        cache = SemanticCache(emb, threshold=start, max_error_rate=BUDGET, max_entries=None,
                              judge=ExactMatchJudge(), learn_from_misses=probes,
                              confidence=confidence, verifier=verifier)
        warm_run = replay(cache, warm, answer, feedback=True)
        cache.learn_from_misses = False
        cert = cache.error_budget.certificate()  # type: ignore[union-attr]
        floors = sum(1 for e in cache.store.entries() if e.threshold is not None)  # type: ignore[attr-defined]
        out[name] = {
            "start_threshold": start, "learned_threshold": round(cert.threshold, 4),
            "certified": cert.certified, "outcomes": len(cache.error_budget or []),
            "entries_with_own_threshold": floors, "warm_up": warm_run,
            **replay(cache, held, answer, feedback=False),
        }
    cache = SemanticCache(emb, threshold=start, max_error_rate=BUDGET, max_entries=None,
                          judge=ExactMatchJudge(), verifier=VERIFIER)
    replay(cache, warm, answer, feedback=True)
    cert = cache.error_budget.certificate()  # type: ignore[union-attr]
    online = replay(cache, held, answer, feedback=True)  # keeps learning, as deployed
    end = cache.error_budget.certificate()  # type: ignore[union-attr]
    out["error_budget_online"] = {
        "start_threshold": start, "learned_threshold": round(end.threshold, 4),
        "certified_after_warm_up": cert.certified, "certified_at_end": end.certified,
        "outcomes": len(cache.error_budget or []), **online,
    }
    out["evidence"] = evidence(table, queries, answer, half)
    out["evidence_verified"] = evidence(table, queries, answer, half, VERIFIER)
    for key, verifier in (("oracle_fixed", None), ("oracle_fixed_verified", VERIFIER)):
        grid: dict[float, dict[str, Any]] = {}

        def at(t: float, v: Verifier | None = verifier,
               g: dict[float, dict[str, Any]] = grid) -> dict[str, Any]:
            if t not in g:
                g[t] = fixed(t, v)
            return g[t]

        out[key] = oracle(at)
    return out


def run_gptcache(python: str, table: dict[str, np.ndarray], queries: list[str],
                 answer: dict[str, str]) -> dict[str, Any]:
    """GPTCache's default similar-search config on the same stream, in its own venv."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stream.npz"
        np.savez(path, queries=np.array(queries), answers=np.array([answer[q] for q in queries]),
                 vectors=np.stack([table[q] for q in queries]), half=len(queries) // 2)
        script = ROOT / "benchmarks" / "cache_quality_gptcache.py"
        done = subprocess.run([python, str(script), str(path)], capture_output=True, text=True,
                              timeout=1800, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:] or ["failed"]}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean hit rate and false-hit rate per method over the seeds."""
    methods: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        for key, value in run.items():
            if key in ("fixed", "fixed_verified", "fixed_mismatch_verifier"):
                label = {"fixed": "fixed", "fixed_verified": "fixed+default pipeline",
                         "fixed_mismatch_verifier": "fixed+MismatchVerifier (rules only)"}[key]
                for t, r in value.items():
                    methods.setdefault(f"{label} {t}", []).append(r)
            elif isinstance(value, dict) and value.get("false_hit_rate") is not None:
                methods.setdefault(key, []).append(value)
    return {
        name: {
            "hit_rate": float(np.mean([r["hit_rate"] for r in rs])),
            "false_hit_rate": float(np.mean([r["false_hit_rate"] for r in rs])),
            "max_false_hit_rate": float(np.max([r["false_hit_rate"] for r in rs])),
            "thresholds": [r.get("learned_threshold", r.get("threshold")) for r in rs],
        }
        for name, rs in methods.items()
    }


MIXES = {"hard": 1.0, "typical": 0.2}
"""Near-miss share: every applicable near-miss kept ("hard", about a third of the variants),
or each kept with probability 0.2 ("typical", about one lookup in ten)."""


def run_mix(args: argparse.Namespace, table: dict[str, np.ndarray],
            streams: list[tuple[list[str], dict[str, str], dict[str, str]]],
            start: float, calibrated: float | None) -> dict[str, Any]:
    runs = []
    kinds: dict[str, int] = {}
    for seed, (queries, answer, kind) in enumerate(streams):
        for k in kind.values():
            kinds[k] = kinds.get(k, 0) + 1
        run = run_stream(table, queries, answer, start, calibrated)
        if args.gptcache_python:
            run["gptcache_default"] = run_gptcache(args.gptcache_python, table, queries, answer)
        run["seed"] = seed
        runs.append(run)
        print(f"  seed {seed}: " + json.dumps(
            {k: (v.get("hit_rate"), v.get("false_hit_rate"),
                 v.get("learned_threshold", v.get("threshold")))
             for k, v in run.items() if isinstance(v, dict) and "hit_rate" in v}))
    examples: dict[str, list[str]] = {}
    queries, _, kind = streams[0]
    for q in queries:
        if len(examples.setdefault(kind[q], [])) < 8:
            examples[kind[q]].append(q)
    summary = summarise(runs)
    print(json.dumps(summary, indent=1))
    return {"queries_by_kind_all_seeds": kinds, "examples": examples, "runs": runs,
            "mean_over_seeds": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--backend", default="auto", choices=["auto", "onnx", "torch"])
    parser.add_argument("--vectors", type=Path,
                        default=Path(tempfile.gettempdir()) / "rag_optimize_cache_quality.npz",
                        help="where to keep the embeddings between runs ('' to disable)")
    parser.add_argument("--gptcache-python", help="python of a venv with gptcache + faiss-cpu")
    args = parser.parse_args()
    mrpc = load_mrpc()
    questions = load_questions()
    streams = {
        mix: [build_stream(questions, seed, keep) for seed in range(args.seeds)]
        for mix, keep in MIXES.items()
    }
    texts = {t for a, b, _ in mrpc for t in (a, b)}
    for runs in streams.values():
        for queries, _, _ in runs:
            texts.update(queries)
    saved = None if str(args.vectors) in ("", ".") else args.vectors
    table, model_info = embed_all(texts, args.backend, saved)
    print(f"model: {model_info}")
    # the word vectors the default pipeline's token alignment reads (packaged ONNX model)
    # (kept in the file cache_decision.py uses: same layout, so the two share the vectors)
    words_file = None if saved is None else saved.with_name("rag_optimize_cache_decision.npz")
    _, words = embed_with_words(sorted(texts), words_file)
    global VERIFIER
    VERIFIER = DecisionPipeline(token_source=TableTokens(words))

    mrpc_result, curve = run_mrpc(table, mrpc, seed=0)
    curve.plot(RESULTS / "cache_quality_curve.png",
               title="MRPC calibration half: precision/recall vs threshold (all-MiniLM-L6-v2)")
    calibrated = curve.threshold
    start = calibrated if calibrated is not None else 0.95
    print(json.dumps({k: mrpc_result[k] for k in ("fixed", "calibrated", "error_budget",
                                                  "oracle_fixed")}, indent=1))
    stream_results = {}
    for mix in MIXES:
        print(f"stream, {mix} mix:")
        stream_results[mix] = run_mix(args, table, streams[mix], start, calibrated)
    result = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "note": "shared 2-core machine"},
        "model": model_info,
        "max_error_rate": BUDGET,
        "mrpc": mrpc_result,
        "stream": {"questions": len(questions), "seeds": args.seeds,
                   "near_miss_keep": MIXES, **stream_results},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cache_quality.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {RESULTS / 'cache_quality.json'}")


if __name__ == "__main__":
    main()
