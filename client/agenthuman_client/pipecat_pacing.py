"""When `AgentHumanVideoService`'s media goes out: `Pacer` schedules each frame at its pts on
the server's clock, `Backlog` holds frames for an output transport that is not ready yet, and
`Latencies` records how long after what caused them its first speaking and first post-interrupt
images went out."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

from pipecat.frames.frames import Frame, OutputImageRawFrame, TTSAudioRawFrame

WARMUP_FRAMES = 8
BACKLOG_S = 10  # media held for an output transport that is not ready yet


class Pacer:
    """Sleeps until a frame's pts is due, on an offset found from the first frames."""

    def __init__(self, jitter_s: float) -> None:
        self._jitter_s = jitter_s
        self._offset: float | None = None
        self._wake = asyncio.Event()  # an interrupt cuts a pacing wait short
        self._warmup = WARMUP_FRAMES

    def wake(self) -> None:
        """Cut a wait in progress short (an interrupt)."""
        self._wake.set()

    async def pace(self, pts_ms: float, extra_s: float = 0.0, *, now_ok: bool = False) -> bool:
        """Sleep until `pts_ms` is due; False while the clock is still being found.

        The server publishes at pts in real time. The first `WARMUP_FRAMES` frames (idle, the
        session has just started) only find the earliest arrival (arrival − pts), and are not
        pushed, so the output transport's live video queue, which keeps the schedule of its
        first image, starts on the steady one; after that every frame is pushed at that
        offset plus the jitter buffer, so the audio device never starves and video and audio
        stay in step. A stream that falls behind by more than 200 ms is re-anchored. With
        `now_ok` (the first image after an interrupt's cut) it does not wait: that image
        replaces speech already stopped, and the frames after it keep their schedule. An
        interrupt cuts a wait short."""
        now = time.perf_counter()
        offset = now - pts_ms / 1000
        if self._warmup > 0:
            self._offset = offset if self._offset is None else min(self._offset, offset)
            self._warmup -= 1
            return False
        assert self._offset is not None
        due = pts_ms / 1000 + self._offset + self._jitter_s + extra_s
        if now - due > 0.2:
            self._offset = offset - self._jitter_s - extra_s
        elif due > now and not now_ok:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), due - now)
        return True


class Backlog:
    """Frames for an output transport that is not ready yet: it would drop what it gets, so the
    latest idle image is held, and everything from the first speech on (up to `BACKLOG_S`)."""

    def __init__(self, fps: int | None) -> None:
        self._fps = fps
        self._frames: deque[Frame] = deque()

    def hold(self, frame: Frame) -> None:
        if isinstance(frame, OutputImageRawFrame) and not any(
            isinstance(f, TTSAudioRawFrame) for f in self._frames
        ):
            self._frames.clear()
        self._frames.append(frame)
        limit = BACKLOG_S * (self._fps or 25) * 2
        while len(self._frames) > limit:
            self._frames.popleft()

    def pop(self) -> Frame | None:
        """The oldest held frame; None when none is held."""
        return self._frames.popleft() if self._frames else None

    def drop(self, kind: type[Frame]) -> None:
        """Forget the held frames of `kind` (an interrupt)."""
        self._frames = deque(f for f in self._frames if not isinstance(f, kind))


class Latencies:
    """In ms, `first_image_ms`: from an utterance's first TTS audio frame into the service to
    its first speaking image out of it, one per utterance; `interrupt_ms`: from an
    `InterruptionFrame` into the service to the first image after the cut out of it, one per
    interrupt of a playing utterance."""

    def __init__(self) -> None:
        self.first_image_ms: list[float] = []
        self.interrupt_ms: list[float] = []
        self._audio_in_at: float | None = None
        self._cut_at: float | None = None
        self._speaking_from_ms: int | None = None  # the playing utterance's first pts

    def audio_in(self) -> None:
        """An utterance's first TTS audio came in (kept while an earlier one's is unmatched)."""
        if self._audio_in_at is None:
            self._audio_in_at = time.perf_counter()

    def speak_started(self, pts_ms: int | None) -> None:
        self._speaking_from_ms = pts_ms

    def speak_ended(self) -> None:
        self._speaking_from_ms = None

    def interrupt(self) -> None:
        """An interrupt: the utterance's first image will not come."""
        self._audio_in_at = None

    def cut(self) -> None:
        """An interrupt of a playing utterance: timed to the first image after the cut."""
        self._cut_at = time.perf_counter()

    def image_out(self, pts_ms: int, first_after_cut: bool) -> None:
        """An image went out (`first_after_cut`: the first after an interrupt's cut)."""
        if first_after_cut and self._cut_at is not None:
            self.interrupt_ms.append((time.perf_counter() - self._cut_at) * 1e3)
            self._cut_at = None
        start = self._speaking_from_ms
        if start is not None and pts_ms >= start and self._audio_in_at is not None:
            self.first_image_ms.append((time.perf_counter() - self._audio_in_at) * 1e3)
            self._audio_in_at = None
