"""The clock every timing decision reads: monotonic now, sleep, and wall time.

Owns nothing but time. Library code takes a ``Clock`` so tests can run pacing, polling and
backoff in virtual time; the default reads anyio's clock, which trio's ``MockClock`` (and the
test suite's virtual-time asyncio loop) already control.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

import anyio

__all__ = ["SYSTEM_CLOCK", "AnyioClock", "Clock"]


class Clock(Protocol):
    """Where time comes from: pass your own to the client to control time in tests.

    Example:
        ```python
        client = ds.AsyncDashScope(clock=my_clock)  # the runner uses client.clock
        ```
    """

    def now(self) -> float:
        """Monotonic seconds, comparable only with other readings of the same clock."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds`` of this clock's time."""
        ...

    def wall(self) -> datetime:
        """The current wall-clock time, as an aware UTC datetime."""
        ...


class AnyioClock:
    """The event loop's clock (``anyio.current_time``), and the system's wall clock."""

    def now(self) -> float:
        return anyio.current_time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(seconds, 0.0))

    def wall(self) -> datetime:
        return datetime.now(UTC)

    def __repr__(self) -> str:
        return "AnyioClock()"


SYSTEM_CLOCK: Clock = AnyioClock()
