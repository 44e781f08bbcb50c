"""The chain cache's flows written once, run by a sync and an async driver.

A *plan* is a generator that yields steps and receives their results, the pattern of
:mod:`rag_optimize.plans` (whose ``Step``, ``Call`` and ``Plan`` these are) and httpx's
``auth_flow``: the decisions (look up, confirm, run the chain, record, store) live in the
plan, the drivers only perform the calls, blocking (:func:`result`, :func:`steps`) or
awaited (:func:`aresult`, :func:`asteps`); these drivers also pass :class:`Emit` chunks
to the caller of a stream. A step is

* :class:`Call`: one call with a blocking and an async form (``cache.get``/``cache.aget``,
  ``runnable.invoke``/``runnable.ainvoke``, a run manager's callbacks, which are coroutines
  in async runs);
* :class:`Open` and :class:`Next`: open a stream of the wrapped runnable and take its next
  chunk (:data:`END` when it is exhausted), so one plan iterates a sync or an async stream;
* :class:`All`: several plans at once (in order when blocking, concurrently when async);
* :class:`Emit`: a chunk for the caller of a streaming call (only :func:`steps` and
  :func:`asteps` accept it).

An exception raised by a step is thrown into the plan at its ``yield``, so a plan handles
the failures of its calls with plain ``try``/``except``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

from rag_optimize.plans import Call, Plan, Step

T = TypeVar("T")

END = object()
"""What :class:`Next` returns once its stream is exhausted."""


def callback(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Call:
    """A run manager's callback: a plain method of a sync run's manager, a coroutine
    method of an async run's manager (the plan holds whichever LangChain gave it)."""
    return Call(method, method, *args, **kwargs)


class Open(Step):
    """Open a stream: ``iter(fn(...))`` blocking, ``afn(...)`` (an async iterator) async."""

    __slots__ = ("fn", "afn", "args", "kwargs")

    def __init__(
        self, fn: Callable[..., Any], afn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:
        self.fn = fn
        self.afn = afn
        self.args = args
        self.kwargs = kwargs

    def call(self) -> Iterator[Any]:
        """The blocking stream."""
        return iter(self.fn(*self.args, **self.kwargs))

    async def acall(self) -> AsyncIterator[Any]:
        """The async stream (not started until the first :class:`Next`)."""
        stream: AsyncIterator[Any] = self.afn(*self.args, **self.kwargs)
        return stream


class Next(Step):
    """The next chunk of a stream :class:`Open` returned, or :data:`END`."""

    __slots__ = ("stream",)

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def call(self) -> Any:
        """``next(stream, END)``."""
        return next(self.stream, END)

    async def acall(self) -> Any:
        """``await anext(stream, END)``."""
        return await anext(self.stream, END)


class All(Step):
    """The results of several plans, in order (blocking: one after the other; async:
    concurrently, as ``asyncio.gather``)."""

    __slots__ = ("plans",)

    def __init__(self, plans: list[Plan[Any]]) -> None:
        self.plans = plans

    def call(self) -> list[Any]:
        """Each plan run to its result, one after the other."""
        return [result(plan) for plan in self.plans]

    async def acall(self) -> list[Any]:
        """All plans run concurrently."""
        return list(await asyncio.gather(*(aresult(plan) for plan in self.plans)))


class Emit(Step):
    """A chunk for the caller of a streaming call."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def steps(plan: Plan[Any]) -> Iterator[Any]:
    """Run ``plan`` with blocking calls, yielding what it emits."""
    send: Callable[[Any], Step] = plan.send
    reply: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                step = plan.throw(error) if error is not None else send(reply)
            except StopIteration:
                return
            error = None
            if type(step) is Emit:
                reply = None
                yield step.value
                continue
            try:
                reply = step.call()
            except BaseException as exc:  # noqa: BLE001 - thrown into the plan
                error = exc
    finally:
        plan.close()


async def asteps(plan: Plan[Any]) -> AsyncIterator[Any]:
    """Run ``plan`` awaiting each call, yielding what it emits."""
    send: Callable[[Any], Step] = plan.send
    reply: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                step = plan.throw(error) if error is not None else send(reply)
            except StopIteration:
                return
            error = None
            if type(step) is Emit:
                reply = None
                yield step.value
                continue
            try:
                reply = await step.acall()
            except BaseException as exc:  # noqa: BLE001 - thrown into the plan
                error = exc
    finally:
        plan.close()


def result(plan: Plan[T]) -> T:
    """Run a plan that emits nothing to its result, with blocking calls."""
    holder: list[Any] = []
    for _ in steps(_keep_result(plan, holder)):
        raise RuntimeError("a plan run for its result emitted a chunk")
    return holder[0]


async def aresult(plan: Plan[T]) -> T:
    """Run a plan that emits nothing to its result, awaiting each call."""
    holder: list[Any] = []
    async for _ in asteps(_keep_result(plan, holder)):
        raise RuntimeError("a plan run for its result emitted a chunk")
    return holder[0]


def _keep_result(plan: Plan[T], holder: list[Any]) -> Plan[None]:
    holder.append((yield from plan))
