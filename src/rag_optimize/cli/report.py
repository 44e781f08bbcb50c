"""Reports of measured passes: a rich table, a JSON file, a PNG chart (matplotlib).

With two passes (before / after) the table gets a speed-up column per stage (p50 before
divided by p50 after). The chart shows each question's latency per app (hits and misses
marked) beside a stage table whose rows say how many calls each stage covers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from rag_optimize.cli.measure import PassResult
from rag_optimize.tracing import stages as stage_names

PERCENTILES = ("p50", "p95", "p99")


def stage_order(results: Sequence[PassResult]) -> list[str]:
    """Every stage seen in any pass, in pipeline order."""
    seen = {name for r in results for name in r.stages.stages}
    return sorted(seen, key=stage_names.stage_sort_key)


def speedup(before: float, after: float) -> float | None:
    """``before / after`` (how many times faster), None when either is not positive."""
    return before / after if before > 0 and after > 0 else None


def print_table(
    results: Sequence[PassResult], file: IO[str] | None = None, title: str = "Latency per stage"
) -> None:
    """Per-stage p50/p95/p99 (ms) of each pass; a speed-up column when there are two."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the report table needs rich: pip install 'rag-optimize[cli]'") from exc

    table = Table(title=title)
    table.add_column("stage")
    for r in results:
        for p in PERCENTILES:
            table.add_column(f"{r.label} {p} ms", justify="right")
    if len(results) == 2:
        table.add_column("speed-up p50", justify="right")
    for name in stage_order(results):
        row = [name]
        for r in results:
            s = r.stages.stages.get(name)
            row.extend(f"{getattr(s, p) * 1000:.1f}" if s else "-" for p in PERCENTILES)
        if len(results) == 2:
            a, b = (r.stages.stages.get(name) for r in results)
            row.append(_ratio(speedup(a.p50, b.p50) if a and b else None))
        table.add_row(*row)
    Console(file=file, width=24 + 13 * len(table.columns)).print(table)


