"""Issue 17: where the time of ``HybridRetriever.load(path, mmap=True)`` goes, at 100k.

Builds the default hybrid index over WikiQA x5 perturbed (103,890 documents, seeded
synthetic vectors: the load path does not depend on them), saves it, then opens it in fresh
processes (``python -c``), so every run pays the imports and reads the files from the page
cache only (the page cache cannot be dropped here): each run opens a freshly written copy
of the save (``cp -r`` just before, so no process has mapped its pages yet), then the same
save again (warm). Each child reports import time, load time, the
first query's time and a ``cProfile`` of a second load (top functions by cumulative time).
``--before``: the same index saved and opened by an older tree (interleaved contender), and
that older save opened by this code (the older format is still read).

Usage: PYTHONPATH=src python benchmarks/load_profile.py [--runs 5] [--before OLD/src]
Writes benchmarks/results/load_profile.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from filtered_exact import pct, synthetic_vectors  # same directory
from retrieval import RESULTS, load_beir, perturb

from rag_optimize.index import BM25Index, DenseIndex
from rag_optimize.retrieval import HybridRetriever

CHILD = r"""
import cProfile, io, json, pstats, sys, time
t0 = time.perf_counter()
from rag_optimize.retrieval import HybridRetriever
from rag_optimize.embedding import HashingEmbedder
t1 = time.perf_counter()
path, query = sys.argv[1], sys.argv[2]
r = HybridRetriever.load(path, HashingEmbedder(dim=384), mmap=True)
t2 = time.perf_counter()
ids = r.retrieve(query).ids
t3 = time.perf_counter()
profile = cProfile.Profile()
profile.enable()
HybridRetriever.load(path, HashingEmbedder(dim=384), mmap=True)
profile.disable()
out = io.StringIO()
pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(18)
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_query_s": t3 - t2,
                  "ids": ids, "profile": out.getvalue()}))
"""


def build_and_save(saved: Path) -> list[str]:
    """Build the default 100k hybrid index and save it to ``saved``; the first query's ids."""
    from rag_optimize.embedding import HashingEmbedder

    data = load_beir("wikiqa")
    ids, texts, vectors = perturb(
        data["ids"], data["texts"], synthetic_vectors(len(data["texts"]), 384), 5
    )
    metadatas = [{"pct": pct(i)} for i in ids]
    bm25 = BM25Index()
    bm25.add(texts, ids=ids, metadatas=metadatas)
    dense = DenseIndex()  # the same documents as BM25's, as HybridRetriever.from_texts has
    dense.add(vectors, ids=ids, texts=texts, metadatas=metadatas)
    built = HybridRetriever(bm25, dense, HashingEmbedder(dim=384), k=10)
    built.save(saved)
    return built.retrieve(next(iter(data["queries"].values()))).ids


def child(code_src: Path | None, *argv: str) -> dict[str, Any]:
    """Run :data:`CHILD` in a fresh process, with ``code_src`` first on the path if given."""
    env = dict(os.environ)
    if code_src is not None:
        env["PYTHONPATH"] = f"{code_src}{os.pathsep}{env.get('PYTHONPATH', '')}"
    out = subprocess.run(
        [sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, check=True, env=env
    )
    got: dict[str, Any] = json.loads(out.stdout)
    return got


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--save-only", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--before", default=None,
        help="a src/ directory of the code before the change: its save, opened by it, is a "
        "contender (e.g. git archive <commit> src | tar -x -C /tmp/before)",
    )
    args = parser.parse_args()
    if args.save_only:
        print(json.dumps(build_and_save(Path(args.save_only))))
        return
    report: dict[str, Any] = {"load_average_start": os.getloadavg()}
    work = Path(tempfile.mkdtemp(prefix="rag-load-"))
    saved = work / "hybrid"
    start = time.perf_counter()
    expected = build_and_save(saved)
    report["save_s"] = round(time.perf_counter() - start, 2)
    query = next(iter(load_beir("wikiqa")["queries"].values()))
    report["bytes_on_disk"] = sum(p.stat().st_size for p in saved.rglob("*") if p.is_file())
    contenders: list[tuple[str, Path, Path | None]] = [("now", saved, None)]
    if args.before:
        before_src = Path(args.before).resolve()
        old_saved = work / "hybrid-before"
        env = dict(os.environ)
        env["PYTHONPATH"] = f"{before_src}{os.pathsep}{env.get('PYTHONPATH', '')}"
        subprocess.run(
            [sys.executable, __file__, "--save-only", str(old_saved)], check=True, env=env,
            capture_output=True,
        )
        contenders.append(("before (its own save and code)", old_saved, before_src))
        contenders.append(("now, opening the save written before", old_saved, None))
    runs = []
    for run in range(args.runs):
        for label, source, code in contenders:
            for fresh in (True, False):
                path = source
                if fresh:  # a freshly written copy: no process has mapped these files yet
                    path = work / f"copy{run}"
                    subprocess.run(["cp", "-r", str(source), str(path)], check=True)
                load = os.getloadavg()[0]
                got = child(code, str(path), query)
                if fresh:
                    shutil.rmtree(path)
                runs.append({
                    "contender": label,
                    "files": "fresh copy" if fresh else "same save again",
                    "load_average": load,
                    "import_s": round(got["import_s"], 3),
                    "load_s": round(got["load_s"], 3),
                    "first_query_s": round(got["first_query_s"], 4),
                    "same_ids": got["ids"] == expected,
                })
                print(json.dumps(runs[-1]), flush=True)
                if run == 0 and fresh:
                    report[f"profile: {label}"] = got["profile"]
    report["runs"] = runs
    summary = {}
    for label, _, _ in contenders:
        for files in ("fresh copy", "same save again"):
            picked = [r for r in runs if r["contender"] == label and r["files"] == files]
            loads = sorted(r["load_s"] for r in picked)
            firsts = sorted(r["first_query_s"] for r in picked)
            summary[f"{label}; {files}"] = {
                "load_s_median": loads[len(loads) // 2], "load_s_max": loads[-1],
                "first_query_s_median": firsts[len(firsts) // 2], "n": len(loads),
            }
    report["summary"] = summary
    report["load_average_end"] = os.getloadavg()
    shutil.rmtree(work)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "load_profile.json").write_text(json.dumps(report, indent=2))
    for key, value in report.items():
        if key.startswith("profile"):
            print(key, value)
    print(json.dumps(summary, indent=1))
    print("load average", report["load_average_start"], "->", report["load_average_end"])


if __name__ == "__main__":
    main()
