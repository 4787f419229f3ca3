"""The local outputs of every live session (SPEC §10): recording, viewer and metrics.

`outputs_hook(settings, hub, metrics)` is a media hook (`api.ws.media_hooks_key`): when a
session's media runner is made it adds, as sinks of that runner,

- a `RecorderSink` when `recording.enabled`: `recordings/<id>/recording.mp4`, beside the
  session's `timeline.jsonl`;
- a `ViewerOutput`: frames to the `ViewerHub` (JPEG-encoded only while a page watches) and the
  page's state line — `speaking` / `idle` as the published frames change, `ended (reason)`
  when the session ends, and beside it the room's state: each `session.state` the runner emits
  (`connecting`, `joined_room`, `room_error`, seen through `runner.add_event_listener`) goes
  to the page as `{"type": "room", "state", "reason"}`, again to each page opened later;
- a `MetricsOutput`: every published frame, the runner's drops, its first-frame latency and
  the speech audio it received.

Each sink returns at once from `publish`: the recorder and the viewer keep bounded queues that
drop their own oldest frames, the metrics only count. None raises into the session's pacer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from agenthuman_local import protocol
from agenthuman_local.config import Settings
from agenthuman_local.engine.base import SAMPLE_RATE_HZ
from agenthuman_local.metrics import Metrics
from agenthuman_local.recording import Recorder, recording_path
from agenthuman_local.transports.sinks import RecorderSink, ViewerSink
from agenthuman_local.transports.viewer import ViewerHub

if TYPE_CHECKING:
    from agenthuman_local.sessions.live import LiveSession, MediaHook
    from agenthuman_local.sessions.runner import SessionRunner
    from agenthuman_local.sessions.sinks import PublishedFrame

log = logging.getLogger(__name__)

# Speech is counted at 16 kHz s16le, as the runner queues it: 32 bytes a millisecond.
_BYTES_PER_MS = SAMPLE_RATE_HZ * 2 // 1000


class ViewerOutput:
    """The session's frames, its speaking state and its room's state to the viewer pages."""

    def __init__(self, hub: ViewerHub, session_id: str, runner: SessionRunner) -> None:
        self.hub = hub
        self.session_id = session_id
        self.frames = ViewerSink(hub, session_id)
        self._runner = runner
        self._speaking: bool | None = None
        self._room: dict[str, Any] | None = None  # the last room state, for pages opened later
        self._viewers = 0
        self._closed = False
        runner.add_event_listener(self._on_event)

    def _on_event(self, event: dict[str, Any]) -> None:
        """On the loop, for each runner event: never waits (the hub's queues are bounded)."""
        if self._closed or event.get("type") != protocol.SESSION_STATE:
            return
        self._room = {"type": "room", "state": event["state"], "reason": event.get("reason")}
        self.hub.publish_event(self.session_id, self._room)
        self._viewers = self.hub.viewer_count(self.session_id)  # these pages have it

    async def publish(self, frame: PublishedFrame) -> None:
        viewers = self.hub.viewer_count(self.session_id)
        if self._room is not None and viewers > self._viewers:
            # A page opened since the room's state changed (the hub keeps only the main state).
            self.hub.publish_event(self.session_id, self._room)
        self._viewers = viewers
        if frame.speaking != self._speaking:
            self._speaking = frame.speaking
            # Remembered by the hub, so a page opened mid-sentence shows it too.
            self.hub.publish_state(self.session_id, "speaking" if frame.speaking else "idle")
        await self.frames.publish(frame)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._runner.remove_event_listener(self._on_event)
        await self.frames.aclose()
        self.hub.publish_state(self.session_id, "ended", self._runner.end_reason)


class MetricsOutput:
    """Counts what the session publishes; the runner's own counters give drops and audio."""

    def __init__(self, metrics: Metrics, session_id: str, runner: SessionRunner) -> None:
        self.metrics = metrics
        self.session_id = session_id
        self._runner = runner
        self._dropped = 0
        self._audio_ms = 0
        self._latency_seen = False
        self._closed = False

    async def publish(self, frame: PublishedFrame) -> None:
        self.metrics.frame_published(self.session_id, frame.late, frame.render_ms)
        self._sync()

    def _sync(self) -> None:
        stats = self._runner.stats()
        dropped = stats["frames_dropped"] - self._dropped
        if dropped > 0:
            self.metrics.frame_dropped(self.session_id, dropped)
            self._dropped += dropped
        audio_ms = stats["audio_ms_received"] - self._audio_ms
        if audio_ms > 0:
            self.metrics.audio_bytes_received(audio_ms * _BYTES_PER_MS)
            self._audio_ms += audio_ms
        latency_ms = stats["first_frame_latency_ms"]
        if latency_ms is not None and not self._latency_seen:
            self._latency_seen = True
            self.metrics.first_frame_latency(latency_ms)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sync()  # what arrived after the last frame
        self.metrics.forget_session(self.session_id)


def outputs_hook(settings: Settings, hub: ViewerHub, metrics: Metrics) -> MediaHook:
    """The media hook that attaches the local outputs to each session's runner."""

    async def attach(live: LiveSession, runner: SessionRunner) -> None:
        session_id = live.session_id
        spec = live.spec
        if settings.recording.enabled and spec is not None:
            try:
                recorder = await asyncio.to_thread(
                    Recorder,
                    recording_path(settings.data_dir, session_id),
                    spec.width,
                    spec.height,
                    spec.fps,
                    SAMPLE_RATE_HZ,  # the published frames' audio rate, whatever the socket's
                )
            except OSError:  # a full or read-only disk costs the recording, not the session
                log.exception("session %s: recording could not start", session_id)
            else:
                runner.add_sink(RecorderSink(recorder))
        runner.add_sink(ViewerOutput(hub, session_id, runner))
        runner.add_sink(MetricsOutput(metrics, session_id, runner))

    return attach
