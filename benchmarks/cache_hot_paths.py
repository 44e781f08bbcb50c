"""CPU instructions per SemanticCache lookup, per path, counted by callgrind (issue 13).

Wall clock on a shared 2-core machine cannot separate differences of 10-20%; instruction
counts do not depend on load. Each count is (total of a process doing N operations - the
same process doing none) / N, so start-up and the build are subtracted out.

Two modes:

* ``run KIND N E``: the workload, in this process. A cache with ``HashingEmbedder(dim=64)``,
  ``verifier=None`` and threshold 0.8 gets ``E`` entries (``set`` one at a time), then ``N``
  operations of ``KIND``:

  - ``exact``: the same stored text with other case (the hash path, no embedding);
  - ``exact_many``: each stored text in turn, other case and spacing;
  - ``hit``: a paraphrase above the threshold (embed, search, fetch, serve);
  - ``miss``: an unrelated text (embed, search, nothing close);
  - ``search`` / ``embed``: only ``store.search`` / only ``embed_query`` + ``unit_vector``,
    to attribute a path's cost;
  - ``put``: only ``store.put`` of fresh entries.

  It only uses ``SemanticCache(...)``, ``set``, ``get`` and the store, so it runs against
  any tree put on ``PYTHONPATH`` (e.g. a ``git worktree`` of an older commit).
* ``measure``: runs ``run`` under ``valgrind --tool=callgrind`` for each kind and tree (trees
  alternating) and writes the per-operation counts as JSON:

      python benchmarks/cache_hot_paths.py measure --trees /tmp/base,. --kinds exact,hit,miss \\
          --n 2000 --entries 1000 --out benchmarks/results/cache_hot_paths.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

KINDS = ("exact", "exact_many", "hit", "miss", "search", "embed", "put")
QUERIES = {
    "exact": "How do I reset my account password today",
    "hit": "how do I reset my account password now today",
    "miss": "completely unrelated words zebra quantum",
}


def stored_text(i: int) -> str:
    return f"stored question {i} about topic {i * 7 % 13}"


def workload(kind: str, n: int, entries: int) -> None:
    """Build the cache, then do ``n`` operations of ``kind`` (see the module docs)."""
    import numpy as np

    from rag_optimize import HashingEmbedder, SemanticCache
    from rag_optimize.embedding.vectors import unit_vector

    cache = SemanticCache(HashingEmbedder(dim=64), threshold=0.8, verifier=None)
    for i in range(entries):
        cache.set(stored_text(i), i)
    cache.set("how do I reset my account password today", "answer")
    if kind in ("search", "embed"):
        vector = unit_vector(cache.embedder.embed_query(QUERIES["hit"]), 64)
        for _ in range(n):
            if kind == "search":
                cache.store.search("", vector, 4, 0.0)
            else:
                unit_vector(cache.embedder.embed_query(QUERIES["hit"]), 64)
    elif kind == "put":
        proto = cache.store.entries()[0]  # type: ignore[attr-defined]
        rng = np.random.default_rng(0)
        vectors = rng.standard_normal((max(n, 1), 64)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        fresh = [
            dataclasses.replace(proto, id=f"id{j}", query_key=f"key {j}", vector=vectors[j])
            for j in range(n)
        ]
        for entry in fresh:
            cache.store.put(entry, 0.0)
    elif kind == "exact_many":
        texts = ["  " + stored_text(i).upper() for i in range(max(entries, 1))]
        for j in range(n):
            cache.get(texts[j % len(texts)])
    else:
        query = QUERIES[kind]
        found = cache.get(query)
        if (found is not None) != (kind != "miss"):
            raise SystemExit(f"{kind}: the lookup did not take the intended path")
        for _ in range(n):
            cache.get(query)


def instructions(tree: Path, kind: str, n: int, entries: int) -> int:
    """callgrind's total instruction count of one ``run`` process against ``tree``."""
    with tempfile.TemporaryDirectory(prefix="callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        env = {**os.environ, "PYTHONPATH": str(tree / "src"), "OPENBLAS_NUM_THREADS": "1"}
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
             __file__, "run", kind, str(n), str(entries)],
            env=env, check=True, capture_output=True,
        )
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError("callgrind wrote no total")


def measure(args: argparse.Namespace) -> None:
    trees = [Path(t).resolve() for t in args.trees.split(",")]
    results: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "n": args.n,
        "entries": args.entries,
        "load_before": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "per_operation": {},
    }
    for kind in args.kinds.split(","):
        row = results["per_operation"].setdefault(kind, {})
        for tree in trees:  # alternating trees within each kind
            base = instructions(tree, kind, 0, args.entries)
            full = instructions(tree, kind, args.n, args.entries)
            row[str(tree)] = (full - base) // args.n
            print(kind, tree, row[str(tree)], flush=True)
    results["load_after"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    run = sub.add_parser("run", help="the workload (what callgrind counts)")
    run.add_argument("kind", choices=KINDS)
    run.add_argument("n", type=int)
    run.add_argument("entries", type=int)
    both = sub.add_parser("measure", help="count instructions per operation for each tree")
    both.add_argument("--trees", required=True, help="comma list of source trees (with src/)")
    both.add_argument("--kinds", default="exact,exact_many,hit,miss,search,embed")
    both.add_argument("--n", type=int, default=2000)
    both.add_argument("--entries", type=int, default=1000)
    both.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "cache_hot_paths.json")
    )
    args = parser.parse_args()
    if args.mode == "run":
        workload(args.kind, args.n, args.entries)
    else:
        measure(args)


if __name__ == "__main__":
    main()
