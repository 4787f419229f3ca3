"""Where a session's published frames go: one small interface for every output (SPEC §10).

A `PublishedFrame` is one video frame together with exactly the audio it shows (SPEC §9).
`Sink.publish` must return at once: an output that does I/O keeps its own bounded queue and
drops its own oldest data when it falls behind (`QueuedSink`, the one drop-oldest frame queue:
`publish` never waits; when the queue is full the oldest frame is dropped and counted in
`dropped`; one named task drains the queue through the subclass's `async _write(frame)`), so no
output slows the session. Pure: the session layer and every output import this module.

Overload (issue 13): rendering and the pace loop come first. Encoders run on threads that call
`demote_thread()` (a higher nice value, so under CPU contention the render thread and the event
loop get the cores first), and an output that falls behind loses pictures, never time:

- a `QueuedSink` with `shed=True` (the viewer, the socket's `output`) sheds: when newer frames
  wait behind the one it is about to encode, that frame's picture is skipped (the newest wins)
  while its audio still goes out (`_shed`), in order;
- the recorder never drops a frame: behind, it repeats the previous picture with the frame's own
  audio, so its frame count and timing stay exact (`transports.recording`).

What an output sheds or repeats is reported, frame by frame, to a `LossListener` the session
runner hands it (`report_losses_to`): the runner counts it (`/metrics`) and writes it to the
timeline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np

from agenthuman_local.audio import SAMPLE_RATE_HZ

log = logging.getLogger(__name__)

# How much nicer than the process an encoder thread runs (Linux: per thread). Under CPU
# contention the kernel then gives the render thread and the event loop the cores first.
ENCODER_NICE = 10

# Output losses, as reported to a session's runner.
SHED = "shed"  # the frame's picture was not sent (its audio was)
REPEATED = "repeated"  # the frame was recorded with the previous frame's picture
DROPPED = "dropped"  # the recorder was more than 4 s behind: its oldest queued frame is lost

# (output, SHED | REPEATED, frame_index, pts_ms), called on the event loop.
LossListener = Callable[[str, str, int, int], None]


def demote_thread(nice: int = ENCODER_NICE) -> None:
    """Run the calling thread `nice` steps nicer than the process (best effort).

    On Linux a thread's nice value is its own (`setpriority` on its thread id); elsewhere, or
    where refused, this does nothing. Threads started later from this one inherit it.
    """
    setpriority = getattr(os, "setpriority", None)
    native_id = getattr(threading, "get_native_id", None)
    if setpriority is None or native_id is None:
        return
    try:
        base = os.getpriority(os.PRIO_PROCESS, os.getpid())
        setpriority(os.PRIO_PROCESS, native_id(), min(19, base + nice))
    except OSError:  # pragma: no cover - a sandbox that refuses it
        log.debug("could not lower this encoder thread's priority", exc_info=True)


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
    @property
    def pts_ms(self) -> int: ...


F = TypeVar("F", bound=Indexed)


class QueuedSink(Generic[F]):
    """Base for outputs that do I/O: a bounded queue drained by one task named `sink:{name}`.

    Subclasses implement `async _write(frame)`; a write that raises is logged and skipped.
    With `shed`, a frame with newer ones queued behind it goes to `_shed(frame)` instead (the
    subclass sends what it must not lose, e.g. the audio) and is counted in `shed` and reported
    as `SHED` under `output`. `aclose` is idempotent: it drops what is queued and ends the task.
    """

    def __init__(
        self, name: str, max_frames: int = 8, *, shed: bool = False, output: str = ""
    ) -> None:
        self.name = name
        self.output = output or name
        self.dropped = 0
        self.shed = 0
        self._shedding = shed
        self._losses: LossListener | None = None
        self._queue: deque[F] = deque()
        self._max_frames = max_frames
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def report_losses_to(self, listener: LossListener) -> None:
        self._losses = listener

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
                shed = self._shedding and bool(self._queue)  # a newer frame waits: it wins
                try:
                    if shed:
                        self._shed(frame)
                    else:
                        await self._write(frame)
                except Exception:  # one bad write must not end the output's task
                    log.exception("sink %s failed to write frame %d", self.name, frame.frame_index)
                if shed:
                    self.shed += 1
                    if self._losses is not None:
                        self._losses(self.output, SHED, frame.frame_index, frame.pts_ms)

    async def _write(self, frame: F) -> None:
        raise NotImplementedError

    def _shed(self, frame: F) -> None:
        """A frame whose picture is skipped (`shed=True`): send what must not be lost. Never
        waits."""

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
