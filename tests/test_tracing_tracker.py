"""LatencyTracker: stage attribution per run, current-run context, bounds, reports."""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import threading
from typing import Any

import pytest

from rag_optimize.errors import ConfigurationError, InvalidInputError
from rag_optimize.tracing import EventTimeline, LatencyTracker, optional_span, stages


def test_span_and_run_with_injected_clock(clock: Any) -> None:
    tracker = LatencyTracker(clock=clock)
    with tracker.run("r1") as run_id:
        assert LatencyTracker.current_run() == "r1"
        with tracker.span(stages.EMBEDDING):
            clock.advance(0.010)
        with tracker.span(stages.DENSE):
            clock.advance(0.020)
        tracker.record(stages.GENERATION, 0.5)
        clock.advance(0.5)
    assert run_id == "r1"
    assert LatencyTracker.current_run() is None
    record = tracker.run_report("r1")
    assert record is not None
    assert record.stages == pytest.approx(
        {"embedding": 0.010, "retrieval.dense": 0.020, "generation": 0.5}
    )
    assert record.total == pytest.approx(0.53)
    report = tracker.report()
    assert list(report.stages) == ["embedding", "retrieval.dense", "generation", "total"]
    assert report["total"].p99 == pytest.approx(0.53)
    assert report["embedding"].count == 1


def test_span_records_failures_with_error_attribute(clock: Any) -> None:
    tracker = LatencyTracker(clock=clock)
    seen = []
    tracker.add_listener(seen.append)
    with pytest.raises(RuntimeError), tracker.span("rerank", run_id="r"):
        clock.advance(0.1)
        raise RuntimeError("boom")
    assert seen[0].stage == "rerank"
    assert seen[0].attributes["error"] == "RuntimeError"
    assert seen[0].seconds == pytest.approx(0.1)


def test_first_token_once_per_run(clock: Any) -> None:
    tracker = LatencyTracker(clock=clock)
    with tracker.run("r"):
        clock.advance(0.2)
        assert tracker.first_token() == pytest.approx(0.2)
        clock.advance(0.1)
        assert tracker.first_token() is None
    assert tracker.report()["ttft"].count == 1
    assert tracker.report()["ttft"].max == pytest.approx(0.2)


def test_bad_input_is_rejected() -> None:
    tracker = LatencyTracker()
    with pytest.raises(InvalidInputError, match="stage"):
        tracker.span("")
    with pytest.raises(InvalidInputError, match="seconds"):
        tracker.record("embedding", -1.0)
    with pytest.raises(InvalidInputError, match="seconds"):
        tracker.record("embedding", float("nan"))
    with pytest.raises(ConfigurationError, match="max_runs"):
        LatencyTracker(max_runs=0)
    with pytest.raises(ConfigurationError, match="window"):
        LatencyTracker(window=-3)


def test_memory_is_bounded(clock: Any) -> None:
    tracker = LatencyTracker(clock=clock, window=50, max_runs=10)
    for i in range(500):
        with tracker.run(f"run-{i}"), tracker.span("cache"):
            clock.advance(0.001)
    # leaked runs that are never finished
    for i in range(30):
        tracker.start_run(f"leak-{i}")
    assert len(tracker.samples("cache")) == 50
    assert tracker.report()["cache"].count == 500
    assert tracker.run_report("run-0") is None
    assert tracker.run_report("run-499") is not None
    assert len(tracker.open_runs()) == 10
    assert tracker.dropped_runs == 20


def test_threads_attribute_by_explicit_run_id(clock: Any) -> None:
    tracker = LatencyTracker()

    def work(i: int) -> None:
        run = tracker.start_run(f"t{i}")
        for _ in range(50):
            tracker.record("embedding", 0.001 * (i + 1), run_id=run)
        tracker.finish_run(run)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        record = tracker.run_report(f"t{i}")
        assert record is not None
        assert record.counts["embedding"] == 50
        assert record.stages["embedding"] == pytest.approx(50 * 0.001 * (i + 1))


async def test_current_run_follows_asyncio_tasks() -> None:
    tracker = LatencyTracker()

    async def component(delay: float) -> None:  # a nested component with no run argument
        with tracker.span("retrieval"):
            await asyncio.sleep(delay)

    async def request(i: int) -> None:
        with tracker.run(f"req-{i}"):
            await asyncio.gather(component(0.001), component(0.002))

    await asyncio.gather(*(request(i) for i in range(50)))
    for i in range(50):
        record = tracker.run_report(f"req-{i}")
        assert record is not None
        assert record.counts == {"retrieval": 2}


