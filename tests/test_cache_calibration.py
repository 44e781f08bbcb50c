"""Threshold calibration on labelled pairs whose similarities (and so the answer) are known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rag_optimize import ConfigurationError, InvalidInputError
from rag_optimize.cache.decision.calibration import (
    calibrate_pipeline,
    calibrate_similarities,
    calibrate_threshold,
    read_pairs,
)
from rag_optimize.cli.calibrate import run_calibrate
from tests.test_cache_error_budget import VectorBook, _at_similarity

POSITIVE_SIMS = [0.80 + 0.005 * i for i in range(40)]  # 0.800 ... 0.995
NEGATIVE_SIMS = [0.40 + 0.005 * i for i in range(80)] + [0.86, 0.93]  # up to 0.795, 2 high


def _pairs() -> tuple[VectorBook, list[tuple[str, str, int]]]:
    rng = np.random.default_rng(3)
    book = VectorBook()
    pairs = []
    for label, sims in ((1, POSITIVE_SIMS), (0, NEGATIVE_SIMS)):
        for i, sim in enumerate(sims):
            base = rng.standard_normal(book.dim)
            base /= np.linalg.norm(base)
            a = book.add(f"{label}-{i}-a", base)
            b = book.add(f"{label}-{i}-b", _at_similarity(rng, base, sim))
            pairs.append((a, b, label))
    return book, pairs


def test_threshold_precision_and_recall_match_the_hand_computed_answer() -> None:
    book, pairs = _pairs()
    # at 0.80 all 40 positives and the 2 high negatives are hits: precision 40/42 = 0.952
    result = calibrate_threshold(book, pairs, target_precision=0.95, verifier=None)
    assert result.threshold == pytest.approx(0.80, abs=1e-5)
    assert result.precision == pytest.approx(40 / 42)
    assert result.recall == 1.0 and result.hits == 42
    assert (result.pairs, result.positives) == (122, 40)
    # one more negative (0.795) still gives 40/43 = 0.930 >= 0.93; the next gives 40/44
    lower = calibrate_threshold(book, pairs, target_precision=0.93, verifier=None)
    assert lower.threshold == pytest.approx(0.795, abs=1e-5)
    assert lower.precision == pytest.approx(40 / 43)


def test_unreachable_target_returns_none_with_the_best_precision() -> None:
    book, pairs = _pairs()
    # above 0.93 only 13 positives (< min_hits); at or below it the 0.93 negative is a hit
    result = calibrate_threshold(book, pairs, target_precision=0.98, verifier=None)
    assert result.threshold is None and not result.reached
    assert result.hits >= 20 and result.precision < 0.98
    relaxed = calibrate_threshold(book, pairs, target_precision=0.98, min_hits=5, verifier=None)
    assert relaxed.threshold == pytest.approx(0.935, abs=1e-5)
    assert relaxed.precision == 1.0 and relaxed.recall == pytest.approx(13 / 40)


def test_curve_is_consistent() -> None:
    book, pairs = _pairs()
    result = calibrate_threshold(book, pairs, target_precision=0.95, verifier=None)
    thresholds = [p.threshold for p in result.curve]
    assert thresholds == sorted(thresholds, reverse=True)
    recalls = [p.recall for p in result.curve]
    assert recalls == sorted(recalls) and recalls[-1] == 1.0
    assert result.curve[-1].hits == len(pairs)
    assert result.at(0.9 - 1e-4).hits == sum(s >= 0.9 - 1e-4 for s in POSITIVE_SIMS) + 1
    assert result.at(1.5).hits == 0
    data = result.as_dict()
    assert data["threshold"] == result.threshold and len(data["curve"]) <= 200
    table = result.table()
    assert "<- calibrated" in table and "0.9000" in table


def test_plot_writes_a_png(tmp_path: Path) -> None:
    book, pairs = _pairs()
    out = calibrate_threshold(book, pairs, 0.95, verifier=None).plot(tmp_path / "sub" / "curve.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ties_are_admitted_together() -> None:
    result = calibrate_similarities([0.9, 0.9, 0.8], [1, 0, 1], 0.5, min_hits=1)
    assert [p.hits for p in result.curve] == [2, 3]
    assert result.threshold == 0.8


def test_bad_input_is_named() -> None:
    book, pairs = _pairs()
    with pytest.raises(ConfigurationError, match="target_precision"):
        calibrate_threshold(book, pairs, target_precision=1.5, verifier=None)
    with pytest.raises(InvalidInputError, match="no labelled pairs"):
        calibrate_threshold(book, [])
    with pytest.raises(InvalidInputError, match="label"):
        calibrate_threshold(book, [("a", "b", 2)])
    with pytest.raises(InvalidInputError, match="non-empty"):
        calibrate_threshold(book, [("a", " ", 1)])
    with pytest.raises(InvalidInputError, match="no positive"):
        calibrate_similarities([0.5], [0])
    with pytest.raises(InvalidInputError, match="same length"):
        calibrate_similarities([0.5, 0.6], [1])


def _write_tsv(path: Path) -> Path:
    rows = ["label\ttext1\ttext2"]
    rows += [f"1\thow do I reset my password {i}\thow can I reset my password {i}"
             for i in range(30)]
    rows += [f"0\tweather in city {i}\trefund policy for order {i}" for i in range(30)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_read_pairs_skips_the_header_and_names_bad_lines(tmp_path: Path) -> None:
    pairs = read_pairs(_write_tsv(tmp_path / "p.tsv"))
    assert len(pairs) == 60 and pairs[0][2] == 1
    bad = tmp_path / "bad.tsv"
    bad.write_text("1\ta\tb\nyes\tc\td\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="bad.tsv:2"):
        read_pairs(bad)


def test_cli_calibrate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tsv = _write_tsv(tmp_path / "pairs.tsv")
    png, js = tmp_path / "curve.png", tmp_path / "result.json"
    code = run_calibrate(
        ["--pairs", str(tsv), "--target-precision", "0.98", "--out", str(png),
         "--json", str(js), "--embedder", "hashing", "--verifier", "none"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "calibrated threshold" in out and "60 pairs (30 positive)" in out
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert json.loads(js.read_text())["precision"] >= 0.98
    assert run_calibrate(["--pairs", str(tmp_path / "missing.tsv"), "--embedder", "hashing"]) == 2
    assert "missing.tsv" in capsys.readouterr().err


def test_cli_unreachable_target_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tsv = tmp_path / "noisy.tsv"
    rows = [f"{i % 2}\tsame words here {i}\tsame words here {i}" for i in range(40)]
    tsv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert run_calibrate(["--pairs", str(tsv), "--embedder", "hashing", "--verifier", "none"]) == 1
    assert "no threshold" in capsys.readouterr().out


def test_a_verifier_calibrates_the_decision_the_cache_makes() -> None:
    book, pairs = _pairs()
    high_negatives = {a for a, _, label in pairs if label == 0 and a in ("0-80-a", "0-81-a")}

    def verifier(query: str, cached_query: str) -> bool:
        return cached_query not in high_negatives  # vetoes the two high negatives

    plain = calibrate_threshold(book, pairs, target_precision=0.98, verifier=None)
    assert plain.threshold is None  # the 0.86 and 0.93 negatives spoil every threshold
    verified = calibrate_threshold(book, pairs, target_precision=0.98, verifier=verifier)
    assert verified.threshold == pytest.approx(0.80, abs=1e-5)
    assert (verified.precision, verified.recall, verified.hits) == (1.0, 1.0, 40)


def test_cli_calibrate_with_the_mismatch_verifier(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # positives at cosine 0.78 (hashing model), negatives that differ by a "not" at 0.84
    rows = [f"1\thas parcel {i} shipped\ttell me has parcel {i} shipped yet" for i in range(30)]
    rows += [f"0\thas parcel {i} shipped\thas parcel {i} not shipped" for i in range(10)]
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    base = ["--pairs", str(tsv), "--embedder", "hashing", "--target-precision", "0.98"]
    assert run_calibrate([*base, "--verifier", "none"]) == 1  # similarity alone: negatives first
    assert "no threshold" in capsys.readouterr().out
    js = tmp_path / "verified.json"
    assert run_calibrate([*base, "--verifier", "mismatch", "--json", str(js)]) == 0
    result = json.loads(js.read_text())
    assert result["precision"] == 1.0 and result["recall"] == 1.0


SUPPORT_PAIRS = [  # all-MiniLM-L6-v2 cosines 0.93-0.995 (positives), 0.76-0.99 (negatives)
    ("How do I reset my password?", "What is the way to reset my password?", 1),
    ("When does the store open?", "What time does the store open?", 1),
    ("How can I cancel my subscription?", "How do I cancel my subscription?", 1),
    ("Why was my card declined?", "What is the reason my card was declined?", 1),
    ("How much does the premium plan cost?", "What is the price of the premium plan?", 1),
    ("How long does delivery take?", "How long will delivery take?", 1),
    ("Is the store open on Monday?", "Is the store open on Tuesday?", 0),
    ("How do I enable notifications?", "How do I disable notifications?", 0),
    ("Does shipping to Canada take long?", "Does shipping to Mexico take long?", 0),
    ("Does the premium plan increase the storage limit?",
     "Does the premium plan decrease the storage limit?", 0),
    ("Is the first month free?", "Is the last month free?", 0),
    ("Can I return an item after 30 days?", "Can I return an item after 60 days?", 0),
]


@pytest.mark.slow
def test_the_default_calibrates_the_whole_decision_pipeline() -> None:
    from rag_optimize.embedding.local import LocalEmbedder

    model = LocalEmbedder()
    plain = calibrate_threshold(model, SUPPORT_PAIRS, 0.98, min_hits=3, verifier=None)
    whole = calibrate_threshold(model, SUPPORT_PAIRS, 0.98, min_hits=3)
    assert whole.verifier == "DecisionPipeline" and plain.verifier is None
    # the near-misses score as high as paraphrases; only the pipeline's vetoes separate them
    assert whole.reached and whole.recall == 1.0 and whole.precision == 1.0
    assert not plain.reached or plain.recall < whole.recall
    tuned, pipeline = calibrate_pipeline(model, SUPPORT_PAIRS, 0.98, min_hits=3)
    assert tuned.alignment_threshold is not None and tuned.recall == 1.0
    assert pipeline.names[-1] == "alignment"
    assert all(pipeline(b, a) == bool(y) for a, b, y in SUPPORT_PAIRS)


def test_an_unknown_decision_name_is_refused() -> None:
    book, pairs = _pairs()
    with pytest.raises(ConfigurationError, match="'strict'"):
        calibrate_threshold(book, pairs, verifier="strict")
