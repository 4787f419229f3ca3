"""Where a session's published frames go: one small interface for every output (SPEC §10).

A `PublishedFrame` is one video frame together with exactly the audio it shows (SPEC §9).
`Sink.publish` must return at once: an output that does I/O keeps its own bounded queue and
drops its own oldest data when it falls behind (`QueuedSink`, from
`agenthuman_local.sinkqueue`), so no output slows the session.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from agenthuman_local.engine.base import SAMPLE_RATE_HZ
from agenthuman_local.sinkqueue import QueuedSink

__all__ = ["MemorySink", "PublishedFrame", "QueuedSink", "Sink"]


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
