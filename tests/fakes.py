"""Fakes at the true edges: a renderer whose pixels encode the face parameters it was given."""

from __future__ import annotations

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
