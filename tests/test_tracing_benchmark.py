"""benchmark_pipeline: warm-up excluded, exact percentiles, per-stage breakdown per call."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest

from rag_optimize.errors import ConfigurationError, InvalidInputError
from rag_optimize.tracing import LatencyTracker, abenchmark_pipeline, benchmark_pipeline


class SlowPipeline:
    """Fake pipeline on a fake clock: each call costs a known, input-dependent time."""

    def __init__(self, clock: Any, tracker: LatencyTracker | None = None) -> None:
        self.clock = clock
        self.tracker = tracker
        self.calls: list[int] = []

    def __call__(self, x: int) -> str:
        self.calls.append(x)
        if self.tracker is not None:
            with self.tracker.span("retrieval"):
                self.clock.advance(0.001 * x)
            with self.tracker.span("generation"):
                self.clock.advance(0.010)
        else:
            self.clock.advance(0.001 * x + 0.010)
        return f"answer {x}"


def test_latencies_and_percentiles(clock: Any) -> None:
    pipe = SlowPipeline(clock)
    inputs = list(range(1, 11))  # calls cost 11..20 ms
    result = benchmark_pipeline(pipe, inputs, warmup=3, runs=2, clock=clock)
    assert pipe.calls[:3] == [1, 2, 3]  # warm-up calls, not measured
    assert len(pipe.calls) == 3 + 20
    assert len(result.latencies) == 20
    s = result.summary
    assert s.count == 20
    assert s.max == pytest.approx(0.020)
    # 20 values: 11..20 ms twice; h = 19 * 0.99 = 18.81 between two 20s -> 20 ms
    assert s.p99 == pytest.approx(0.020)
    # p50: h = 9.5 between 15 and 16 -> 15.5 ms
    assert s.p50 == pytest.approx(0.0155)
    assert result.stages is None


def test_stage_breakdown_from_tracker(clock: Any) -> None:
    tracker = LatencyTracker(clock=clock)
    pipe = SlowPipeline(clock, tracker)
    result = benchmark_pipeline(pipe, [1, 2, 3, 4], warmup=2, runs=1, tracker=tracker, clock=clock)
    assert result.stages is not None
    assert list(result.stages.stages) == ["retrieval", "generation"]
    assert result.stages["retrieval"].count == 4  # warm-up excluded
    assert result.stages["retrieval"].p50 == pytest.approx(0.0025)
    assert result.stages["generation"].max == pytest.approx(0.010)
    data = json.loads(result.to_json())
    assert data["calls"] == 4 and data["stages"]["retrieval"]["count"] == 4
    buf = io.StringIO()
    result.print(file=buf)
    assert "total" in buf.getvalue() and "retrieval" in buf.getvalue()


def test_async_pipeline_is_awaited() -> None:
    seen: list[int] = []

    async def pipe(x: int) -> int:
        await asyncio.sleep(0)
        seen.append(x)
        return x

    result = benchmark_pipeline(pipe, [1, 2], warmup=1, runs=2)
    assert seen == [1, 1, 2, 1, 2]
    assert result.summary.count == 4


async def test_async_inside_running_loop() -> None:
    async def pipe(x: int) -> int:
        await asyncio.sleep(0)
        return x

    with pytest.raises(ConfigurationError, match="abenchmark_pipeline"):
        benchmark_pipeline(pipe, [1])
    tracker = LatencyTracker()
    result = await abenchmark_pipeline(pipe, [1, 2, 3], warmup=0, runs=1, tracker=tracker)
    assert result.summary.count == 3
    assert tracker.report()["total"].count == 3


def test_bad_arguments() -> None:
    with pytest.raises(InvalidInputError, match="inputs"):
        benchmark_pipeline(str, [])
    with pytest.raises(ConfigurationError, match="runs"):
        benchmark_pipeline(str, ["a"], runs=0)
    with pytest.raises(ConfigurationError, match="warmup"):
        benchmark_pipeline(str, ["a"], warmup=-1)