def test_optional_span_without_tracker_is_noop() -> None:
    with optional_span(None, "cache"):
        pass
    tracker = LatencyTracker()
    with optional_span(tracker, "cache"):
        pass
    assert tracker.report()["cache"].count == 1


def test_to_json_and_print_report(clock: Any) -> None:
    tracker = LatencyTracker(clock=clock)
    for ms in (10, 20, 30, 40):
        tracker.record("retrieval", ms / 1000)
        tracker.record("retrieval.sparse", ms / 2000)
    data = json.loads(tracker.to_json())
    assert data["unit"] == "seconds"
    assert data["stages"]["retrieval"]["p50"] == pytest.approx(0.025)
    buf = io.StringIO()
    tracker.print_report(file=buf)
    text = buf.getvalue()
    assert "retrieval" in text and "sparse" in text and "25.00" in text


def test_listener_failure_does_not_break_the_app(caplog: pytest.LogCaptureFixture) -> None:
    tracker = LatencyTracker()

    def broken(_sample: object) -> None:
        raise ValueError("exporter down")

    tracker.add_listener(broken)
    with tracker.span("cache"):
        pass
    assert tracker.report()["cache"].count == 1
    assert "exporter down" in caplog.text


def test_timeline_nesting_roots_and_ttft(clock: Any) -> None:
    tracker = LatencyTracker(clock=clock)
    tl = EventTimeline(tracker)
    tl.start("root", None)
    tl.start("ret", stages.RETRIEVAL, parent_id="root")
    clock.advance(0.05)
    tl.end("ret")
    tl.start("llm", stages.GENERATION, parent_id="root")
    clock.advance(0.1)
    tl.token("llm")
    clock.advance(0.2)
    tl.token("llm")
    tl.end("llm")
    tl.end("root")
    record = tracker.run_report("root")
    assert record is not None
    assert record.stages == pytest.approx({"retrieval": 0.05, "generation": 0.3, "ttft": 0.15})
    assert record.total == pytest.approx(0.35)
    assert tl.open_nodes() == 0
    assert LatencyTracker.current_run() is None


def test_timeline_root_joins_an_active_run(clock: Any) -> None:
    tracker = LatencyTracker(clock=clock)
    tl = EventTimeline(tracker)
    with tracker.run("outer"):
        tl.start("chain", stages.RETRIEVAL)
        clock.advance(0.01)
        tl.end("chain")
        assert "outer" in tracker.open_runs()
    record = tracker.run_report("outer")
    assert record is not None and record.stages == pytest.approx({"retrieval": 0.01})
    assert tracker.run_report("chain") is None


def test_timeline_run_waits_for_open_children(clock: Any) -> None:
    """A streamed answer consumed after the query call returned still counts in total."""
    tracker = LatencyTracker(clock=clock)
    tl = EventTimeline(tracker)
    tl.start("query-span", None, opens_run=False)
    assert tl.claim("query-span", run_id="q1") == "q1"
    tl.start("llm", stages.GENERATION, parent_id="query-span")
    clock.advance(0.1)
    tl.end("query-span")  # the framework's query() returned a stream
    assert tracker.run_report("q1") is not None and "q1" in tracker.open_runs()
    assert LatencyTracker.current_run() == "q1"  # still running in this context
    clock.advance(0.05)
    tl.token("llm")
    clock.advance(0.2)
    tl.end("llm")
    record = tracker.run_report("q1")
    assert record is not None
    assert record.total == pytest.approx(0.35)
    assert record.stages == pytest.approx({"generation": 0.35, "ttft": 0.15})
    assert LatencyTracker.current_run() is None


def test_timeline_hold_keeps_a_run_open_for_a_late_operation(clock: Any) -> None:
    tracker = LatencyTracker(clock=clock)
    tl = EventTimeline(tracker)

    def scenario() -> None:
        tl.start("query", None, run_id="q")
        clock.advance(0.05)
        assert tl.hold("q") and tl.held("q")
        tl.end("query")  # returned a lazy stream: run stays open and current
        assert LatencyTracker.current_run() == "q"
        clock.advance(0.01)
        tl.start("llm", stages.GENERATION)  # no parent: joins the current run
        clock.advance(0.02)
        tl.token("llm")
        tl.end("llm")
        assert "q" in tracker.open_runs()
        tl.release("q")
        assert LatencyTracker.current_run() is None

    contextvars.copy_context().run(scenario)
    record = tracker.run_report("q")
    assert record is not None and record.total == pytest.approx(0.08)
    assert record.stages == pytest.approx({"generation": 0.02, "ttft": 0.08})
    assert not tl.held("q") and not tl.hold("unknown")


