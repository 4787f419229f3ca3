"""The outputs as session Sinks: `async publish(frame)` that returns at once, and `aclose()`.

A frame is anything shaped like `sessions.sinks.PublishedFrame` (`MediaFrame` below): this
module reads its attributes and imports nothing from the session layer.

    runner.add_sink(RecorderSink(Recorder(recording_path(data_dir, sid), w, h, fps, rate)))
    runner.add_sink(ViewerSink(hub, sid))
    runner.add_sink(DailySink(transport))      # after `await transport.start()`

Each keeps its own bounded queue and drops its own oldest frames (`dropped`), so none of them
slows the session; `ViewerSink` uses the shared `sinkqueue.QueuedSink` for that.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from agenthuman_local.recording import Recorder
from agenthuman_local.sinkqueue import QueuedSink
from agenthuman_local.transports.daily import DailyTransport
from agenthuman_local.transports.viewer import ViewerHub


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


class ViewerSink(QueuedSink[MediaFrame]):
    """Frames to the session's viewers: nothing is queued or encoded while no one watches."""

    def __init__(self, hub: ViewerHub, session_id: str, *, max_frames: int = 4) -> None:
        super().__init__(f"viewer:{session_id}", max_frames)
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
