"""Calibrate the similarity threshold of a semantic cache from labelled pairs.

A threshold is a trade: each value gives a precision (the fraction of hits that answer the
same question) and a recall (the fraction of same-question pairs that hit). Given pairs of
texts labelled "same meaning" (1) or "not" (0), :func:`calibrate_threshold` embeds them,
computes the cosine similarity of each pair and returns the lowest threshold whose precision
reaches the target, the recall it costs, and the whole curve (:meth:`CalibrationResult.plot`
draws it).

The threshold is calibrated for the whole decision, not the similarity alone: by default
each pair is also put to the cache's default decision pipeline (stage 2, see
:mod:`~rag_optimize.cache.decision.pipeline`), and a pair it vetoes is never a hit, exactly
as in the cache. :func:`calibrate_pipeline` also chooses the pipeline's alignment threshold
(the pair of thresholds with the best recall at the target precision).

Use pairs from your own traffic if you can (a few hundred labelled lookups), and check the
result on pairs you did not calibrate on: the precision reached on the calibration pairs is
optimistic, all the more the fewer pairs lie above the threshold (``min_hits`` keeps the
threshold out of the noisy top of the curve).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rag_optimize.cache.decision.alignment import AlignmentSignal, TokenSource
from rag_optimize.cache.decision.pipeline import (
    RULE_SIGNAL_NAMES,
    DecisionPipeline,
    default_pipeline,
)
from rag_optimize.cache.decision.signals import analyse
from rag_optimize.cache.decision.verifiers import Verifier, check_verifier, verifier_name
from rag_optimize.embedding.protocol import Embedder, check_embedder
from rag_optimize.embedding.vectors import unit_matrix
from rag_optimize.errors import ConfigurationError, InvalidInputError

LabelledPair = tuple[str, str, int | bool]
_BATCH = 256
DEFAULT_DECISION = "default"
"""``verifier=DEFAULT_DECISION``: calibrate with the cache's default decision pipeline."""
_VETOED = -1.0
ALIGNMENT_GRID = (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75)


@dataclass(frozen=True)
class CurvePoint:
    """Precision and recall when every pair with similarity ``>= threshold`` is a hit."""

    threshold: float
    precision: float
    recall: float
    hits: int