def test_timeline_nodes_outside_runs(clock: Any) -> None:
    tracker = LatencyTracker(clock=clock)
    tl = EventTimeline(tracker)
    tl.start("index-build", None, opens_run=False)
    tl.start("emb", stages.EMBEDDING, parent_id="index-build", opens_run=False)
    clock.advance(0.01)
    tl.end("emb")
    tl.end("index-build")
    assert tracker.open_runs() == []
    assert "total" not in tracker.report()
    assert tracker.report()["embedding"].count == 1


def test_timeline_is_bounded(clock: Any) -> None:
    tracker = LatencyTracker(clock=clock)
    tl = EventTimeline(tracker, max_open=10)

    def leak() -> None:  # in a copy of the context: the first node becomes the current run
        for i in range(100):
            tl.start(f"n{i}", stages.RETRIEVAL)

    contextvars.copy_context().run(leak)
    assert tl.open_nodes() == 10
    assert LatencyTracker.current_run() is None
    with pytest.raises(ConfigurationError):
        EventTimeline(tracker, max_open=0)


def test_timeline_siblings_and_stale_current_runs(clock: Any) -> None:
    tracker = LatencyTracker(clock=clock)
    siblings = EventTimeline(tracker, join_own_runs=False, track_current=True)

    def batch() -> None:  # LangChain's batch starts every root in the caller's context
        siblings.start("a", None)
        siblings.start("b", None)
        assert LatencyTracker.current_run() == "b"
        siblings.start("a.step", stages.RETRIEVAL, parent_id="a")
        assert LatencyTracker.current_run() == "a"  # track_current: the step's own run
        clock.advance(0.01)
        siblings.end("a.step")
        siblings.end("a")
        siblings.end("b")

    contextvars.copy_context().run(batch)
    a, b = tracker.run_report("a"), tracker.run_report("b")
    assert a is not None and b is not None
    assert a.counts == {"retrieval": 1} and b.counts == {}

    joining = EventTimeline(tracker)  # join_own_runs=True, but never a finished run

    def stale() -> None:
        LatencyTracker.set_current_run("a")  # finished above
        assert joining.start("c", None) == "c"
        joining.end("c")

    contextvars.copy_context().run(stale)
    assert tracker.run_report("c") is not None


def test_samples_for_runs_that_are_not_open_count_in_the_aggregate_only(clock: Any) -> None:
    tracker = LatencyTracker(clock=clock)
    tracker.record("cache", 0.01, run_id="never-started")
    with tracker.run("done"):
        pass
    tracker.record("cache", 0.01, run_id="done")
    assert tracker.open_runs() == []
    assert tracker.run_report("never-started") is None
    done = tracker.run_report("done")
    assert done is not None and done.counts == {}
    assert tracker.report()["cache"].count == 2


# ---------------------------------------------------------------- span parentage
def _by_stage(samples: list[Any]) -> dict[str, Any]:
    return {s.stage: s for s in samples}


def test_spans_nest_by_context_and_explicit_parent(clock: Any) -> None:
    tracker = LatencyTracker(clock=clock)
    seen: list[Any] = []
    tracker.add_listener(seen.append)
    with tracker.run("r"):
        with tracker.span(stages.RETRIEVAL) as retrieval:
            assert LatencyTracker.current_span() == retrieval.span_id
            with tracker.span(stages.SPARSE):
                clock.advance(0.01)
            parent = LatencyTracker.current_span()

            def worker() -> None:  # a thread sees no context: the parent is passed
                tracker.record(stages.DENSE, 0.02, run_id="r", parent_id=parent)

            thread = threading.Thread(target=worker)
            thread.start()
            thread.join()
        assert LatencyTracker.current_span() is None
        with tracker.span(stages.GENERATION):
            clock.advance(0.1)
    spans = _by_stage(seen)
    root = spans["total"]
    assert spans["retrieval"].parent_id is None  # directly under the run's root
    assert spans["retrieval.sparse"].parent_id == spans["retrieval"].span_id
    assert spans["retrieval.dense"].parent_id == spans["retrieval"].span_id
    assert spans["generation"].parent_id is None
    ids = [s.span_id for s in seen]
    assert len(set(ids)) == len(ids) and root.span_id is not None


async def test_span_parentage_follows_asyncio_tasks(clock: Any) -> None:
    tracker = LatencyTracker(clock=clock)
    seen: list[Any] = []
    tracker.add_listener(seen.append)

    async def branch(stage: str) -> None:
        async with tracker.span(stage):
            await asyncio.sleep(0)

    with tracker.run("r"):
        async with tracker.span(stages.RETRIEVAL) as retrieval:
            await asyncio.gather(branch(stages.SPARSE), branch(stages.DENSE))
    spans = _by_stage(seen)
    assert spans["retrieval.sparse"].parent_id == retrieval.span_id
    assert spans["retrieval.dense"].parent_id == retrieval.span_id


