"""The local viewer's fan-out: each session's frames, audio and state to every open viewer page.

One `ViewerHub` per app. A session publishes into it without ever waiting on a viewer: each
connected page has its own bounded queue, and when a page reads slowly (or not at all) its
oldest messages are dropped and counted. JPEG encoding happens only while someone watches the
session (`has_viewers`), on the hub's own worker thread, never on the loop.

Wire format, per viewer socket (SPEC §8's media header, `protocol.pack_media`):
- binary: `kind u8 (1 = JPEG, 2 = PCM s16le mono, 4 = JPEG patch), reserved u8[3], pts_ms u64,
  frame_index u32`, little-endian, then the payload. Pictures are key frames (1) and patches
  (4: the rectangle that changed since the last picture, `transports.patches`); a page gets a
  key frame first, after it dropped a picture, and at least once a second;
- text: JSON objects — `format` (size, fps, sample rate; first message, and on change), `state`
  (the session's state, remembered so a page opened late shows it), `clock` (`pts_ms` with the
  server's `wall_ms` at publication, about once a second, for the latency readout), and any
  `publish_event` payload.

Who may watch is decided by the HTTP handlers (`api/viewer.py`), not here.

A session reaches the hub through `ViewerOutput` (its frames, speaking state and room state),
whose frames go through `ViewerSink` (a `QueuedSink`: nothing is queued while no one watches).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from agenthuman_local import protocol
from agenthuman_local.protocol import (
    KIND_AUDIO_PCM,
    KIND_VIDEO_JPEG,
    KIND_VIDEO_JPEG_PATCH,
    pack_media,
)
from agenthuman_local.transports.base import LossListener, MediaFrame, QueuedSink, demote_thread
from agenthuman_local.transports.patches import PatchEncoder

if TYPE_CHECKING:
    from agenthuman_local.sessions.runner import SessionRunner
    from agenthuman_local.transports.base import PublishedFrame

Message = bytes | str

_CLOCK_EVERY_S = 1.0
# Remembered per session for late viewers; bounded so ended sessions cannot pile up.
_MAX_REMEMBERED_SESSIONS = 1024
_PICTURES = (KIND_VIDEO_JPEG, KIND_VIDEO_JPEG_PATCH)


class Viewer:
    """One open viewer page: a bounded queue that drops its oldest message when full."""

    def __init__(self, session_id: str, max_messages: int) -> None:
        self.session_id = session_id
        self.dropped = 0
        # The page has no picture to patch: it opened, or a picture was dropped from its queue.
        self.needs_key = True
        self._queue: collections.deque[Message] = collections.deque(maxlen=max_messages)
        self._ready = asyncio.Event()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def has_room(self) -> bool:
        """At most half its queue is taken."""
        return 2 * len(self._queue) <= (self._queue.maxlen or 0)

    @property
    def pending(self) -> int:
        """Messages queued and not yet taken."""
        return len(self._queue)

    def put(self, message: Message) -> None:
        if self._closed:
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
            oldest = self._queue[0]
            if isinstance(oldest, bytes) and oldest[0] in _PICTURES:
                self.needs_key = True
        self._queue.append(message)
        self._ready.set()

    async def get(self) -> Message | None:
        """The next message; None once the viewer is closed."""
        while not self._queue:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        if self._closed:
            return None
        return self._queue.popleft()

    def close(self) -> None:
        self._closed = True
        self._queue.clear()
        self._ready.set()


class ViewerHub:
    def __init__(
        self,
        *,
        max_messages: int = 64,
        jpeg_quality: int = 80,
    ) -> None:
        self.frames_encoded = 0
        self.key_frames = 0
        self._max_messages = max_messages
        self._jpeg_quality = jpeg_quality
        self._viewers: dict[str, set[Viewer]] = {}
        self._formats: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._states: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._last_clock: dict[str, float] = {}
        # Per watched session, used only on the encoder thread (one frame of a session at a time).
        self._pictures: dict[str, PatchEncoder] = {}
        # Demoted: under CPU contention rendering comes first and the viewer sheds pictures.
        self._encoder = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="viewer-jpeg", initializer=demote_thread
        )
        self._closed = False

    # -- viewers ------------------------------------------------------------------------------

    def connect(self, session_id: str) -> Viewer:
        """A new viewer of `session_id`, primed with the session's format and state."""
        if self._closed:
            raise RuntimeError("ViewerHub is closed")
        viewer = Viewer(session_id, self._max_messages)
        for remembered in (self._formats, self._states):
            if session_id in remembered:
                viewer.put(remembered[session_id])
        self._viewers.setdefault(session_id, set()).add(viewer)
        return viewer

    def disconnect(self, viewer: Viewer) -> None:
        viewer.close()
        viewers = self._viewers.get(viewer.session_id)
        if viewers is not None:
            viewers.discard(viewer)
            if not viewers:
                del self._viewers[viewer.session_id]
                self._last_clock.pop(viewer.session_id, None)
                self._pictures.pop(viewer.session_id, None)

    def has_viewers(self, session_id: str) -> bool:
        return bool(self._viewers.get(session_id))

    def viewer_count(self, session_id: str) -> int:
        return len(self._viewers.get(session_id, ()))

    # -- publishing (never waits on a viewer) ------------------------------------------------

    def _fan_out(self, session_id: str, message: Message) -> None:
        for viewer in self._viewers.get(session_id, ()):
            viewer.put(message)

    @staticmethod
    def _remember(table: collections.OrderedDict[str, str], session_id: str, text: str) -> None:
        table[session_id] = text
        table.move_to_end(session_id)
        while len(table) > _MAX_REMEMBERED_SESSIONS:
            table.popitem(last=False)

    def publish_state(self, session_id: str, state: str, reason: str | None = None) -> None:
        """The session's state (`connecting`, `joined_room`, `ended`, …), kept for late pages."""
        text = json.dumps({"type": "state", "state": state, "reason": reason})
        self._remember(self._states, session_id, text)
        self._fan_out(session_id, text)

    def publish_event(self, session_id: str, event: Mapping[str, Any]) -> None:
        """Any JSON object for the page (it shows the latest one); not kept for late pages."""
        if self.has_viewers(session_id):
            self._fan_out(session_id, json.dumps(dict(event)))

    def publish_media(
        self, session_id: str, kind: int, pts_ms: int, frame_index: int, payload: bytes
    ) -> None:
        if self.has_viewers(session_id):
            self._fan_out(session_id, pack_media(kind, pts_ms, frame_index, payload))

    def _set_format(self, session_id: str, width: int, height: int, sample_rate_hz: int) -> None:
        text = json.dumps(
            {"type": "format", "width": width, "height": height, "sample_rate_hz": sample_rate_hz}
        )
        if self._formats.get(session_id) != text:
            self._remember(self._formats, session_id, text)
            self._fan_out(session_id, text)

    async def publish_frame(
        self,
        session_id: str,
        frame_index: int,
        pts_ms: int,
        rgb: np.ndarray,
        pcm: bytes,
        *,
        sample_rate_hz: int,
    ) -> bool:
        """Encode and fan out one frame and its audio; False (and no work) with no viewers."""
        if not self.has_viewers(session_id) or self._closed:
            return False
        height, width = rgb.shape[:2]
        self._set_format(session_id, width, height, sample_rate_hz)
        # A page that lost its picture asks for a key frame once it has room for one: a page
        # that does not keep up never makes every picture a key frame (it waits for the
        # periodic one).
        key = any(v.needs_key and v.has_room for v in self._viewers[session_id])
        pictures = self._pictures.get(session_id)
        if pictures is None:
            pictures = self._pictures[session_id] = PatchEncoder(self._jpeg_quality)
        loop = asyncio.get_running_loop()
        kind, picture = await loop.run_in_executor(
            self._encoder, functools.partial(pictures.encode, frame_index, rgb, key=key)
        )
        self.frames_encoded += 1
        self.key_frames += kind == KIND_VIDEO_JPEG
        now = time.time()
        if now - self._last_clock.get(session_id, 0.0) >= _CLOCK_EVERY_S:
            self._last_clock[session_id] = now
            clock = {"type": "clock", "pts_ms": pts_ms, "wall_ms": round(now * 1000)}
            self._fan_out(session_id, json.dumps(clock))
        self.publish_media(session_id, kind, pts_ms, frame_index, picture)
        if kind == KIND_VIDEO_JPEG:
            for viewer in self._viewers.get(session_id, ()):
                viewer.needs_key = False  # the key frame is the newest message it holds
        if pcm:
            self.publish_media(session_id, KIND_AUDIO_PCM, pts_ms, frame_index, pcm)
        return True

    async def aclose(self) -> None:
        """Close every viewer (their sockets then close) and the encoder. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for viewers in list(self._viewers.values()):
            for viewer in list(viewers):
                self.disconnect(viewer)
        await asyncio.to_thread(self._encoder.shutdown, wait=True)


class ViewerSink(QueuedSink[MediaFrame]):
    """Frames to the session's viewers: nothing is queued or encoded while no one watches.

    When the encoder falls behind the newest frame wins: the skipped frames' pictures are shed
    and their audio still goes to the pages, in order, so the page's audio clock never skips.
    """

    def __init__(self, hub: ViewerHub, session_id: str, *, max_frames: int = 4) -> None:
        super().__init__(f"viewer:{session_id}", max_frames, shed=True, output="viewer")
        self.hub = hub
        self.session_id = session_id

    async def publish(self, frame: MediaFrame) -> None:
        if self.hub.has_viewers(self.session_id):
            await super().publish(frame)

    async def _write(self, frame: MediaFrame) -> None:
        await self.hub.publish_frame(
            self.session_id,
            frame.frame_index,
            frame.pts_ms,
            frame.rgb,
            frame.pcm,
            sample_rate_hz=frame.sample_rate_hz,
        )

    def _shed(self, frame: MediaFrame) -> None:
        pcm = frame.pcm
        if pcm:
            self.hub.publish_media(
                self.session_id, KIND_AUDIO_PCM, frame.pts_ms, frame.frame_index, pcm
            )


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

    def report_losses_to(self, listener: LossListener) -> None:
        self.frames.report_losses_to(listener)

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
