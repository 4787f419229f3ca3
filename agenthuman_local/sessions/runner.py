"""One started session's media loop: speech queue → driver → render worker → pacer → sinks.

The runner owns two named tasks (`session:<id>:pace`, `session:<id>:watch`) and nothing else
that runs. Frames are scheduled ahead of the clock — up to `ahead_frames` while speech is queued,
`idle_ahead_frames` while idle, so new audio is never stuck behind a long run of pre-rendered
silence — and each tick publishes exactly one frame with exactly its audio. If a frame's image is
not ready at its tick the previous image is shown with the frame's own audio (late), so audio and
video never drift. An interrupt silences the next frame, throws away the ones after it, rewinds
the driver to that frame and continues from there with silence, so no queued speech is heard
after the next tick and the face closes its mouth from where it was rather than jumping.

An audio-driven renderer (a plug-in, SPEC §9: `render_audio` and a `manifest`) gets with each
frame its audio window: the frame's own samples then its look-ahead, `audio_window_samples` in
all. Frame n is held back until the queue holds that window, unless the utterance has ended or
no other frame is left to show (an underrun); what has not arrived then is silence. The frame's
own audio, and so its timeline range, never changes with the look-ahead.

Events (replies and server events alike) leave through one ordered path: the timeline, then the
attached socket link, or an outbox that a reconnecting socket drains in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agenthuman_local import protocol
from agenthuman_local.engine.audio import StreamResampler
from agenthuman_local.engine.base import SAMPLE_RATE_HZ, frame_sample_range
from agenthuman_local.engine.worker import RenderJob, RenderWorker, WorkerClosed, WorkerFull
from agenthuman_local.sessions.clock import Clock, Pacer
from agenthuman_local.sessions.outbox import EventLink, Outbox
from agenthuman_local.sessions.sinks import PublishedFrame, Sink
from agenthuman_local.sessions.speech import BufferFull, FrameAudio, SpeechQueue, samples_to_ms
from agenthuman_local.sessions.timeline import Timeline

log = logging.getLogger(__name__)

E_RENDER_FAILED = "RENDER_FAILED"


@dataclass(frozen=True)
class RunnerOptions:
    session_id: str
    fps: int
    sample_rate_hz: int = SAMPLE_RATE_HZ  # the rate of binary PCM frames (SPEC §8 `sample_rate`)
    max_buffer_s: float = 30.0
    silence_gap_ms: int = 500
    ahead_frames: int = 4
    idle_ahead_frames: int = 2
    idle_timeout_s: float | None = None
    reconnect_grace_s: float = 10.0
    expires_in_s: float | None = None
    watch_interval_s: float = 0.1
    max_outbox_events: int = 4096


@dataclass
class _Pending:
    audio: FrameAudio
    params: np.ndarray
    job: RenderJob | None
    driver_before: Any  # the driver as it was before this frame was stepped
    window: np.ndarray | None = None  # the audio window of an audio-driven renderer


class RenderFailed(Exception):
    pass


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


class SessionRunner:
    def __init__(
        self,
        options: RunnerOptions,
        *,
        renderer: Any,
        worker: RenderWorker,
        driver: Any,
        clock: Clock,
        timeline: Timeline | None = None,
        on_end: Callable[[str], None] | None = None,
    ) -> None:
        self.options = options
        self.session_id = options.session_id
        self.renderer = renderer
        self.worker = worker
        self.clock = clock
        self.timeline = timeline or Timeline()
        self.sinks: list[Sink] = [self.timeline]
        self._driver = driver
        self._on_end = on_end
        manifest = getattr(renderer, "manifest", None)
        # Samples each frame's render_audio window holds; 0 for renderers driven by params only.
        self._window_samples: int = (
            manifest.audio_window_samples if hasattr(renderer, "render_audio") and manifest else 0
        )
        self._speech = SpeechQueue(
            options.fps,
            max_buffer_s=options.max_buffer_s,
            silence_gap_ms=options.silence_gap_ms,
        )
        self._pacer = Pacer(options.fps, clock)
        self._pending: deque[_Pending] = deque()
        self._next_schedule = 0
        self._listening = False
        self._resampler: StreamResampler | None = None
        self._last_rgb: np.ndarray | None = None
        self._pts_ms = 0
        self._outbox = Outbox(options.max_outbox_events)
        self._detached_at: float | None = None
        self._last_activity = clock.now()
        self._expires_at = (
            None if options.expires_in_s is None else clock.now() + options.expires_in_s
        )
        self._first_audio_at: float | None = None
        self._pace_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._end_reason: str | None = None
        self._closed = False
        self.frames_published = 0
        self.frames_late = 0
        self.frames_repeated = 0
        self.first_frame_latency_ms: float | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._pace_task is not None or self._closed:
            return
        self._pace_task = asyncio.create_task(self._pace(), name=f"session:{self.session_id}:pace")
        self._watch_task = asyncio.create_task(
            self._watch(), name=f"session:{self.session_id}:watch"
        )

    @property
    def end_reason(self) -> str | None:
        return self._end_reason

    def _request_end(self, reason: str) -> None:
        """Ask the owner to end the session; the owner then calls `aclose`."""
        if self._end_reason is not None:
            return
        self._end_reason = reason
        if self._on_end is not None:
            self._on_end(reason)

    async def aclose(self, reason: str | None = None) -> dict[str, Any]:
        """Stop the tasks, end live utterances, close the sinks; returns the stats. Idempotent."""
        if self._closed:
            return self.stats()
        self._closed = True
        if self._end_reason is None:
            self._end_reason = reason
        for task in (self._pace_task, self._watch_task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for p in self._pending:
            if p.job is not None:
                p.job.cancel()
        self._pending.clear()
        self._speech.abandon()
        self._emit_all(self._speech.take_events())
        for sink in list(self.sinks):
            try:
                await sink.aclose()
            except Exception:
                log.exception("session %s: closing a sink failed", self.session_id)
        self.sinks.clear()
        return self.stats()

    def stats(self) -> dict[str, Any]:
        """SPEC §3 `stats`; the counts equal the timeline's."""
        return {
            "frames_published": self.frames_published,
            "frames_late": self.frames_late,
            "frames_dropped": self.frames_repeated + self._pacer.frames_dropped,
            "audio_ms_received": samples_to_ms(self._speech.received_samples),
            "audio_ms_played": samples_to_ms(self._speech.played_samples),
            "first_frame_latency_ms": (
                None
                if self.first_frame_latency_ms is None
                else round(self.first_frame_latency_ms, 1)
            ),
        }

    # --- the socket side -------------------------------------------------------------------

    def attach(self, link: EventLink) -> None:
        """A socket with a valid session.init: events missed while detached go first, in order."""
        self._detached_at = None if self._outbox.attach(link) else self.clock.now()

    def detach(self, link: EventLink, unsent: list[dict[str, Any]] | None = None) -> None:
        """The socket closed; `unsent` are events it took but never sent (they go first)."""
        if self._outbox.detach(link, unsent):
            self._detached_at = self.clock.now()

    @property
    def attached(self) -> bool:
        return self._outbox.link is not None

    def _emit(self, event: dict[str, Any]) -> None:
        self.timeline.event(self._pts_ms, event)
        if not self._outbox.send(event):
            self._detached_at = self.clock.now()

    def _emit_all(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            if (
                event["type"] == protocol.AGENT_SPEAK_STARTED
                and self.first_frame_latency_ms is None
                and self._first_audio_at is not None
            ):
                self.first_frame_latency_ms = (self.clock.now() - self._first_audio_at) * 1000.0
            self._emit(event)

    def emit_error(self, code: str, message: str) -> None:
        self._emit(protocol.error_event(code, message))

    def emit_state(self, state: str, reason: str | None = None) -> None:
        """`session.state` for outputs that change the session's state (e.g. `joined_room`)."""
        self._emit(protocol.session_state(state, reason))

    # --- commands --------------------------------------------------------------------------

    def speak(self, pcm: bytes, sample_rate_hz: int | None = None) -> None:
        """Queue PCM s16le mono; answers `agent.speak.confirmed` or `error BUFFER_FULL`."""
        rate = sample_rate_hz or self.options.sample_rate_hz
        self._last_activity = self.clock.now()
        raw = np.frombuffer(pcm, dtype="<i2")
        # Refused before resampling, so a huge chunk never costs the loop any work.
        if self._speech.buffered_samples + len(raw) * SAMPLE_RATE_HZ // rate > (
            self._speech.max_buffer_samples
        ):
            self.emit_error(protocol.E_BUFFER_FULL, "Too much audio queued; the chunk was dropped")
            return
        if rate == SAMPLE_RATE_HZ:
            samples = raw.astype(np.int16)
        else:
            new_utterance = self._speech.open_utterance_id is None
            if new_utterance or self._resampler is None or self._resampler.src_rate_hz != rate:
                self._resampler = StreamResampler(rate, SAMPLE_RATE_HZ)
            samples = _to_int16(self._resampler.process(raw.astype(np.float32) / 32768.0))
        try:
            result = self._speech.push(samples)
        except BufferFull as exc:
            self.emit_error(protocol.E_BUFFER_FULL, str(exc))
            return
        if self._first_audio_at is None and result.audio_samples:
            self._first_audio_at = self.clock.now()
        self._emit(
            protocol.speak_confirmed(result.audio_samples, result.buffered_ms, result.utterance_id)
        )
        self._redo_idle_frames()
        self._fill()

    def speak_end(self) -> None:
        self._speech.end_utterance()
        self._resampler = None
        self._emit_all(self._speech.take_events())

    def interrupt(self) -> None:
        """No queued speech is heard from the next tick on; the mouth closes from there."""
        self._last_activity = self.clock.now()
        # The next frame keeps its image (rendering a new one now would make it late) but
        # loses its audio: from the next tick on, nothing queued is heard.
        self._rewind(1)
        if self._pending:
            head = self._pending[0]
            a = head.audio
            head.audio = FrameAudio(
                a.frame_index, a.audio_start, a.audio_end, np.zeros_like(a.samples), ()
            )
        confirmed = self._speech.interrupt()
        self._resampler = None
        self._emit_all(self._speech.take_events())
        self._emit(confirmed)
        self._fill()

    def set_listening(self, active: bool) -> None:
        self._last_activity = self.clock.now()
        self._listening = active

    def keep_alive(self) -> None:
        self._last_activity = self.clock.now()
        self._emit(protocol.keep_alive_ack())

    # --- frames ----------------------------------------------------------------------------

    def _rewind(self, keep: int) -> None:
        """Throw away scheduled frames after the first `keep`; the driver goes back with them."""
        if len(self._pending) <= keep:
            return
        dropped = list(self._pending)[keep:]
        for p in dropped:
            if p.job is not None:
                p.job.cancel()
        self._driver = dropped[0].driver_before
        self._next_schedule = dropped[0].audio.frame_index
        for _ in dropped:
            self._pending.pop()

    def _redo_idle_frames(self) -> None:
        # New audio would otherwise wait behind frames already scheduled as silence.
        if len(self._pending) > 1 and not any(p.audio.speaking for p in list(self._pending)[1:]):
            self._rewind(1)

    def _submit(
        self, frame_index: int, params: np.ndarray, window: np.ndarray | None = None
    ) -> RenderJob | None:
        try:
            return self.worker.submit(
                self.renderer, params, self._pacer.expected(frame_index), window
            )
        except (WorkerFull, WorkerClosed):
            return None

    def _hold_for_window(self) -> bool:
        """The next frame's audio window has not all arrived, more may come, and a frame is
        still scheduled to show meanwhile."""
        return (
            self._window_samples > 0
            and bool(self._pending)
            and self._speech.open_utterance_id is not None
            and 0 < self._speech.unscheduled_samples < self._window_samples
        )

    def _window(self, audio: FrameAudio) -> np.ndarray | None:
        """Frame samples then look-ahead, float32 [audio_window_samples]; silence past the end."""
        if not self._window_samples:
            return None
        own = audio.samples[: self._window_samples]
        ahead = self._speech.peek(self._window_samples - len(own))
        window = np.zeros(self._window_samples, dtype=np.float32)
        window[: len(own)] = own
        window[len(own) : len(own) + len(ahead)] = ahead
        return window / 32768.0

    def _lookahead(self, frame_index: int) -> list[np.ndarray]:
        n = getattr(self._driver, "lookahead_frames", 0)
        if not n:
            return []
        start = frame_sample_range(frame_index + 1, self.options.fps)[0]
        end = frame_sample_range(frame_index + n, self.options.fps)[1]
        ahead = self._speech.peek(end - start).astype(np.float32) / 32768.0
        frames = []
        for i in range(1, n + 1):
            a, b = frame_sample_range(frame_index + i, self.options.fps)
            part = ahead[a - start : b - start]
            if not len(part):
                break
            frames.append(part)
        return frames

    def _fill(self) -> None:
        if self._closed:
            return
        for p in self._pending:
            if p.job is None:
                p.job = self._submit(p.audio.frame_index, p.params, p.window)
        while len(self._pending) < self.options.ahead_frames:
            if (
                len(self._pending) >= self.options.idle_ahead_frames
                and not self._speech.unscheduled_samples
            ):
                break
            if self._hold_for_window():
                break
            n = self._next_schedule
            before = copy.deepcopy(self._driver)
            audio = self._speech.schedule(n)
            self._emit_all(self._speech.take_events())
            current = audio.samples.astype(np.float32) / 32768.0
            params = self._driver.step(current, self._lookahead(n), listening=self._listening)
            window = self._window(audio)
            job = self._submit(n, params, window)
            self._pending.append(_Pending(audio, params, job, before, window))
            self._next_schedule = n + 1

    async def _pace(self) -> None:
        try:
            await self._first_frame()
            while True:
                tick = await self._pacer.next_tick()
                await self._publish(tick)
                self._fill()
        except RenderFailed as exc:
            self.emit_error(E_RENDER_FAILED, f"The renderer failed: {exc}")
            self._request_end("error")

    async def _first_frame(self) -> None:
        """The clock starts once frame 0 exists, so the first tick never has to repeat nothing."""
        while True:
            self._fill()
            job = self._pending[0].job
            if job is None:
                await asyncio.sleep(0.01)
                continue
            await asyncio.wait([job.future])
            if job.future.cancelled():
                continue  # an interrupt re-scheduled frame 0
            if job.future.exception() is not None:
                raise RenderFailed(str(job.future.exception()))
            return

    async def _publish(self, tick: Any) -> None:
        if not self._pending:
            self._fill()
        p = self._pending.popleft()
        fut = p.job.future if p.job is not None else None
        late = tick.late
        render_ms = 0.0
        if fut is not None and fut.done() and not fut.cancelled():
            exc = fut.exception()
            if exc is not None:
                raise RenderFailed(str(exc))
            result = fut.result()
            self._last_rgb = result.image
            render_ms = result.render_ms
        else:
            if p.job is not None:
                p.job.cancel()
            late = True
            self.frames_repeated += 1
        assert self._last_rgb is not None
        frame = PublishedFrame(
            session_id=self.session_id,
            frame_index=p.audio.frame_index,
            pts_ms=tick.pts_ms,
            rgb=self._last_rgb,
            samples=p.audio.samples,
            audio_start=p.audio.audio_start,
            audio_end=p.audio.audio_end,
            speaking=p.audio.speaking,
            late=late,
            render_ms=render_ms,
            queue_frames=sum(1 for q in self._pending if q.job is not None and q.job.future.done()),
        )
        self.frames_published += 1
        self.frames_late += late
        for sink in list(self.sinks):
            await sink.publish(frame)
        self._speech.publish(p.audio, tick.pts_ms, tick.pts_end_ms)
        self._pts_ms = tick.pts_end_ms
        self._emit_all(self._speech.take_events())

    def add_sink(self, sink: Sink) -> None:
        self.sinks.append(sink)

    def remove_sink(self, sink: Sink) -> None:
        if sink in self.sinks:
            self.sinks.remove(sink)

    # --- timers ----------------------------------------------------------------------------

    async def _watch(self) -> None:
        opts = self.options
        while True:
            await self.clock.sleep_until(self.clock.now() + opts.watch_interval_s)
            now = self.clock.now()
            if self._expires_at is not None and now >= self._expires_at:
                self._request_end("expired")
            elif self._detached_at is not None and now - self._detached_at >= (
                opts.reconnect_grace_s
            ):
                self._request_end("websocket_closed")
            elif (
                opts.idle_timeout_s is not None
                and not self._speech.buffered_samples
                and now - self._last_activity >= opts.idle_timeout_s
            ):
                self._request_end("idle_timeout")
