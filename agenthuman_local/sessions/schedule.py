"""The frames a session runner has scheduled ahead of its clock: which ones, their render jobs,
and whether the next one may be published before its tick.

Frames are scheduled ahead of the clock — up to `ahead_frames` while speech is queued,
`idle_ahead_frames` while idle, so new audio is never stuck behind a long run of pre-rendered
silence. Each scheduled frame holds its audio, the driver's params for it, its render job and the
driver as it was before the frame was stepped, so throwing frames away (`rewind`) puts the driver
back.

The first speaking frame after silence does not wait for a tick: speech that arrives with at
least half a frame left before the next tick re-schedules that very frame with the speech
(`keep_before_speech`; otherwise the one after it), and once its image is rendered `early` is set,
so the runner publishes it at once (`Pacer.next_tick(early)`); its pts and audio, and every later
tick, stay on the clock. (Not for audio-window renderers, whose look-ahead that frame would eat.)

An audio-driven renderer (a plug-in, SPEC §9: `render_audio` and a `manifest`) gets with each
frame its audio window: the frame's own samples then its look-ahead, `audio_window_samples` in
all. Frame n is held back until the queue holds that window, unless the utterance has ended or
no other frame is left to show (an underrun); what has not arrived then is silence. Every
renderer's frame is held the same way until its own samples have arrived, so sub-frame chunks
(10 ms from a TTS) never put silence inside an utterance. The frame's
own audio, and so its timeline range, never changes with the look-ahead. A driver with
`lookahead_frames` gets the queued audio of that many following frames.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from agenthuman_local.audio import frame_sample_range
from agenthuman_local.clock import WallClock
from agenthuman_local.engine.base import (
    FrameDriver,
    Renderer,
    WorkerClosed,
    WorkerFull,
    audio_window_samples,
)
from agenthuman_local.sessions.clock import Pacer
from agenthuman_local.sessions.speech import FrameAudio, SpeechQueue

if TYPE_CHECKING:
    from agenthuman_local.engine.worker import RenderJob, RenderWorker


@dataclass
class Scheduled:
    audio: FrameAudio
    params: np.ndarray
    job: RenderJob | None
    driver_before: FrameDriver  # the driver as it was before this frame was stepped
    window: np.ndarray | None = None  # the audio window of an audio-driven renderer


class FrameSchedule:
    """The scheduled frames, oldest first (`pending`), the driver that steps new ones and the
    worker that renders them; `early` is set when the next frame may be published at once."""

    def __init__(
        self,
        speech: SpeechQueue,
        fps: int,
        renderer: Renderer,
        driver: FrameDriver,
        worker: RenderWorker,
        pacer: Pacer,
        *,
        ahead_frames: int,
        idle_ahead_frames: int,
        on_events: Callable[[list[dict[str, Any]]], None],
    ) -> None:
        self.pending: deque[Scheduled] = deque()
        self.next_index = 0
        self._speech = speech
        self._fps = fps
        self._renderer = renderer
        self._driver = driver
        self._worker = worker
        self._pacer = pacer
        self._ahead_frames = ahead_frames
        self._idle_ahead_frames = idle_ahead_frames
        self._on_events = on_events  # the speech queue's events, as scheduling makes them
        # Samples each frame's render_audio window holds; 0 for renderers driven by params only.
        self.window_samples = audio_window_samples(renderer)
        self.early = asyncio.Event()  # set: the next frame may be published before its tick
        self.last_speaking = False  # the last published frame carried speech (the runner's)

    def __len__(self) -> int:
        return len(self.pending)

    # --- which frames are scheduled --------------------------------------------------------

    def fill(self, listening: bool) -> None:
        """Schedule frames up to `ahead_frames` while speech is queued, `idle_ahead_frames`
        while idle; frames the worker had no room for get another try first."""
        self.resubmit()
        while len(self.pending) < self._ahead_frames:
            if (
                len(self.pending) >= self._idle_ahead_frames
                and not self._speech.unscheduled_samples
            ):
                break
            if self.hold():
                break
            self.add_next(listening)
            self._on_events(self._speech.take_events())

    def keep_before_speech(self) -> int:
        """Scheduled idle frames new speech leaves in place: none when the next tick is at
        least half a frame away and two whole frames of speech are queued (the next frame
        itself can be rendered with the speech in time), else that next frame."""
        if not self._pacer.started or not self.pending or self.window_samples:
            return 1  # an audio-window renderer keeps its look-ahead margin (see check_early)
        nxt = self.pending[0].audio
        if not self._speech_ahead(2):
            # Not two whole frames of speech yet: that frame, or the one after it (scheduled
            # right after that frame's tick), would be padded with silence.
            return 1
        due = self._pacer.expected(nxt.frame_index)
        return 0 if (due - self._pacer.clock.now()) * self._fps >= 0.5 else 1

    def check_early(self, _: object = None) -> None:
        """Set `early` when the next frame is the first speaking one after silence and its
        image is ready: it is published without waiting for its tick.

        Not for an audio-window renderer (a plug-in): starting its speech a frame earlier
        would eat a frame of the look-ahead a client streaming in real time keeps."""
        if self.last_speaking or not self.pending or self.window_samples:
            return
        p = self.pending[0]
        after = self.pending[1].audio.speaking if len(self.pending) > 1 else False
        if (
            p.audio.speaking
            and p.job is not None
            and p.job.future.done()
            and not p.job.future.cancelled()
            # The frame after it has its speech too: published early, this frame would leave
            # the next one to be scheduled before its audio came (TTS streaming in real time),
            # padded with silence that played_ms does not count.
            and (after or self._speech_ahead(1))
        ):
            self.early.set()

    def _speech_ahead(self, frames: int) -> bool:
        """`frames` whole frames of speech not yet scheduled are queued, or no utterance is
        open (what is queued is all there will be)."""
        frame_samples = self.pending[0].audio.audio_end - self.pending[0].audio.audio_start
        return (
            self._speech.open_utterance_id is None
            or self._speech.unscheduled_samples >= frames * frame_samples
        )

    def _submit(
        self, frame_index: int, params: np.ndarray, window: np.ndarray | None = None
    ) -> RenderJob | None:
        """The render job, due when frame `frame_index` is; None when the worker is full.

        On the wall clock, once the clock runs, the job's deadline is its tick: a frame the
        worker can no longer render by then is skipped (the previous image shows, as it would)."""
        due = self._pacer.expected(frame_index)
        deadline = None
        if self._pacer.started and isinstance(self._pacer.clock, WallClock):
            deadline = time.monotonic() + (due - self._pacer.clock.now())
        try:
            job = self._worker.submit(self._renderer, params, due, window, deadline)
        except (WorkerFull, WorkerClosed):
            return None
        job.future.add_done_callback(self.check_early)
        return job

    # --- the frames themselves -------------------------------------------------------------

    def add_next(self, listening: bool) -> None:
        """Schedule frame `next_index`: its audio from the queue, its params, its render job."""
        n = self.next_index
        before = copy.deepcopy(self._driver)
        audio = self._speech.schedule(n)
        current = audio.samples.astype(np.float32) / 32768.0
        params = self._driver.step(current, self._lookahead(n), listening=listening)
        window = self._window(audio)
        job = self._submit(n, params, window)
        self.pending.append(Scheduled(audio, params, job, before, window))
        self.next_index = n + 1

    def resubmit(self) -> None:
        """Frames the worker had no room for get another try."""
        for p in self.pending:
            if p.job is None:
                p.job = self._submit(p.audio.frame_index, p.params, p.window)

    def rewind(self, keep: int) -> None:
        """Throw away scheduled frames after the first `keep`; the driver goes back with them."""
        if len(self.pending) <= keep:
            return
        dropped = list(self.pending)[keep:]
        for p in dropped:
            if p.job is not None:
                p.job.cancel()
        self._driver = dropped[0].driver_before
        self.next_index = dropped[0].audio.frame_index
        for _ in dropped:
            self.pending.pop()

    def redo_idle(self, keep: int = 1) -> None:
        """New audio would otherwise wait behind frames already scheduled as silence: the
        silent frames after the last speaking one, and after the first `keep`, are scheduled
        again. (A silent frame took no samples, so nothing goes back to the speech queue.)"""
        pending = list(self.pending)
        last_speaking = max((i for i, p in enumerate(pending) if p.audio.speaking), default=-1)
        self.rewind(max(keep, last_speaking + 1))

    def silence_next(self) -> None:
        """The next frame keeps its image but loses its audio."""
        if self.pending:
            a = self.pending[0].audio
            self.pending[0].audio = FrameAudio(
                a.frame_index, a.audio_start, a.audio_end, np.zeros_like(a.samples), ()
            )

    def clear(self) -> None:
        for p in self.pending:
            if p.job is not None:
                p.job.cancel()
        self.pending.clear()

    def ready(self) -> int:
        """Scheduled frames whose image is done."""
        return sum(1 for q in self.pending if q.job is not None and q.job.future.done())

    def hold(self) -> bool:
        """The next frame's own audio (an audio-driven renderer's: its whole window) has not all
        arrived, more may come, and a frame is still scheduled to show meanwhile.

        So speech sent in chunks shorter than a frame is never split by silence that
        `played_ms` does not count: a frame is padded only in an underrun, when nothing else
        is left to show."""
        start, end = frame_sample_range(self.next_index, self._fps)
        need = max(self.window_samples, end - start)
        return (
            bool(self.pending)
            and self._speech.open_utterance_id is not None
            and 0 < self._speech.unscheduled_samples < need
        )

    def _window(self, audio: FrameAudio) -> np.ndarray | None:
        """Frame samples then look-ahead, float32 [audio_window_samples]; silence past the end."""
        if not self.window_samples:
            return None
        own = audio.samples[: self.window_samples]
        ahead = self._speech.peek(self.window_samples - len(own))
        window = np.zeros(self.window_samples, dtype=np.float32)
        window[: len(own)] = own
        window[len(own) : len(own) + len(ahead)] = ahead
        return window / 32768.0

    def _lookahead(self, frame_index: int) -> list[np.ndarray]:
        """The queued audio of the driver's `lookahead_frames` after `frame_index`, per frame."""
        n = self._driver.lookahead_frames
        if not n:
            return []
        start = frame_sample_range(frame_index + 1, self._fps)[0]
        end = frame_sample_range(frame_index + n, self._fps)[1]
        ahead = self._speech.peek(end - start).astype(np.float32) / 32768.0
        frames = []
        for i in range(1, n + 1):
            a, b = frame_sample_range(frame_index + i, self._fps)
            part = ahead[a - start : b - start]
            if not len(part):
                break
            frames.append(part)
        return frames
