"""The outputs as session Sinks: `async publish(frame)` that returns at once, and `aclose()`.

A frame is anything shaped like `sessions.sinks.PublishedFrame` (`MediaFrame` below): this
module reads its attributes and imports nothing from the session layer.

    runner.add_sink(RecorderSink(Recorder(recording_path(data_dir, sid), w, h, fps, rate)))
    runner.add_sink(ViewerSink(hub, sid))
    runner.add_sink(DailySink(transport))      # after `await transport.start()`

Each keeps its own bounded queue and drops its own oldest frames (`dropped`), so none of them
slows the session.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import Protocol

import numpy as np

from agenthuman_local.recording import Recorder
from agenthuman_local.transports.daily import DailyTransport
from agenthuman_local.transports.viewer import ViewerHub

log = logging.getLogger(__name__)


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


class RecorderSink:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    @property
    def dropped(self) -> int:
        return self.recorder.frames_dropped

    async def publish(self, frame: MediaFrame) -> None:
        self.recorder.submit(frame.frame_index, frame.rgb, frame.pcm)

    async def aclose(self) -> None:
        await self.recorder.aclose()


class DailySink:
    """Frames to a started `DailyTransport`; its own pump paces them into the room."""

    def __init__(self, transport: DailyTransport) -> None:
        self.transport = transport

    @property
    def dropped(self) -> int:
        return self.transport.frames_dropped

    async def publish(self, frame: MediaFrame) -> None:
        if frame.sample_rate_hz != self.transport.sample_rate_hz:
            raise ValueError(
                f"frame audio is {frame.sample_rate_hz} Hz, the room's track "
                f"{self.transport.sample_rate_hz} Hz"
            )
        self.transport.publish(frame.rgb, frame.pcm)

    async def aclose(self) -> None:
        await self.transport.aclose()


class ViewerSink:
    """Frames to the session's viewers: nothing is queued or encoded while no one watches."""

    def __init__(self, hub: ViewerHub, session_id: str, *, max_frames: int = 4) -> None:
        self.hub = hub
        self.session_id = session_id
        self.dropped = 0
        self._queue: collections.deque[MediaFrame] = collections.deque(maxlen=max_frames)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def publish(self, frame: MediaFrame) -> None:
        if self._closed or not self.hub.has_viewers(self.session_id):
            return
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._drain(), name=f"viewer:{self.session_id}:encode"
            )
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(frame)
        self._wake.set()

    async def _drain(self) -> None:
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            f = self._queue.popleft()
            try:
                await self.hub.publish_frame(
                    self.session_id,
                    f.frame_index,
                    f.pts_ms,
                    f.rgb,
                    f.pcm,
                    sample_rate_hz=f.sample_rate_hz,
                )
            except Exception:  # one bad frame must not end the viewer output
                log.exception("viewer of %s: frame %d failed", self.session_id, f.frame_index)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
