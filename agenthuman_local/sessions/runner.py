"""One started session's media loop: speech queue → driver → render worker → pacer → sinks.

The runner owns two named tasks (`session:<id>:pace`, `session:<id>:watch`) and nothing else
that runs. Each tick publishes exactly one frame with exactly its audio. If a frame's image is
not ready at its tick the previous image is shown with the frame's own audio (late), so audio and
video never drift. An interrupt silences the next frame, throws away the ones after it, rewinds
the driver to that frame and continues from there with silence, so no queued speech is heard
after the next tick and the face closes its mouth from where it was rather than jumping.

Which frames are scheduled ahead of the clock, their render jobs, and when the first speaking
frame after silence is published before its tick (`early`) are `sessions.schedule`.

Events (replies and server events alike) leave through one ordered path, `sessions.events`: the
timeline, then the attached socket or an outbox, then the event listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from agenthuman_local import protocol
from agenthuman_local.audio import SAMPLE_RATE_HZ, AudioIn
from agenthuman_local.clock import Clock
from agenthuman_local.engine.base import FrameDriver, Renderer
from agenthuman_local.sessions.clock import Pacer
from agenthuman_local.sessions.events import EventPath, Listener
from agenthuman_local.sessions.outbox import EventLink
from agenthuman_local.sessions.schedule import FrameSchedule
from agenthuman_local.sessions.speech import BufferFull, SpeechQueue, samples_to_ms
from agenthuman_local.sessions.timeline import Timeline
from agenthuman_local.transports.base import PublishedFrame, Sink

if TYPE_CHECKING:
    from agenthuman_local.engine.worker import RenderWorker

log = logging.getLogger(__name__)


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
    watch_interval_s: float = 0.1
    max_outbox_events: int = 4096


class RenderFailed(Exception):
    pass


class SessionRunner:
    def __init__(
        self,
        options: RunnerOptions,
        *,
        renderer: Renderer,
        worker: RenderWorker,
        driver: FrameDriver,
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
        self._on_end = on_end
        self._speech = SpeechQueue(
            options.fps,
            max_buffer_s=options.max_buffer_s,
            silence_gap_ms=options.silence_gap_ms,
        )
        self._pacer = Pacer(options.fps, clock)
        self._schedule = FrameSchedule(
            self._speech,
            options.fps,
            renderer,
            driver,
            worker,
            self._pacer,
            ahead_frames=options.ahead_frames,
            idle_ahead_frames=options.idle_ahead_frames,
            on_events=self._emit_all,
        )
        self._pending = self._schedule.pending  # the same deque, oldest first
        self._audio_in = AudioIn()
        self._listening = False
        self._last_rgb: np.ndarray | None = None
        self._pts_ms = 0
        self._events = EventPath(
            options.session_id, self.timeline, clock, max_outbox_events=options.max_outbox_events
        )
        self._last_activity = clock.now()
        self._first_audio_at: float | None = None
        self._pace_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._end_reason: str | None = None
        self._closed = False
        self.frames_published = 0
        self.frames_late = 0
        self.frames_repeated = 0
        # (output, "shed" | "repeated") → frames, as the outputs report them (`output_loss`).
        self.output_losses: dict[tuple[str, str], int] = {}
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
        self._schedule.clear()
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
        self._events.attach(link)

    def detach(self, link: EventLink, unsent: list[dict[str, Any]] | None = None) -> None:
        """The socket closed; `unsent` are events it took but never sent (they go first)."""
        self._events.detach(link, unsent)

    @property
    def attached(self) -> bool:
        return self._events.attached

    def add_event_listener(self, listener: Listener) -> None:
        """`listener(event)` for every event from now on, on the loop; it must not block."""
        self._events.add_listener(listener)

    def remove_event_listener(self, listener: Listener) -> None:
        self._events.remove_listener(listener)

    def _emit(self, event: dict[str, Any]) -> None:
        self._events.emit(self._pts_ms, event)

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
        samples = self._audio_in.samples(raw, rate, self._speech.open_utterance_id is None)
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
        self._schedule.redo_idle(keep=self._schedule.keep_before_speech())
        self._fill()
        self._schedule.check_early()

    def speak_end(self) -> None:
        self._speech.end_utterance()
        self._audio_in.reset()
        self._emit_all(self._speech.take_events())

    def interrupt(self) -> None:
        """No queued speech is heard from the next tick on; the mouth closes from there."""
        self._last_activity = self.clock.now()
        if any(p.audio.speaking for p in self._pending):
            # The next frame keeps its image (rendering a new one now would make it late) but
            # loses its audio: from the next tick on, nothing queued is heard. With no frame
            # scheduled to speak there is nothing to take back: the frames stay as rendered.
            self._schedule.rewind(1)
            self._schedule.silence_next()
        confirmed = self._speech.interrupt()
        self._audio_in.reset()
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

    def _fill(self) -> None:
        if self._closed:
            return
        self._schedule.fill(self._listening)

    async def _pace(self) -> None:
        try:
            await self._first_frame()
            while True:
                self._schedule.check_early()
                tick = await self._pacer.next_tick(self._schedule.early)
                self._schedule.early.clear()
                await self._publish(tick)
                self._fill()
        except RenderFailed as exc:
            self.emit_error(protocol.E_RENDER_FAILED, f"The renderer failed: {exc}")
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
            queue_frames=self._schedule.ready(),
        )
        self.frames_published += 1
        self.frames_late += late
        self._schedule.last_speaking = p.audio.speaking
        for sink in list(self.sinks):
            await sink.publish(frame)
        self._speech.publish(p.audio, tick.pts_ms, tick.pts_end_ms)
        self._pts_ms = tick.pts_end_ms
        self._emit_all(self._speech.take_events())

    def add_sink(self, sink: Sink) -> None:
        """An output; one that can shed or repeat pictures (`report_losses_to`) reports each
        loss back here."""
        self.sinks.append(sink)
        report_losses_to = getattr(sink, "report_losses_to", None)
        if report_losses_to is not None:
            report_losses_to(self.output_loss)

    def output_loss(self, output: str, what: str, frame_index: int, pts_ms: int) -> None:
        """An output shed a frame's picture (`shed`) or recorded it as a repeat of the previous
        one (`repeated`): counted (`output_losses`, read by the metrics) and written to the
        timeline as `{"t": "event", "type": "output.shed" | "output.repeated", "output",
        "frame_index"}` — the timeline only, not the socket."""
        key = (output, what)
        self.output_losses[key] = self.output_losses.get(key, 0) + 1
        self.timeline.event(
            pts_ms, {"type": f"output.{what}", "output": output, "frame_index": frame_index}
        )

    def remove_sink(self, sink: Sink) -> None:
        if sink in self.sinks:
            self.sinks.remove(sink)

    # --- timers ----------------------------------------------------------------------------

    async def _watch(self) -> None:
        """The reconnect grace and the idle timeout; the session's expiry (and the connect
        timeout) are the manager's timers."""
        opts = self.options
        while True:
            await self.clock.sleep_until(self.clock.now() + opts.watch_interval_s)
            now = self.clock.now()
            detached_at = self._events.detached_at
            if detached_at is not None and now - detached_at >= opts.reconnect_grace_s:
                self._request_end("websocket_closed")
            elif (
                opts.idle_timeout_s is not None
                and not self._speech.buffered_samples
                and now - self._last_activity >= opts.idle_timeout_s
            ):
                self._request_end("idle_timeout")