def write_json(path: Path, results: Sequence[PassResult], **extra: Any) -> Path:
    """Write the passes (and ``extra`` top-level fields) as JSON; returns the path."""
    payload: dict[str, Any] = {"passes": [r.as_dict() for r in results], **extra}
    if len(results) == 2:
        before, after = results
        payload["speedup"] = {
            "total_mean": speedup(before.total.mean, after.total.mean),
            "total_p50": speedup(before.total.p50, after.total.p50),
            "wall": speedup(before.wall_seconds, after.wall_seconds),
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def headline(results: Sequence[PassResult]) -> str:
    """App names, question count, speed-up of the p50 total and hit rate, in one line."""
    names = " vs ".join(r.label for r in results)
    text = f"{names}: {results[0].calls} questions"
    if len(results) == 2:
        text += ", " + faster_text(*results)
    rates = [f"{r.label} {rate:.0%}" for r in results if (rate := _hit_rate(r)) is not None]
    if rates:
        text += ", cache hit rate " + ", ".join(rates)
    return text


def faster_text(first: PassResult, second: PassResult) -> str:
    """Which pass is faster at the p50 of ``total`` and by how much, whatever the order."""
    x = speedup(first.total.p50, second.total.p50)
    if x is None:
        return "speed-up p50 -"
    if x >= 1:
        return f"{second.label} {x:.1f}x faster (p50)"
    return f"{first.label} {1 / x:.1f}x faster (p50)"


def _ratio(x: float | None) -> str:
    return "-" if not x else (f"{x:.1f}x" if x >= 0.095 else f"{x:.3f}x")


def stage_rows(results: Sequence[PassResult]) -> list[list[str]]:
    """The chart's stage table: stage, which calls it covers per app, p50 ms per app, and
    the p50 speed-up. A stage's p50 is over the calls that had that stage (misses only for
    retrieval and generation behind a cache), which the second column says."""
    rows = []
    for name in stage_order(results):
        summaries = [r.stages.stages.get(name) for r in results]
        covers = " / ".join(
            f"{s.count if s else 0} of {r.calls}" for r, s in zip(results, summaries, strict=True)
        )
        values = [f"{s.p50 * 1000:.1f}" if s else "-" for s in summaries]
        row = [name, covers, *values]
        if len(results) == 2:
            a, b = summaries
            row.append(_ratio(speedup(a.p50, b.p50) if a and b else None))
        rows.append(row)
    return rows


def write_chart(
    path: Path, results: Sequence[PassResult], title: str = "Latency per stage"
) -> Path:
    """A PNG a person reads at a glance: each question's end-to-end latency per app (cache
    hits and misses marked, p50 and p95 printed), a title with the app names, question count,
    speed-up and hit rate, and a stage table whose rows say which calls they cover."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the chart needs matplotlib: pip install 'rag-optimize[charts]'") from exc
    fig, (ax, table_ax) = plt.subplots(
        1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1, 1.25]}
    )
    for i, r in enumerate(results):
        calls = r.per_call or []
        for kind, marker, colour in (("miss", "o", "tab:blue"), ("hit", "^", "tab:green"),
                                     ("no lookup", "o", "tab:gray")):
            picked = [c for c in calls if _kind(c.hit) == kind]
            if not picked:
                continue
            xs = [i + 0.25 * (((j * 7919) % 101) / 100 - 0.5) for j in range(len(picked))]
            ax.scatter(xs, [c.seconds * 1000 for c in picked], s=18, marker=marker,
                       color=colour, alpha=0.7,
                       label=kind if kind not in ax.get_legend_handles_labels()[1] else None)
        for stat, style, align in (("p50", "-", "top"), ("p95", "--", "bottom")):
            value = getattr(r.total, stat) * 1000
            ax.hlines(value, i - 0.3, i + 0.3, colors="black", linestyles=style, linewidth=1)
            ax.annotate(f"{stat} {value:.0f} ms", (i + 0.32, value), fontsize=8, va=align)
    ax.set_xticks(range(len(results)))
    ax.set_xticklabels([r.label for r in results])
    ax.set_xlim(-0.5, len(results) - 0.5 + 0.45)
    ax.set_yscale("log")
    ax.set_ylabel("end-to-end latency per question, ms (log scale)")
    ax.set_title("each question's latency")
    ax.grid(axis="y", alpha=0.3, which="both")
    handles, labels = ax.get_legend_handles_labels()
    covered = "calls covered" + (f"\n({' / '.join(r.label for r in results)})"
                                 if len(results) > 1 else "")
    header = ["stage", covered, *[f"{r.label} p50 ms" for r in results]]
    if len(results) == 2:
        header.append("speed-up")
    table_ax.axis("off")
    table = table_ax.table(cellText=stage_rows(results), colLabels=header, loc="center",
                           cellLoc="right", colLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1, 1.6)
    for (row, _col), cell in table.get_celld().items():
        if row == 0:
            cell.set_height(cell.get_height() * 1.7)
    table_ax.set_title("per stage: p50 over the calls that had the stage")
    table_ax.legend(handles, labels, loc="lower center", ncol=3, fontsize=9,
                    title="markers: each question's cache outcome", title_fontsize=9)
    fig.suptitle(f"{title}\n{headline(results)}", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _kind(hit: bool | None) -> str:
    return "no lookup" if hit is None else ("hit" if hit else "miss")


def _hit_rate(result: PassResult) -> float | None:
    rate = result.hit_rate
    if rate is None:
        extra = result.extra.get("cache_hit_rate")
        rate = float(extra) if isinstance(extra, (int, float)) else None
    return rate


def summary_lines(results: Sequence[PassResult]) -> list[str]:
    """Human lines: per pass mean/p95 total, TTFT, throughput; the speed-up for two passes."""
    lines = []
    for r in results:
        ttft = r.stages.stages.get(stage_names.TTFT)
        ttft_text = f", TTFT p50 {ttft.p50 * 1000:.1f} ms" if ttft else ""
        extra = _extra_text(r)
        lines.append(
            f"{r.label}: {r.calls} calls in {r.wall_seconds:.2f} s, total mean "
            f"{r.total.mean * 1000:.1f} ms, p95 {r.total.p95 * 1000:.1f} ms{ttft_text}, "
            f"{r.throughput:.1f} calls/s{extra}"
        )
    if len(results) == 2:
        before, after = results
        x_mean = speedup(before.total.mean, after.total.mean)
        x_wall = speedup(before.wall_seconds, after.wall_seconds)
        if x_mean and x_wall:
            lines.append(
                f"speed-up ({before.label} / {after.label}): {_ratio(x_mean)} mean latency "
                f"per question, {_ratio(x_wall)} wall time; {faster_text(before, after)}"
            )
    return lines


def _extra_text(result: PassResult) -> str:
    rate = _hit_rate(result)
    text = f", cache hit rate {rate:.0%} ({result.hits} of {result.lookups})" if (
        rate is not None and result.lookups
    ) else (f", cache hit rate {rate:.0%}" if rate is not None else "")
    checked = result.extra.get("hits_checked")
    if isinstance(checked, Mapping):
        text += (f"; hits checked against --expected: {checked.get('wrong', 0)} wrong, "
                 f"{checked.get('right', 0)} right, {checked.get('unchecked', 0)} unchecked")
    return text
