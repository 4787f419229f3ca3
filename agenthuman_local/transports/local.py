"""The local outputs of every live session (SPEC §10): recording, viewer and metrics.

Three output factories (`sessions.live.OutputFactory`; `app.live_ctx` lists them with
Daily's): when a session's media runner is made, each makes one sink of that runner —

- `recording_output(settings)`: a `RecorderSink` when `recording.enabled`:
  `recordings/<id>/recording.mp4`, beside the session's `timeline.jsonl`;
- `viewer_output(hub)`: a `ViewerOutput` (`transports.viewer`): frames to the `ViewerHub`
  (JPEG-encoded only while a page watches) and the page's state line — `speaking` / `idle` as
  the published frames change, `ended (reason)` when the session ends, and beside it the room's
  state: each `session.state` the runner emits (`connecting`, `joined_room`, `room_error`, seen
  through `runner.add_event_listener`) goes to the page as `{"type": "room", "state",
  "reason"}`, again to each page opened later;
- `metrics_output(metrics)`: a `MetricsOutput`: every published frame, the runner's drops, the
  pictures its outputs shed or repeated under load, its first-frame latency and the speech
  audio it received.

Each sink returns at once from `publish`: the viewer keeps a bounded queue and, behind, sheds
pictures (the newest wins, audio kept); the recorder never drops a frame (behind, it repeats the
previous picture); the metrics only count. None raises into the session's pacer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from agenthuman_local.audio import SAMPLE_RATE_HZ
from agenthuman_local.config import Settings
from agenthuman_local.metrics import Metrics
from agenthuman_local.paths import recording_path
from agenthuman_local.transports.recording import Recorder, RecorderSink
from agenthuman_local.transports.viewer import ViewerHub, ViewerOutput

if TYPE_CHECKING:
    from agenthuman_local.sessions.live import LiveSession, OutputFactory
    from agenthuman_local.sessions.runner import SessionRunner
    from agenthuman_local.transports.base import PublishedFrame, Sink

log = logging.getLogger(__name__)

# Speech is counted at 16 kHz s16le, as the runner queues it: 32 bytes a millisecond.
_BYTES_PER_MS = SAMPLE_RATE_HZ * 2 // 1000


class MetricsOutput:
    """Counts what the session publishes; the runner's own counters give drops and audio."""

    def __init__(self, metrics: Metrics, session_id: str, runner: SessionRunner) -> None:
        self.metrics = metrics
        self.session_id = session_id
        self._runner = runner
        self._dropped = 0
        self._losses: dict[tuple[str, str], int] = {}
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
        for (output, kind), n in list(self._runner.output_losses.items()):
            new = n - self._losses.get((output, kind), 0)
            if new > 0:
                self.metrics.output_frames_lost(output, kind, new)
                self._losses[(output, kind)] = n
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


def recording_output(settings: Settings) -> OutputFactory:
    """The session's MP4 when `recording.enabled` (a full or read-only disk: none, logged)."""

    async def make(live: LiveSession, runner: SessionRunner) -> Sink | None:
        spec = live.spec
        if not settings.recording.enabled or spec is None:
            return None
        try:
            recorder = await asyncio.to_thread(
                Recorder,
                recording_path(settings.data_dir, live.session_id),
                spec.width,
                spec.height,
                spec.fps,
                SAMPLE_RATE_HZ,  # the published frames' audio rate, whatever the socket's
            )
        except OSError:  # a full or read-only disk costs the recording, not the session
            log.exception("session %s: recording could not start", live.session_id)
            return None
        return RecorderSink(recorder)

    return make


def viewer_output(hub: ViewerHub) -> OutputFactory:
    async def make(live: LiveSession, runner: SessionRunner) -> Sink | None:
        return ViewerOutput(hub, live.session_id, runner)

    return make


def metrics_output(metrics: Metrics) -> OutputFactory:
    async def make(live: LiveSession, runner: SessionRunner) -> Sink | None:
        return MetricsOutput(metrics, live.session_id, runner)

    return make
