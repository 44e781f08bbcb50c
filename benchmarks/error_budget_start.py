"""Where the error budget's fixed-sequence test starts: three start rules on the same outcomes.

Run: .venv/bin/python benchmarks/error_budget_start.py [--seeds 6 --first-seed 6]

The certificate (``rag_optimize.cache.decision.error_budget.certify``) tests thresholds from high to
low and stops at the first failure, so where it starts decides a lot. Compared here:

* ``none_wrong``: the highest threshold with 149 outcomes above (2% at 95% with none wrong);
* ``one_wrong`` (the package's rule, ``start_outcomes``): with 236 outcomes above (enough to
  pass with one wrong);
* ``third``: with max(236, a third of all outcomes) above.

Data: the ``cache_quality`` question stream, typical mix (see ``benchmarks/cache_quality.py``),
default seeds 6-11 so that the streams differ from the ones ``cache_quality`` reports. One
cache with the default verifier and an error budget runs over each whole stream with
feedback and probes, which labels the nearest allowed entry of nearly every lookup; its
outcomes, in arrival order, are then replayed for each rule:

* *frozen*: the certificate from the first half's outcomes, applied to the second half;
* *learning*: the second half cut in 10 segments, each served at the certificate of all the
  outcomes before it (as a cache that keeps learning would).

Hits are second-half outcomes at or above the certified threshold (lookups whose nearest
allowed entry is that similar); an uncertified segment serves nothing in this replay.

Two traffic shapes: ``as_is`` (the stream, where nearly every lookup has a close neighbour),
and ``diverse``: the same plus three times as many outcomes of lookups whose nearest entry is
an unrelated question (cosine uniform in 0.5-0.85, a wrong answer), interleaved at random, as
probes produce in an app whose users ask many different things. Writes
benchmarks/results/error_budget_start.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cache_quality import (  # noqa: E402
    BUDGET,
    MIXES,
    RESULTS,
    TableEmbedder,
    build_stream,
    embed_all,
    load_questions,
    replay,
)

from rag_optimize import SemanticCache  # noqa: E402
from rag_optimize.cache.decision.error_budget import certify, outcomes_needed, start_outcomes  # noqa: E402
from rag_optimize.cache.decision.judges import ExactMatchJudge  # noqa: E402

CONFIDENCE = 0.95
START = 0.976  # the MRPC-calibrated starting threshold cache_quality uses
RULES = {
    "none_wrong": lambda total: outcomes_needed(BUDGET, CONFIDENCE, 0),
    "one_wrong": lambda total: start_outcomes(BUDGET, CONFIDENCE),
    "third": lambda total: max(start_outcomes(BUDGET, CONFIDENCE), -(-total // 3)),
}
UNRELATED = 3
"""``diverse``: unrelated-neighbour outcomes added per outcome of the stream."""


def outcomes_of(queries: list[str], answer: dict[str, str], table: dict[str, np.ndarray]
                ) -> tuple[np.ndarray, np.ndarray, int]:
    """(similarities, correct) of every outcome in arrival order, and how many came from the
    first half of the stream."""
    cache = SemanticCache(TableEmbedder(table), threshold=START, max_error_rate=BUDGET,
                          max_entries=None, judge=ExactMatchJudge())
    budget = cache.error_budget
    assert budget is not None
    half = len(queries) // 2
    replay(cache, queries[:half], answer, feedback=True)
    first = len(budget)
    replay(cache, queries[half:], answer, feedback=True)
    pairs = budget.state()["outcomes"]
    sims = np.array([float(s) for s, _ in pairs])
    ok = np.array([bool(c) for _, c in pairs])
    return sims, ok, first


def diverse(sims: np.ndarray, ok: np.ndarray, first: int, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray, int]:
    """The outcomes with ``UNRELATED`` times as many low-similarity wrong ones interleaved."""
    k = UNRELATED * len(sims)
    at = np.sort(rng.integers(0, len(sims) + 1, k))
    return (np.insert(sims, at, rng.uniform(0.5, 0.85, k)), np.insert(ok, at, np.zeros(k, bool)),
            first + int((at < first).sum()))


def threshold(sims: np.ndarray, ok: np.ndarray, rule: str) -> float | None:
    cert = certify(sims, ok, max_error_rate=BUDGET, confidence=CONFIDENCE,
                   start_threshold=START, min_threshold=0.5, start=RULES[rule](len(sims)))
    return cert.threshold if cert.certified else None


def served(sims: np.ndarray, ok: np.ndarray, t: float | None) -> tuple[int, int]:
    if t is None:
        return 0, 0
    above = sims >= t
    return int(above.sum()), int((above & ~ok).sum())


def run_seed(sims: np.ndarray, ok: np.ndarray, first: int, lookups: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rule in RULES:
        t = threshold(sims[:first], ok[:first], rule)
        hits, wrong = served(sims[first:], ok[first:], t)
        cuts = [first + int(f * (len(sims) - first)) for f in np.linspace(0, 1, 11)]
        l_hits = l_wrong = 0
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            h, w = served(sims[a:b], ok[a:b], threshold(sims[:a], ok[:a], rule))
            l_hits, l_wrong = l_hits + h, l_wrong + w
        out[rule] = {
            "frozen": {"threshold": t, "hit_rate": hits / lookups, "hits": hits, "wrong": wrong},
            "learning": {"hit_rate": l_hits / lookups, "hits": l_hits, "wrong": l_wrong},
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--first-seed", type=int, default=6)
    args = parser.parse_args()
    questions = load_questions()
    streams = [build_stream(questions, seed, MIXES["typical"])
               for seed in range(args.first_seed, args.first_seed + args.seeds)]
    texts = {q for queries, _, _ in streams for q in queries}
    table, _ = embed_all(texts, "auto", Path("/tmp/rag_optimize_cache_quality.npz"))
    rng = np.random.default_rng(0)
    runs: dict[str, list[dict[str, Any]]] = {"as_is": [], "diverse": []}
    for offset, (queries, answer, _) in enumerate(streams):
        sims, ok, first = outcomes_of(queries, answer, table)
        lookups = len(queries) - len(queries) // 2
        for shape, (s, o, f) in (("as_is", (sims, ok, first)),
                                 ("diverse", diverse(sims, ok, first, rng))):
            run = run_seed(s, o, f, lookups)
            run["seed"] = args.first_seed + offset
            runs[shape].append(run)
            print(shape, run["seed"], json.dumps({
                r: (round(v["frozen"]["hit_rate"], 3), round(v["learning"]["hit_rate"], 3))
                for r, v in run.items() if r != "seed"}), flush=True)
    summary: dict[str, Any] = {}
    for shape, shape_runs in runs.items():
        for rule in RULES:
            row: dict[str, Any] = {}
            for phase in ("frozen", "learning"):
                hits = sum(r[rule][phase]["hits"] for r in shape_runs)
                wrong = sum(r[rule][phase]["wrong"] for r in shape_runs)
                per_seed = [r[rule][phase]["wrong"] / r[rule][phase]["hits"]
                            for r in shape_runs if r[rule][phase]["hits"]]
                row[phase] = {
                    "mean_hit_rate": float(np.mean([r[rule][phase]["hit_rate"]
                                                    for r in shape_runs])),
                    "false_hit_rate": wrong / hits if hits else 0.0,
                    "worst_seed_false_hit_rate": max(per_seed, default=0.0),
                    "seeds_serving": len(per_seed),
                }
            summary.setdefault(shape, {})[rule] = row
    print(json.dumps(summary, indent=1))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "error_budget_start.json").write_text(
        json.dumps({"max_error_rate": BUDGET, "confidence": CONFIDENCE, "summary": summary,
                    "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
