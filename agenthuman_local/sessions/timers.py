"""SessionTimers: each started session's connect timeout and expiry, as tasks that only sleep.

`connect` (`ws.connect_timeout_s`) ends a session with `websocket_timeout` unless a valid
`session.init` disarms it; `expire` (`session.max_duration_s`) ends it with `expired` at its
`expiration`. A timer sleeps on `clock`, the same injectable clock the sessions' pacers use, then
hands the end to `on_fire(session_id, reason)` (the manager's `end_soon`), so cancelling a timer
never cuts an end short.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from agenthuman_local.clock import Clock
from agenthuman_local.sessions.state import EndReason


class SessionTimers:
    def __init__(self, clock: Clock, on_fire: Callable[[str, EndReason], None]) -> None:
        self._clock = clock
        self._on_fire = on_fire
        self._tasks: dict[str, dict[str, asyncio.Task[None]]] = {}

    def arm(self, session_id: str, *, connect_s: float, expire_s: float | None) -> None:
        """A session just started: its connect timeout, and its expiry unless it has none."""
        timers = {"connect": self._timer(session_id, connect_s, "connect")}
        if expire_s is not None:
            timers["expire"] = self._timer(session_id, expire_s, "expire")
        self._tasks[session_id] = timers

    def disarm_connect(self, session_id: str) -> None:
        """Idempotent."""
        task = self._tasks.get(session_id, {}).pop("connect", None)
        if task is not None:
            task.cancel()

    def rearm_connect(self, session_id: str, connect_s: float) -> None:
        """The connect timeout again, from now, for an armed session whose one was disarmed."""
        timers = self._tasks.get(session_id)
        if timers is not None and "connect" not in timers:
            timers["connect"] = self._timer(session_id, connect_s, "connect")

    def cancel(self, session_id: str) -> None:
        """The session ends: cancel and forget its timers."""
        for task in self._tasks.pop(session_id, {}).values():
            task.cancel()

    def cancel_all(self) -> None:
        """Cancel every timer; `settle` awaits the ones still held."""
        for timers in self._tasks.values():
            for task in timers.values():
                task.cancel()

    async def settle(self) -> None:
        """Await every timer still held, then forget them all."""
        leftover = [t for ts in self._tasks.values() for t in ts.values()]
        await asyncio.gather(*leftover, return_exceptions=True)
        self._tasks.clear()

    def _timer(self, session_id: str, delay_s: float, kind: str) -> asyncio.Task[None]:
        reason = EndReason.WEBSOCKET_TIMEOUT if kind == "connect" else EndReason.EXPIRED
        return asyncio.create_task(
            self._end_after(session_id, delay_s, reason), name=f"session:{session_id}:{kind}"
        )

    async def _end_after(self, session_id: str, delay_s: float, reason: EndReason) -> None:
        await self._clock.sleep_until(self._clock.now() + max(0.0, delay_s))
        self._on_fire(session_id, reason)
