"""The server's Prometheus metrics (SPEC §10), in a registry of their own per app.

Each app makes one `Metrics` (so tests get fresh counters, never the process-wide default
registry). The runner reports every published frame and drop, the WebSocket handler every audio
byte received; the app fills each device's load and the sessions by status (counted in the
store); `GET /metrics` serves `render()`. Gauges that are cheaper to read than to push can be
filled at scrape time by a refresher (`add_refresher`); figures that need an await (the store's
session counts) by an async refresher (`add_async_refresher`), which `GET /metrics` awaits
(`refresh`) before it renders. Per-session figures are not labels (sessions are unbounded):
the session's own `stats` (its runner's counters) give them.

Names: `agenthuman_sessions{status}`, `agenthuman_frames_published_total`,
`agenthuman_frames_late_total`, `agenthuman_frames_dropped_total`, `agenthuman_render_ms`,
`agenthuman_first_frame_latency_ms`, `agenthuman_audio_bytes_received_total`,
`agenthuman_device_sessions{device}`, `agenthuman_device_capacity{device}`,
`agenthuman_output_frames_lost_total{output, kind}` (kind `shed`: the viewer or socket output
skipped the frame's picture and sent its audio; `repeated`: the recording repeated the previous
picture with the frame's audio; the timeline has an `output.shed` / `output.repeated` event for
each), `agenthuman_renders_skipped_total{device}` (frames a render worker behind did not render
because they could no longer show at their tick; their sessions showed the previous picture,
counted late).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
SESSION_STATUSES = ("created", "started", "ended")
# A frame's budget is 40 ms at 25 fps: the buckets are fine around it.
RENDER_MS_BUCKETS = (1, 2, 5, 10, 15, 20, 25, 30, 35, 40, 50, 60, 80, 100, 150, 250, 500, 1000)
FIRST_FRAME_MS_BUCKETS = (10, 20, 30, 40, 50, 60, 80, 100, 150, 200, 300, 500, 1000, 2000)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._sessions = Gauge("agenthuman_sessions", "Sessions by status", ["status"], registry=r)
        self._published = Counter(
            "agenthuman_frames_published", "Frames published to the outputs", registry=r
        )
        self._late = Counter(
            "agenthuman_frames_late", "Published frames that missed their time", registry=r
        )
        self._dropped = Counter(
            "agenthuman_frames_dropped", "Frames dropped before publication", registry=r
        )
        self._output_losses = Counter(
            "agenthuman_output_frames_lost",
            "Frames an output published without their own picture under load:"
            " kind=shed (viewer, socket: picture skipped, audio sent),"
            " kind=repeated (recording: the previous picture again, with the frame's audio),"
            " kind=dropped (recording more than 4 s behind: its oldest queued frame lost)",
            ["output", "kind"],
            registry=r,
        )
        self._render_ms = Histogram(
            "agenthuman_render_ms",
            "Render time per frame, ms",
            buckets=RENDER_MS_BUCKETS,
            registry=r,
        )
        self._first_frame_ms = Histogram(
            "agenthuman_first_frame_latency_ms",
            "First audio chunk received to first speaking frame published, ms",
            buckets=FIRST_FRAME_MS_BUCKETS,
            registry=r,
        )
        self._audio_bytes = Counter(
            "agenthuman_audio_bytes_received", "Speech audio bytes received", registry=r
        )
        self._device_sessions = Gauge(
            "agenthuman_device_sessions", "Sessions on each device", ["device"], registry=r
        )
        self._device_capacity = Gauge(
            "agenthuman_device_capacity",
            "Session capacity of each device",
            ["device"],
            registry=r,
        )
        self._renders_skipped = Counter(
            "agenthuman_renders_skipped",
            "Frames a render worker behind skipped: they could not show at their tick",
            ["device"],
            registry=r,
        )
        self._skipped_seen: dict[str, int] = {}
        for status in SESSION_STATUSES:
            self._sessions.labels(status=status).set(0)
        self._refreshers: list[Callable[[], None]] = []
        self._async_refreshers: list[Callable[[], Awaitable[None]]] = []

    def frame_published(self, session_id: str, late: bool, render_ms: float) -> None:
        self._published.inc()
        self._render_ms.observe(render_ms)
        if late:
            self._late.inc()

    def frame_dropped(self, session_id: str, n: int = 1) -> None:
        self._dropped.inc(n)

    def output_frames_lost(self, output: str, kind: str, n: int = 1) -> None:
        self._output_losses.labels(output=output, kind=kind).inc(n)

    def first_frame_latency(self, ms: float) -> None:
        self._first_frame_ms.observe(ms)

    def audio_bytes_received(self, n: int) -> None:
        self._audio_bytes.inc(n)

    def set_sessions_by_status(self, counts: Mapping[str, int]) -> None:
        """Absolute counts; a status left out is 0."""
        for status in {*SESSION_STATUSES, *counts}:
            self._sessions.labels(status=status).set(counts.get(status, 0))

    def set_device_load(self, device: str, *, sessions: int, capacity: int) -> None:
        self._device_sessions.labels(device=device).set(sessions)
        self._device_capacity.labels(device=device).set(capacity)

    def set_renders_skipped(self, device: str, total: int) -> None:
        """The worker's own running count; the counter takes what is new since the last call."""
        new = total - self._skipped_seen.get(device, 0)
        if new > 0:
            self._renders_skipped.labels(device=device).inc(new)
            self._skipped_seen[device] = total

    def add_refresher(self, refresh: Callable[[], None]) -> None:
        """Called before each scrape, e.g. to copy the device pool's load into the gauges."""
        self._refreshers.append(refresh)

    def add_async_refresher(self, refresh: Callable[[], Awaitable[None]]) -> None:
        """Awaited by `refresh` (at scrape time); a failing one leaves its gauges as they were."""
        self._async_refreshers.append(refresh)

    async def refresh(self) -> None:
        for refresh in self._async_refreshers:
            try:
                await refresh()
            except Exception:
                log.exception("metrics refresher %r failed", refresh)

    def render(self) -> bytes:
        for refresh in self._refreshers:
            try:
                refresh()
            except Exception:
                log.exception("metrics refresher %r failed", refresh)
        return generate_latest(self.registry)