def test_record_with_reserved_span_id_parents_earlier_children(clock: Any) -> None:
    tracker = LatencyTracker(clock=clock)
    seen: list[Any] = []
    tracker.add_listener(seen.append)
    parent = LatencyTracker.new_span_id()
    end = clock()
    child = tracker.record(stages.FUSION, 0.001, end=end, parent_id=parent)
    returned = tracker.record(stages.RETRIEVAL, 0.01, end=end, span_id=parent)
    assert returned == parent
    spans = _by_stage(seen)
    assert spans["retrieval.fusion"].span_id == child
    assert spans["retrieval.fusion"].parent_id == parent
    assert spans["retrieval"].span_id == parent
    assert spans["retrieval"].start == pytest.approx(end - 0.01)


def test_timeline_nodes_are_spans_and_record_time_to_first_chunk(clock: Any) -> None:
    tracker = LatencyTracker(clock=clock)
    seen: list[Any] = []
    tracker.add_listener(seen.append)
    tl = EventTimeline(tracker, track_current=True)
    tl.start("chain", None)
    tl.start("ret", stages.RETRIEVAL, parent_id="chain")
    with tracker.span(stages.CACHE):  # our component inside the framework's retriever
        clock.advance(0.01)
    tl.end("ret")
    tl.start("llm", stages.GENERATION, parent_id="chain", attributes={"model": "m"})
    clock.advance(0.2)
    tl.token("llm")
    clock.advance(0.3)
    tl.end("llm")
    tl.end("chain")
    spans = _by_stage(seen)
    assert spans["cache"].parent_id == spans["retrieval"].span_id
    assert spans["retrieval"].parent_id == spans["generation"].parent_id  # the chain node
    assert spans["retrieval"].parent_id is not None
    assert spans["generation"].attributes["time_to_first_chunk"] == pytest.approx(0.2)
    assert spans["generation"].attributes["model"] == "m"
    assert "time_to_first_chunk" not in spans["retrieval"].attributes
    assert LatencyTracker.current_span() is None


def test_timeline_sibling_roots_do_not_nest_under_each_other(clock: Any) -> None:
    tracker = LatencyTracker(clock=clock)
    seen: list[Any] = []
    tracker.add_listener(seen.append)
    tl = EventTimeline(tracker, join_own_runs=False, track_current=True)
    tl.start("a", stages.RETRIEVAL)  # chain.batch: two roots started in the same context
    tl.start("b", stages.RETRIEVAL)
    tl.end("a")
    tl.end("b")
    retrievals = [s for s in seen if s.stage == stages.RETRIEVAL]
    assert len(retrievals) == 2 and {s.run_id for s in retrievals} == {"a", "b"}
    assert [s.parent_id for s in retrievals] == [None, None]
def test_a_span_ended_in_another_context_is_no_parent(clock: Any) -> None:
    """A framework may end a span in a worker thread: the id left current in the caller's
    context must not become the parent of the caller's next spans."""
    tracker = LatencyTracker(clock=clock)
    seen: list[Any] = []
    tracker.add_listener(seen.append)
    span_id = LatencyTracker.new_span_id()
    token = LatencyTracker.set_current_span(span_id)
    try:
        assert LatencyTracker.current_span() == span_id

        def worker() -> None:  # ends the span elsewhere, as a callback thread does
            tracker.record(stages.RETRIEVAL, 0.01, span_id=span_id)

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        assert LatencyTracker.current_span() is None
        with tracker.span(stages.GENERATION):
            clock.advance(0.1)
    finally:
        LatencyTracker.reset_current_span(token)
    assert _by_stage(seen)["generation"].parent_id is None


def test_open_span_ids_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from rag_optimize.tracing import tracker as tracker_module

    monkeypatch.setattr(tracker_module, "_MAX_OPEN_SPANS", 10)
    leaked = [LatencyTracker.new_span_id() for _ in range(25)]  # never recorded or ended
    assert len(tracker_module._OPEN_SPANS) <= 10
    token = LatencyTracker.set_current_span(leaked[0])  # forgotten: no longer a parent
    try:
        assert LatencyTracker.current_span() is None
        LatencyTracker.set_current_span(leaked[-1])
        assert LatencyTracker.current_span() == leaked[-1]
    finally:
        LatencyTracker.reset_current_span(token)
    for span_id in leaked:
        LatencyTracker.end_span(span_id)
