"""Where a session's published frames go: one small interface for every output (SPEC §10).

A `PublishedFrame` is one video frame together with exactly the audio it shows (SPEC §9).
`Sink.publish` must return at once: an output that does I/O keeps its own bounded queue and
drops its own oldest data when it falls behind (`QueuedSink`, the one drop-oldest frame queue:
`publish` never waits; when the queue is full the oldest frame is dropped and counted in
`dropped`; one named task drains the queue through the subclass's `async _write(frame)`), so no
output slows the session. Pure: the session layer and every output import this module.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np

from agenthuman_local.audio import SAMPLE_RATE_HZ

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


# What an output reads of a frame: `PublishedFrame` has this shape.
class MediaFrame(Protocol):
    @property
    def session_id(self) -> str: ...
    @property
    def frame_index(self) -> int: ...
    @property
    def pts_ms(self) -> int: ...
    @property
    def rgb(self) -> np.ndarray: ...
    @property
    def sample_rate_hz(self) -> int: ...
    @property
    def pcm(self) -> bytes: ...


class Indexed(Protocol):
    @property
    def frame_index(self) -> int: ...


F = TypeVar("F", bound=Indexed)


class QueuedSink(Generic[F]):
    """Base for outputs that do I/O: a bounded queue drained by one task named `sink:{name}`.

    Subclasses implement `async _write(frame)`; a write that raises is logged and skipped.
    `aclose` is idempotent: it drops what is queued and ends the task.
    """

    def __init__(self, name: str, max_frames: int = 8) -> None:
        self.name = name
        self.dropped = 0
        self._queue: deque[F] = deque()
        self._max_frames = max_frames
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def publish(self, frame: F) -> None:
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

    async def _write(self, frame: F) -> None:
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
