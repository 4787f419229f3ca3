"""Pacing: when frame n is due, against the injectable clock (`agenthuman_local.clock`: the wall
clock here; tests use `tests.fakes.VirtualClock`).

Frame n is due at `t0 + n / fps`. Frame indices never skip, so a frame's pts and its audio
(SPEC §9) stay locked together whatever the wall clock does; when the loop falls more than
`max_behind_frames` behind, the pacer gives up the lost time slots (counted as dropped) and
re-anchors `t0` instead of bursting to catch up.

A tick may come early (`next_tick(early)`): when the caller's event is set before frame n is
due, frame n is published at once — for the first speaking frame after silence, which then
shows as soon as it is rendered instead of at the next tick. Its pts, and every later frame's
due time, stay where the clock puts them: only the wall time of one publication moves, earlier
by at most one frame.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from agenthuman_local.clock import Clock


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

    @property
    def started(self) -> bool:
        """Frame 0's due time is fixed (the clock runs)."""
        return self._t0 is not None

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

    async def next_tick(self, early: asyncio.Event | None = None) -> Tick:
        """Sleep until the next frame is due, or until `early` is set; report how late the
        wake-up was (an early one is never late)."""
        n = self.next_index
        due = self.due(n)
        if early is None:
            await self.clock.sleep_until(due)
        elif not early.is_set():
            sleeper = asyncio.ensure_future(self.clock.sleep_until(due))
            woken = asyncio.ensure_future(early.wait())
            try:
                await asyncio.wait({sleeper, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                # Cancelled, not awaited: awaiting here could swallow a cancel of this task.
                sleeper.cancel()
                woken.cancel()
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
