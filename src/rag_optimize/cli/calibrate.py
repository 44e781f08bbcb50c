"""``rag-optimize calibrate``: pick a cache threshold from labelled pairs.

    rag-optimize calibrate --pairs pairs.tsv --target-precision 0.98 --out curve.png

``pairs.tsv`` holds ``label<TAB>text_a<TAB>text_b`` lines (label 1 when a cached answer for
``text_a`` would be right for ``text_b``; MRPC's train.tsv has this layout). Prints the
calibrated threshold, the recall it costs and the curve at a few thresholds; saves the curve
as a PNG (``--out``) and the numbers as JSON (``--json``). The threshold is calibrated for the
cache's whole default decision (``--verifier default``: a pair its decision pipeline vetoes is
never a hit); ``--tune-alignment`` also chooses the pipeline's alignment threshold. Exit
status: 0 when the target is reached, 1 when no threshold reaches it, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rag_optimize.cache.decision.calibration import (
    DEFAULT_DECISION,
    calibrate_pipeline,
    calibrate_threshold,
    read_pairs,
)
from rag_optimize.cache.decision.verifiers import MismatchVerifier, Verifier
from rag_optimize.embedding.protocol import Embedder


def build_parser(prog: str = "rag-optimize calibrate") -> argparse.ArgumentParser:
    """The argument parser (exposed so the top-level CLI can show its help)."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Calibrate the semantic-cache similarity threshold."
    )
    parser.add_argument("--pairs", required=True, type=Path, help="TSV: label, text_a, text_b")
    parser.add_argument("--target-precision", type=float, default=0.98)
    parser.add_argument("--min-hits", type=int, default=20,
                        help="ignore thresholds with fewer hits than this (noisy top of curve)")
    parser.add_argument("--out", type=Path, help="save the precision/recall curve as a PNG")
    parser.add_argument("--json", type=Path, help="save the result as JSON")
    parser.add_argument(
        "--embedder", choices=("local", "hashing"), default="local",
        help="local: the packaged all-MiniLM-L6-v2; hashing: the toy model (tests only)",
    )
    parser.add_argument("--backend", choices=("auto", "onnx", "torch"), default="auto",
                        help="backend of the local model")
    parser.add_argument(
        "--verifier", choices=("default", "mismatch", "none"), default="default",
        help="default: the cache's default decision pipeline (its vetoes are never hits); "
        "mismatch: the rule stage alone (MismatchVerifier); none: similarity alone",
    )
    parser.add_argument(
        "--tune-alignment", action="store_true",
        help="with --verifier default: also choose the pipeline's alignment threshold",
    )
    return parser


def _embedder(name: str, backend: str) -> Embedder:
    if name == "hashing":
        from rag_optimize.embedding import HashingEmbedder

        return HashingEmbedder()
    from rag_optimize.embedding.local import LocalEmbedder

    return LocalEmbedder(backend=backend)


def run_calibrate(argv: Sequence[str] | None = None) -> int:
    """Run ``rag-optimize calibrate`` with ``argv`` (without the sub-command name)."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    try:
        pairs = read_pairs(args.pairs)
        embedder = _embedder(args.embedder, args.backend)
        if args.tune_alignment and args.verifier == "default":
            result = calibrate_pipeline(
                embedder, pairs, args.target_precision, min_hits=args.min_hits
            )[0]
        else:
            verifier: Verifier | str | None = None
            if args.verifier == "default":
                verifier = DEFAULT_DECISION
            elif args.verifier == "mismatch":
                verifier = MismatchVerifier()
            result = calibrate_threshold(
                embedder, pairs, args.target_precision, min_hits=args.min_hits,
                verifier=verifier,
            )
    except (OSError, ValueError) as exc:
        print(f"rag-optimize calibrate: {exc}", file=sys.stderr)
        return 2
    print(f"{result.pairs} pairs ({result.positives} positive) from {args.pairs}")
    print(result.table())
    print(f"decision: {result.verifier or 'similarity only'}")
    if result.threshold is not None:
        print(
            f"calibrated threshold {result.threshold:.4f}: precision {result.precision:.4f}, "
            f"recall {result.recall:.4f} on these pairs (target {result.target_precision})"
        )
        if result.alignment_threshold is not None:
            print(
                f"alignment threshold {result.alignment_threshold}: use "
                f"SemanticCache(embedder, threshold={result.threshold:.4f}, "
                f"verifier=DecisionPipeline(alignment_threshold={result.alignment_threshold}))"
            )
    else:
        print(
            f"no threshold with >= {args.min_hits} hits reaches precision "
            f"{result.target_precision}; the best is {result.precision:.4f}"
        )
    if args.out is not None:
        print(f"curve saved to {result.plot(args.out)}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.as_dict(), indent=1))
        print(f"result saved to {args.json}")
    return 0 if result.reached else 1
