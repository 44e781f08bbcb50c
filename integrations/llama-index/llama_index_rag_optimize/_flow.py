"""The query engine's flow written once, run by a sync and an async driver.

A *plan* is a generator that yields :class:`Call` steps and receives their results, the
pattern of ``rag_optimize``'s cache flow (and httpx's ``auth_flow``): the decisions (look
up, confirm the hit with a retrieval, delegate to the wrapped engine) live in the plan, and
the drivers only perform each call, blocking (:func:`run`) or awaited (:func:`arun`), so
``query`` and ``aquery`` cannot drift apart. An exception raised by a call is thrown into the
plan at its ``yield``, so a plan handles the failures of its calls with plain
``try``/``except`` (and whatever it does not catch reaches the caller unchanged).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from contextlib import closing
from typing import Any, TypeVar

__all__ = ["Call", "Plan", "arun", "run"]

T = TypeVar("T")


class Call:
    """``fn(*args, **kwargs)`` blocking, ``await afn(*args, **kwargs)`` async (a LlamaIndex
    pair such as ``retrieve``/``aretrieve``, or the cache's ``get``/``aget``)."""

    __slots__ = ("afn", "args", "fn", "kwargs")

    def __init__(
        self,
        fn: Callable[..., Any],
        afn: Callable[..., Awaitable[Any]],
        *args: Any,
        **kwargs: Any,
    ) -> None:
        self.fn = fn
        self.afn = afn
        self.args = args
        self.kwargs = kwargs

    def call(self) -> Any:
        """The blocking form."""
        return self.fn(*self.args, **self.kwargs)

    async def acall(self) -> Any:
        """The async form, awaited."""
        return await self.afn(*self.args, **self.kwargs)


Plan = Generator[Call, Any, T]


class _Progress:
    """Where a run of a plan stands: what its last call returned or raised, its result.

    The stepping is written here once; the drivers differ only in how they perform a call.
    """

    __slots__ = ("error", "plan", "reply", "result")

    def __init__(self, plan: Plan[Any]) -> None:
        self.plan = plan
        self.reply: Any = None
        self.error: BaseException | None = None
        self.result: Any = None

    def next_step(self) -> Call | None:
        """Resume the plan with the last call's outcome; its next call, or ``None`` once it
        returned (its value is then in :attr:`result`)."""
        error, self.error = self.error, None
        try:
            return self.plan.throw(error) if error is not None else self.plan.send(self.reply)
        except StopIteration as stop:
            self.result = stop.value
            return None


def run(plan: Plan[T]) -> T:
    """Run ``plan`` to its result with blocking calls."""
    progress = _Progress(plan)
    with closing(plan):
        while (step := progress.next_step()) is not None:
            try:
                progress.reply = step.call()
            except BaseException as exc:  # noqa: BLE001 - thrown into the plan
                progress.error = exc
    return progress.result


async def arun(plan: Plan[T]) -> T:
    """Run ``plan`` to its result, awaiting each call."""
    progress = _Progress(plan)
    with closing(plan):
        while (step := progress.next_step()) is not None:
            try:
                progress.reply = await step.acall()
            except BaseException as exc:  # noqa: BLE001 - thrown into the plan
                progress.error = exc
    return progress.result
