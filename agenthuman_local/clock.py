"""The injectable clock: what every timer of the package sleeps on (the event loop's monotonic
clock here; tests use `tests.fakes.VirtualClock`, whose time moves only when the test says).

Pure (layer L0), so that sessions and transports share one clock: a session's pacer and
timers, the manager's timers and a Daily room's empty-room timer.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""
        ...

    async def sleep_until(self, t: float) -> None: ...


class WallClock:
    """The event loop's monotonic clock."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep_until(self, t: float) -> None:
        delay = t - self.now()
        await asyncio.sleep(max(0.0, delay))
