"""Fakes at the true edges: a renderer whose pixels encode the face parameters it was given."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections import deque

import torch

from agenthuman_local.engine.base import N_PARAMS, FrameSize, P
from agenthuman_local.transports.base import PublishedFrame


def jaw_level(jaw: float) -> int:
    """The grey level FakeRenderer paints for a jaw value (readable back, even through JPEG)."""
    return 40 + int(round(float(jaw) * 200))


class FakeRenderer:
    """Implements engine.base.Renderer. Every pixel is `jaw_level(params[JAW])`; the first row's
    green channel holds LISTEN·255 so the listening pose can be read back too.

    Knobs: `delay_s` per call (a slow device), `fail` (raise on render), and a gate: with
    `hold()` each call sets `started` and then waits until `release()`, so a test knows the
    render thread has taken a job (no sleep assumed long enough).
    """

    def __init__(self, width: int = 64, height: int = 64, *, delay_s: float = 0.0) -> None:
        self.size = FrameSize(width, height)
        self.device = "cpu"
        self.delay_s = delay_s
        self.fail = False
        self.batch_sizes: list[int] = []
        self.jaws: list[list[float]] = []  # the JAW of each frame, per call
        self.thread_names: set[str] = set()
        self._lock = threading.Lock()
        self.started = threading.Event()
        self._gate: threading.Event | None = None

    def hold(self) -> None:
        self._gate = threading.Event()

    def release(self) -> None:
        if self._gate is not None:
            self._gate.set()

    def render(self, params: torch.Tensor) -> torch.Tensor:
        assert params.ndim == 2 and params.shape[1] == N_PARAMS
        with self._lock:
            self.batch_sizes.append(params.shape[0])
            self.jaws.append([round(float(j), 3) for j in params[:, P.JAW]])
            self.thread_names.add(threading.current_thread().name)
        self.started.set()
        if self._gate is not None:
            self._gate.wait(timeout=30)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("fake renderer failure")
        b = params.shape[0]
        levels = (40 + torch.round(params[:, P.JAW].clamp(0, 1) * 200)).to(torch.uint8)
        out = levels.view(b, 1, 1, 1).expand(b, self.size.height, self.size.width, 3).clone()
        out[:, 0, :, 1] = torch.round(params[:, P.LISTEN].clamp(0, 1) * 255).to(torch.uint8)[
            :, None
        ]
        return out


class MemorySink:
    """Keeps what it is given (the newest `max_frames`); a test's Sink."""

    def __init__(self, max_frames: int = 100_000) -> None:
        self.frames: deque[PublishedFrame] = deque(maxlen=max_frames)
        self.closed = False

    async def publish(self, frame: PublishedFrame) -> None:
        if not self.closed:
            self.frames.append(frame)

    async def aclose(self) -> None:
        self.closed = True


# Steps of 1/fps summed in floats drift by an ulp; a deadline that close counts as reached.
_EPSILON_S = 1e-9
# How long `settled` waits (wall time) before it fails: far more than a loaded CI box needs for
# the tasks to go back to sleep, far less than pytest's per-test timeout, which would say less.
SETTLE_TIMEOUT_S = 10.0


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

    async def settled(self, n: int = 1, *, timeout_s: float = SETTLE_TIMEOUT_S) -> None:
        """Until at least `n` tasks sleep on deadlines still in the future; an AssertionError
        naming the counts after `timeout_s` of wall time, instead of a hung test."""
        try:
            async with asyncio.timeout(timeout_s):
                while self.sleeping < n:
                    self._event().clear()
                    await self._event().wait()
        except TimeoutError:
            raise AssertionError(
                f"VirtualClock.settled({n}): {self.sleeping} of {n} tasks sleep on this clock"
                f" after {timeout_s:g} s (one ended or hangs, or sleeps on another clock)"
            ) from None
