"""Where a session's published frames go: one small interface for every output (SPEC §10).

A `PublishedFrame` is one video frame together with exactly the audio it shows (SPEC §9).
`Sink.publish` must return at once: an output that does I/O keeps its own bounded queue and
drops its own oldest data when it falls behind (`QueuedSink`), so no output slows the session.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from agenthuman_local.engine.base import SAMPLE_RATE_HZ

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishedFrame:
    session_id: str
    frame_index: int
    pts_ms: int
    rgb: np.ndarray  # uint8 [H, W, 3]; shared by every sink, never written to
    samples: np.ndarray  # int16 mono at `sample_rate_hz`: exactly the samples this frame shows
    audio_start: int  # [audio_start, audio_end) in 16 kHz samples since the session's frame 0
    audio_end: int
    speaking: bool
    late: bool
    render_ms: float
    queue_frames: int
    sample_rate_hz: int = SAMPLE_RATE_HZ

    @property
    def pcm(self) -> bytes:
        """The frame's audio as PCM s16le mono."""
        return self.samples.astype("<i2").tobytes()


class Sink(Protocol):
    async def publish(self, frame: PublishedFrame) -> None:
        """Take the frame; never waits on the output's own I/O."""
        ...

    async def aclose(self) -> None:
        """Idempotent."""
        ...


class MemorySink:
    """Keeps what it is given (the newest `max_frames`); for tests and diagnostics."""

    def __init__(self, max_frames: int = 100_000) -> None:
        self.frames: deque[PublishedFrame] = deque(maxlen=max_frames)
        self.closed = False

    async def publish(self, frame: PublishedFrame) -> None:
        if not self.closed:
            self.frames.append(frame)

    async def aclose(self) -> None:
        self.closed = True


class QueuedSink:
    """Base for outputs that do I/O: a bounded queue drained by one named task.

    Subclasses implement `async _write(frame)`. When the queue is full the oldest frame is
    dropped and counted in `dropped`; `publish` never waits.
    """

    def __init__(self, name: str, max_frames: int = 8) -> None:
        self.name = name
        self.dropped = 0
        self._queue: deque[PublishedFrame] = deque()
        self._max_frames = max_frames
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def publish(self, frame: PublishedFrame) -> None:
        if self._closed:
            return
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name=f"sink:{self.name}")
        if len(self._queue) >= self._max_frames:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(frame)
        self._wake.set()

    async def _drain(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                frame = self._queue.popleft()
                try:
                    await self._write(frame)
                except Exception:  # one bad write must not end the output's task
                    log.exception("sink %s failed to write frame %d", self.name, frame.frame_index)

    async def _write(self, frame: PublishedFrame) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
