"""Proofs of "at the same time" and "did not wait" that measure no time.

Tests here never assert a duration (a shared, loaded CI machine makes any bound a flake).
Concurrency is proved by a rendezvous: every party waits inside its work until all the others
are inside theirs, so work done one after another never meets, the barrier breaks after
``MEET_S`` and the test fails for that reason. "Did not wait" is proved by :class:`Held`
work that only finishes when the test releases it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

MEET_S = 10.0  # generous: only a rendezvous that cannot happen (serial work) waits this long


def meeting(parties: int) -> Callable[[], object]:
    """A wait for ``parties`` threads to be inside at once (``BrokenBarrierError`` if not)."""
    return threading.Barrier(parties, timeout=MEET_S).wait


def ameeting(parties: int) -> Callable[[], Awaitable[object]]:
    """The same for ``parties`` tasks on one event loop (``TimeoutError`` if they never meet)."""
    barrier = asyncio.Barrier(parties)

    async def wait() -> object:
        return await asyncio.wait_for(barrier.wait(), MEET_S)

    return wait


class Held:
    """Work that blocks until :meth:`release` and notes when it finished.

    Call ``hold()`` inside the slow fake; after the call under test returns, ``finished`` is
    still False unless that call waited for the slow part (then it waited ``MEET_S``).
    """

    def __init__(self) -> None:
        self._released = threading.Event()
        self._finished = threading.Event()

    def hold(self) -> None:
        self._released.wait(MEET_S)
        self._finished.set()

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def release(self) -> None:
        self._released.set()
