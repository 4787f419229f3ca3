"""Pacing: when frame n is due, against an injectable clock (wall or virtual).

Frame n is due at `t0 + n / fps`. Frame indices never skip, so a frame's pts and its audio
(SPEC §9) stay locked together whatever the wall clock does; when the loop falls more than
`max_behind_frames` behind, the pacer gives up the lost time slots (counted as dropped) and
re-anchors `t0` instead of bursting to catch up.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from dataclasses import dataclass
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


# Steps of 1/fps summed in floats drift by an ulp; a deadline that close counts as reached.
_EPSILON_S = 1e-9


class VirtualClock:
    """Time moves only when a test calls `advance`; `settled(n)` waits until n tasks sleep."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._changed: asyncio.Event | None = None

    def now(self) -> float:
        return self._now

    def _event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    async def sleep_until(self, t: float) -> None:
        if t <= self._now + _EPSILON_S:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (t, next(self._seq), fut))
        self._event().set()
        await fut

    def advance(self, seconds: float) -> None:
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now + _EPSILON_S:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    @property
    def sleeping(self) -> int:
        """Tasks blocked on a deadline still in the future."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def settled(self, n: int = 1) -> None:
        """Until at least `n` tasks sleep on deadlines still in the future."""
        while self.sleeping < n:
            self._event().clear()
            await self._event().wait()


@dataclass(frozen=True)
class Tick:
    frame_index: int
    pts_ms: int
    pts_end_ms: int
    lateness_ms: float
    late: bool
    dropped_slots: int  # time slots given up just before this tick


class Pacer:
    def __init__(self, fps: int, clock: Clock, *, max_behind_frames: int = 4) -> None:
        self.fps = fps
        self.clock = clock
        self.max_behind_frames = max_behind_frames
        self.next_index = 0
        self.frames_late = 0
        self.frames_dropped = 0
        self._t0: float | None = None

    def pts_ms(self, frame_index: int) -> int:
        return frame_index * 1000 // self.fps

    def due(self, frame_index: int) -> float:
        if self._t0 is None:
            self._t0 = self.clock.now()
        return self._t0 + frame_index / self.fps

    def expected(self, frame_index: int) -> float:
        """When frame n should show, without anchoring the clock (for ordering render jobs)."""
        if self._t0 is None:
            return self.clock.now() + (frame_index - self.next_index) / self.fps
        return self._t0 + frame_index / self.fps

    async def next_tick(self) -> Tick:
        """Sleep until the next frame is due; report how late the wake-up was."""
        n = self.next_index
        due = self.due(n)
        await self.clock.sleep_until(due)
        lateness_s = self.clock.now() - due
        dropped = 0
        if lateness_s * self.fps > self.max_behind_frames:
            dropped = int(lateness_s * self.fps)
            assert self._t0 is not None
            self._t0 += dropped / self.fps
            lateness_s -= dropped / self.fps
            self.frames_dropped += dropped
        # Half a frame of wake-up jitter is invisible; more means the frame showed late.
        late = lateness_s * self.fps > 0.5
        self.frames_late += late
        self.next_index = n + 1
        return Tick(n, self.pts_ms(n), self.pts_ms(n + 1), lateness_s * 1000.0, late, dropped)

    def mark_late(self) -> None:
        """The tick's own image was not ready (a repeat was shown)."""
        self.frames_late += 1
