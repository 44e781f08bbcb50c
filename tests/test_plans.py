"""rag_optimize.plans: one plan, run blocking and awaited, gives the same result; a call's
exception is thrown into the plan at its ``yield`` (so the plan can handle it), and an
unhandled one reaches the caller with the plan closed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rag_optimize.plans import Call, Plan, Step, arun, run


class Source:
    """A pair of methods, blocking and async, that record which form ran."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def get(self, key: str, *, fail: bool = False) -> str:
        self.ran.append("get")
        if fail:
            raise ConnectionError(f"down for {key}")
        return key.upper()

    async def aget(self, key: str, *, fail: bool = False) -> str:
        self.ran.append("aget")
        if fail:
            raise ConnectionError(f"down for {key}")
        return key.upper()


def lookup(source: Source, closed: list[bool]) -> Plan[list[Any]]:
    out: list[Any] = []
    try:
        out.append((yield Call(source.get, source.aget, "a")))
        try:
            yield Call(source.get, source.aget, "b", fail=True)
        except ConnectionError as exc:  # handled inside the plan
            out.append(f"handled: {exc}")
        out.append((yield Call(source.get, source.aget, "c")))
        return out
    finally:
        closed.append(True)


def test_one_plan_two_drivers_same_result() -> None:
    blocking, awaited = Source(), Source()
    closed: list[bool] = []
    expected = ["A", "handled: down for b", "C"]
    assert run(lookup(blocking, closed)) == expected
    assert asyncio.run(arun(lookup(awaited, closed))) == expected
    assert blocking.ran == ["get"] * 3 and awaited.ran == ["aget"] * 3
    assert closed == [True, True]


def unhandled(source: Source, closed: list[bool]) -> Plan[str]:
    try:
        yield Call(source.get, source.aget, "x", fail=True)
        return "not reached"
    finally:
        closed.append(True)


def test_an_unhandled_failure_reaches_the_caller_and_closes_the_plan() -> None:
    closed: list[bool] = []
    with pytest.raises(ConnectionError, match="down for x"):
        run(unhandled(Source(), closed))
    with pytest.raises(ConnectionError, match="down for x"):
        asyncio.run(arun(unhandled(Source(), closed)))
    assert closed == [True, True]


def test_a_step_without_forms_is_refused_into_the_plan() -> None:
    """The base ``Step`` performs nothing: running it raises inside the plan."""

    def plan() -> Plan[str]:
        try:
            yield Step()
        except NotImplementedError:
            return "refused"
        return "ran"

    assert run(plan()) == "refused"
    assert asyncio.run(arun(plan())) == "refused"
