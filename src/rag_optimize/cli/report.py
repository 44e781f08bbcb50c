"""Reports of measured passes: a rich table, a JSON file, a PNG chart (matplotlib).

With two passes (before / after) the table gets a speed-up column per stage (p50 before
divided by p50 after) and the chart shows both side by side, one panel per percentile.
"""

from __future__ import annotations

import json
import math
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
            x = speedup(a.p50, b.p50) if a and b else None
            row.append(f"{x:.1f}x" if x else "-")
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


def write_chart(
    path: Path, results: Sequence[PassResult], title: str = "Latency per stage"
) -> Path:
    """A PNG with one panel per statistic (mean, p50, p95, p99): a bar per stage and pass
    (log scale, ms); a stage a pass does not have gets no bar."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the chart needs matplotlib: pip install 'rag-optimize[charts]'") from exc
    names = stage_order(results)
    panels = ("mean", *PERCENTILES)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.5))
    width = 0.8 / max(1, len(results))
    for ax, p in zip(axes, panels, strict=True):
        for i, r in enumerate(results):
            values = [
                getattr(r.stages.stages[n], p) * 1000 if n in r.stages.stages else math.nan
                for n in names
            ]
            xs = [j + (i - (len(results) - 1) / 2) * width for j in range(len(names))]
            ax.bar(xs, [max(v, 1e-3) for v in values], width, label=r.label)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=35, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("ms (log scale)")
        ax.set_title(p)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary_lines(results: Sequence[PassResult]) -> list[str]:
    """Human lines: per pass mean/p95 total, TTFT, throughput; the speed-up for two passes."""
    lines = []
    for r in results:
        ttft = r.stages.stages.get(stage_names.TTFT)
        ttft_text = f", TTFT p50 {ttft.p50 * 1000:.1f} ms" if ttft else ""
        extra = _extra_text(r.extra)
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
                f"speed-up: {x_mean:.1f}x mean latency per question, {x_wall:.1f}x wall time"
            )
    return lines


def _extra_text(extra: Mapping[str, Any]) -> str:
    rate = extra.get("cache_hit_rate")
    return f", cache hit rate {rate:.0%}" if isinstance(rate, (int, float)) else ""
