"""Plans: a flow written once as a generator of calls, run blocking or awaited.

A *plan* is a generator that yields :class:`Step` objects (usually a :class:`Call`: one
call with a blocking and an async form, such as a retriever's ``retrieve``/``aretrieve`` or
the cache's ``get``/``aget``) and receives their results: the pattern of httpx's
``auth_flow`` and of this package's cache flow. The decisions live in the plan; a driver
only performs each step, blocking (:func:`run`) or awaited (:func:`arun`), so a sync and an
async API built on one plan cannot drift apart. An exception raised by a step is thrown
into the plan at its ``yield``, so a plan handles the failures of its calls with plain
``try``/``except`` (and whatever it does not catch reaches the caller unchanged).

The adapters write their flows this way (the LlamaIndex query engine's ``query``/
``aquery``; the LangChain chain cache adds its own stream steps to :class:`Step`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from contextlib import closing
from typing import Any, TypeVar

__all__ = ["Call", "Plan", "Step", "arun", "run"]

T = TypeVar("T")


class Step:
    """One step of a plan: :meth:`call` performs it blocking, :meth:`acall` awaits it."""

    __slots__ = ()

    def call(self) -> Any:
        """Perform the step with blocking calls."""
        raise NotImplementedError

    async def acall(self) -> Any:
        """Perform the step without blocking the event loop."""
        raise NotImplementedError


class Call(Step):
    """``fn(*args, **kwargs)`` blocking, ``await afn(*args, **kwargs)`` async."""

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


Plan = Generator[Step, Any, T]


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

    def next_step(self) -> Step | None:
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