@dataclass(frozen=True)
class CalibrationResult:
    """The calibrated threshold and the curve it was read from.

    ``threshold`` is ``None`` when no threshold with at least ``min_hits`` hits reaches
    ``target_precision``; ``precision``/``recall``/``hits`` are then those of the highest
    threshold with enough hits. ``curve`` holds one point per distinct similarity, highest
    threshold first.
    """

    threshold: float | None
    precision: float
    recall: float
    hits: int
    target_precision: float
    pairs: int
    positives: int
    curve: tuple[CurvePoint, ...]
    verifier: str | None = None
    alignment_threshold: float | None = None

    @property
    def reached(self) -> bool:
        """Whether some threshold reached the target precision."""
        return self.threshold is not None

    def at(self, threshold: float) -> CurvePoint:
        """Precision and recall of these pairs at any ``threshold``."""
        best = CurvePoint(threshold, 1.0, 0.0, 0)
        for point in self.curve:  # highest threshold first
            if point.threshold < threshold:
                break
            best = point
        return CurvePoint(threshold, best.precision, best.recall, best.hits)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the curve thinned to at most 200 points)."""
        step = max(1, len(self.curve) // 200)
        return {
            "threshold": self.threshold,
            "precision": self.precision,
            "recall": self.recall,
            "hits": self.hits,
            "target_precision": self.target_precision,
            "pairs": self.pairs,
            "positives": self.positives,
            "verifier": self.verifier,
            "alignment_threshold": self.alignment_threshold,
            "curve": [
                [round(p.threshold, 5), round(p.precision, 5), round(p.recall, 5), p.hits]
                for p in self.curve[::step]
            ],
        }

    def table(self, thresholds: Sequence[float] = (0.7, 0.75, 0.8, 0.85, 0.9, 0.95)) -> str:
        """A small text table of the curve at ``thresholds`` plus the calibrated one."""
        rows = ["threshold  precision  recall  hits"]
        marks = sorted({*thresholds, *([self.threshold] if self.threshold is not None else [])})
        for t in marks:
            p = self.at(t)
            star = "  <- calibrated" if t == self.threshold else ""
            rows.append(f"{t:9.4f}  {p.precision:9.4f}  {p.recall:6.4f}  {p.hits:4d}{star}")
        return "\n".join(rows)

    def plot(self, path: str | Path, *, title: str | None = None) -> Path:
        """Save the precision/recall-versus-threshold curve as a PNG (needs matplotlib)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError(
                "plotting the calibration curve needs matplotlib; install it with: "
                "pip install 'rag-optimize[charts]'"
            ) from exc
        thresholds = [p.threshold for p in self.curve]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.plot(thresholds, [p.precision for p in self.curve], label="precision")
        ax.plot(thresholds, [p.recall for p in self.curve], label="recall (hit rate of positives)")
        ax.axhline(self.target_precision, color="grey", linestyle=":", label="target precision")
        if self.threshold is not None:
            ax.axvline(
                self.threshold, color="red", linestyle="--",
                label=f"calibrated {self.threshold:.3f}",
            )
        ax.set_xlabel("similarity threshold")
        ax.set_ylabel("rate")
        ax.set_xlim(max(0.0, min(thresholds, default=0.0)), 1.0)
        ax.set_ylim(0.0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left")
        ax.set_title(title or f"{self.pairs} labelled pairs, {self.positives} positive")
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(out, dpi=110)
        plt.close(fig)
        return out


def pair_similarities(embedder: Embedder, pairs: Sequence[LabelledPair]) -> npt.NDArray[np.float64]:
    """Cosine similarity of each pair, embedding each distinct text once, in batches."""
    check_embedder(embedder)
    texts = sorted({t for a, b, _ in pairs for t in (a, b)})
    index = {t: i for i, t in enumerate(texts)}
    rows: list[Any] = []
    for start in range(0, len(texts), _BATCH):
        rows.extend(embedder.embed_documents(texts[start : start + _BATCH]))
    matrix = unit_matrix(rows)
    a = matrix[[index[p[0]] for p in pairs]]
    b = matrix[[index[p[1]] for p in pairs]]
    return np.einsum("ij,ij->i", a, b).astype(np.float64)


def verified_similarities(
    similarities: npt.NDArray[np.float64], pairs: Sequence[LabelledPair], verifier: Verifier | None
) -> npt.NDArray[np.float64]:
    """The pairs' similarities as the cache decides on them: a pair the verifier vetoes (the
    cache stores ``text_a`` and looks up ``text_b``) gets -1, so no threshold makes it a hit."""
    verify = check_verifier(verifier)
    if verify is None:
        return similarities
    vetoed = np.array([not verify(b, a) for a, b, _ in pairs], dtype=bool)
    return np.where(vetoed, _VETOED, similarities)


def calibrate_similarities(
    similarities: Sequence[float] | npt.NDArray[Any],
    labels: Sequence[int | bool] | npt.NDArray[Any],
    target_precision: float = 0.98,
    *,
    min_hits: int = 20,
) -> CalibrationResult:
    """:func:`calibrate_threshold` on similarities already computed."""
    _check_target(target_precision)
    if min_hits < 1:
        raise ConfigurationError(f"min_hits must be >= 1, got {min_hits}")
    sims = np.asarray(similarities, dtype=np.float64)
    ys = np.asarray(labels, dtype=bool)
    if sims.shape != ys.shape or sims.ndim != 1:
        raise InvalidInputError("similarities and labels must be 1-D and of the same length")
    if sims.size == 0:
        raise InvalidInputError("no labelled pairs to calibrate on")
    if not np.all(np.isfinite(sims)):
        raise InvalidInputError("similarities contain NaN or infinity")
    positives = int(ys.sum())
    if positives == 0:
        raise InvalidInputError("no positive pairs: precision and recall are undefined")
    order = np.argsort(-sims, kind="stable")
    s, y = sims[order], ys[order]
    tp = np.cumsum(y)
    hits = np.arange(1, s.size + 1)
    last_of_tie = np.r_[s[1:] != s[:-1], True]  # a threshold admits every tie at once
    curve = tuple(
        CurvePoint(float(s[i]), float(tp[i] / hits[i]), float(tp[i] / positives), int(hits[i]))
        for i in np.flatnonzero(last_of_tie)
    )
    # -1 marks a vetoed pair (verified_similarities): no threshold can admit it
    eligible = [p for p in curve if p.hits >= min_hits and p.threshold > _VETOED]
    reaching = [p for p in eligible if p.precision >= target_precision]
    chosen = reaching[-1] if reaching else (eligible[0] if eligible else curve[-1])
    return CalibrationResult(
        threshold=chosen.threshold if reaching else None,
        precision=chosen.precision,
        recall=chosen.recall,
        hits=chosen.hits,
        target_precision=target_precision,
        pairs=int(sims.size),
        positives=positives,
        curve=curve,
    )


def calibrate_threshold(
    embedder: Embedder,
    labelled_pairs: Iterable[LabelledPair],
    target_precision: float = 0.98,
    *,
    min_hits: int = 20,
    verifier: Verifier | str | None = DEFAULT_DECISION,
) -> CalibrationResult:
    """The lowest similarity threshold whose precision on ``labelled_pairs`` reaches
    ``target_precision`` (among thresholds with at least ``min_hits`` hits), for the
    decision the cache makes.

    ``labelled_pairs``: ``(text_a, text_b, label)`` with label 1/True when a cached answer
    for ``text_a`` would be right for ``text_b``. Pass the result's ``threshold`` to
    ``SemanticCache(threshold=...)`` together with the same verifier. ``verifier``: the
    cache's stage 2; ``"default"`` (the cache's default,
    :func:`~rag_optimize.cache.decision.pipeline.default_pipeline`), any verifier (a pair it
    vetoes is never a hit), or ``None`` for similarity alone.
    """
    _check_target(target_precision)
    pairs = [_check_pair(i, p) for i, p in enumerate(labelled_pairs)]
    if not pairs:
        raise InvalidInputError("no labelled pairs to calibrate on")
    verify = _decision(verifier)
    sims = verified_similarities(pair_similarities(embedder, pairs), pairs, verify)
    result = calibrate_similarities(
        sims, [bool(p[2]) for p in pairs], target_precision, min_hits=min_hits
    )
    return replace(result, verifier=verifier_name(verify))


def calibrate_pipeline(
    embedder: Embedder,
    labelled_pairs: Iterable[LabelledPair],
    target_precision: float = 0.98,
    *,
    min_hits: int = 20,
    alignment_thresholds: Sequence[float] = ALIGNMENT_GRID,
    token_source: TokenSource | None = None,
) -> tuple[CalibrationResult, DecisionPipeline]:
    """Calibrate both thresholds of the default decision: the similarity threshold (stage 1)
    and the pipeline's alignment threshold (stage 2), choosing among
    ``alignment_thresholds`` the one whose calibrated similarity threshold serves the most
    positive pairs at ``target_precision``.

    Returns the result (``alignment_threshold`` set) and the pipeline to pass as
    ``SemanticCache(embedder, threshold=result.threshold, verifier=pipeline)``. The rule
    signals are asked once per pair and the alignment score computed once per pair, so the
    grid costs little more than one calibration.
    """
    _check_target(target_precision)
    pairs = [_check_pair(i, p) for i, p in enumerate(labelled_pairs)]
    if not pairs:
        raise InvalidInputError("no labelled pairs to calibrate on")
    grid = sorted({float(t) for t in alignment_thresholds})
    if not grid:
        raise ConfigurationError("alignment_thresholds is empty")
    sims = pair_similarities(embedder, pairs)
    labels = [bool(p[2]) for p in pairs]
    rules = DecisionPipeline(RULE_SIGNAL_NAMES)
    ruled = np.array([rules.veto(b, a) is not None for a, b, _ in pairs], dtype=bool)
    pipeline = DecisionPipeline(token_source=token_source)
    signal = next(s for s in pipeline.signals if isinstance(s, AlignmentSignal))
    scores = np.array(
        [
            1.0 if vetoed else signal.align(analyse(b), analyse(a)).score
            for (a, b, _), vetoed in zip(pairs, ruled, strict=True)
        ]
    )
    best: tuple[CalibrationResult, float] | None = None
    for tau in grid:
        vetoed = ruled | (scores < tau)
        result = calibrate_similarities(
            np.where(vetoed, _VETOED, sims), labels, target_precision, min_hits=min_hits
        )
        if best is None or _better(result, best[0]):
            best = (result, tau)
    assert best is not None
    result, tau = best
    chosen = DecisionPipeline(alignment_threshold=tau, token_source=token_source)
    return replace(result, verifier=verifier_name(chosen), alignment_threshold=tau), chosen


def _better(a: CalibrationResult, b: CalibrationResult) -> bool:
    """Whether ``a`` is a better calibration than ``b``: it reaches the target when ``b``
    does not, or serves more positives (then: is more precise)."""
    if a.reached != b.reached:
        return a.reached
    return (a.recall, a.precision) > (b.recall, b.precision)


def _decision(verifier: Verifier | str | None) -> Verifier | None:
    if isinstance(verifier, str):
        if verifier != DEFAULT_DECISION:
            raise ConfigurationError(
                f"verifier must be a callable, {DEFAULT_DECISION!r} or None, got {verifier!r}"
            )
        return default_pipeline()
    return check_verifier(verifier)


def read_pairs(path: str | Path) -> list[LabelledPair]:
    """Labelled pairs from a TSV file: ``label<TAB>text_a<TAB>text_b`` per line (MRPC's
    layout; a header line whose first field is not 0/1 is skipped)."""
    pairs: list[LabelledPair] = []
    with open(path, encoding="utf-8", newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if not row or not any(cell.strip() for cell in row):
                continue
            if lineno == 1 and row[0].strip() not in ("0", "1"):
                continue
            if len(row) < 3 or row[0].strip() not in ("0", "1"):
                raise InvalidInputError(
                    f"{path}:{lineno}: expected 'label<TAB>text_a<TAB>text_b' with label 0 or 1"
                )
            pairs.append((row[1], row[2], int(row[0].strip())))
    return pairs


def _check_target(target_precision: float) -> None:
    if not (0.0 < target_precision <= 1.0) or math.isnan(target_precision):
        raise ConfigurationError(f"target_precision must be in (0, 1], got {target_precision}")


def _check_pair(i: int, pair: object) -> LabelledPair:
    if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 3:
        raise InvalidInputError(f"labelled_pairs[{i}] must be (text_a, text_b, label)")
    a, b, label = pair
    if not isinstance(a, str) or not isinstance(b, str) or not a.strip() or not b.strip():
        raise InvalidInputError(f"labelled_pairs[{i}] needs two non-empty texts")
    if label not in (0, 1):
        raise InvalidInputError(f"labelled_pairs[{i}] label must be 0/1 or a bool, got {label!r}")
    return (a, b, bool(label))
