"""A real Pipecat pipeline around `AgentHumanVideoService` for the Pipecat tests (and
`measure.py`): `run_pipeline` runs a script against a real run.py and returns what came out.

The output transport is a small subclass of Pipecat's own `BaseOutputTransport` that records
what it would send, with an audio device clock (each write waits for its audio to play, as the
framework's WebSocket transport simulates one); its media senders, live video queue and
bot-speaking detection are the framework's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from conftest import RunningServer
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    ErrorFrame,
    Frame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import TransportParams
from pipecat.workers.runner import WorkerRunner

from agenthuman_client.pipecat import AgentHumanVideoService

W, H, FPS, RATE = 256, 192, 25, 16000
FRAME_MS = 1000 // FPS
FRAME_SAMPLES = RATE // FPS


class RecordingOutput(BaseOutputTransport):
    """What a real output transport would send, with the time it would send it."""

    def __init__(self, params: TransportParams, ready_after_s: float = 0.0) -> None:
        super().__init__(params)
        self.ready_after_s = ready_after_s
        self.ready_at = 0.0
        self.audio: list[tuple[float, bytes]] = []
        self.video: list[tuple[float, OutputImageRawFrame]] = []
        self._next_audio_at = 0.0

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        if self.ready_after_s:
            self.create_task(self._ready_later(frame))
        else:
            await self._ready(frame)

    async def _ready_later(self, frame: StartFrame) -> None:
        await asyncio.sleep(self.ready_after_s)  # e.g. a WebRTC peer still connecting
        await self._ready(frame)

    async def _ready(self, frame: StartFrame) -> None:
        self.ready_at = time.perf_counter()
        await self.set_transport_ready(frame)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        """An audio device: chunks play back to back; one that comes more than 100 ms after
        the previous one ended (an underrun) starts when it comes. Recorded: when it plays."""
        now = time.perf_counter()
        if now > self._next_audio_at + 0.1:
            self._next_audio_at = now
        self.audio.append((self._next_audio_at, frame.audio))
        self._next_audio_at += len(frame.audio) / 2 / RATE
        # The write returns when the device has room: one chunk ahead.
        await asyncio.sleep(max(0.0, self._next_audio_at - 0.04 - time.perf_counter()))
        return True

    async def write_video_frame(self, frame: OutputImageRawFrame) -> bool:
        self.video.append((time.perf_counter(), frame))
        return True

    def audio_samples(self) -> np.ndarray:
        if not self.audio:
            return np.zeros(0, np.int16)
        return np.concatenate([np.frombuffer(a, "<i2") for _, a in self.audio])


class Recorder(FrameProcessor):
    """Passes everything on; keeps (time, frame) for the types asked for."""

    def __init__(self, kinds: tuple[type[Frame], ...], direction: FrameDirection) -> None:
        super().__init__()
        self.kinds = kinds
        self.direction = direction
        self.frames: list[tuple[float, Frame]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == self.direction and isinstance(frame, self.kinds):
            self.frames.append((time.perf_counter(), frame))
        await self.push_frame(frame, direction)

    def of(self, kind: type[Frame]) -> list[tuple[float, Frame]]:
        return [(t, f) for t, f in self.frames if isinstance(f, kind)]


@dataclass
class Run:
    service: AgentHumanVideoService
    output: RecordingOutput
    down: Recorder
    up: Recorder
    worker: PipelineWorker
    marks: dict[str, float] = field(default_factory=dict)

    async def send(self, frame: Frame) -> None:
        await self.worker.queue_frame(frame)

    async def say(self, pcm: np.ndarray, *, chunk_ms: int = 40, stop: bool = True) -> None:
        """TTS-started, the audio in chunks (faster than real time, as TTS does), stopped."""
        await self.send(TTSStartedFrame(context_id="ctx"))
        step = RATE * chunk_ms // 1000
        for start in range(0, len(pcm), step):
            chunk = TTSAudioRawFrame(pcm[start : start + step].tobytes(), RATE, 1)
            chunk.context_id = "ctx"
            await self.send(chunk)
            await asyncio.sleep(chunk_ms / 1000 / 4)
        if stop:
            await self.send(TTSStoppedFrame(context_id="ctx"))

    def images(self, after: float = 0.0) -> list[tuple[float, OutputImageRawFrame]]:
        return [(t, f) for t, f in self.output.video if t >= after]


async def run_pipeline(
    server: RunningServer,
    script: Callable[[Run], Awaitable[None]],
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    limit_s: float = 60,
    ready_after_s: float = 0.0,
    **service_kwargs: Any,
) -> Run:
    params = TransportParams(
        audio_out_enabled=True,
        audio_out_sample_rate=RATE,
        audio_out_end_silence_secs=0,
        video_out_enabled=True,
        video_out_is_live=True,
        video_out_width=W,
        video_out_height=H,
        video_out_framerate=FPS,
    )
    output = RecordingOutput(params, ready_after_s)
    service = AgentHumanVideoService(
        api_key=api_key or server.api_key,
        base_url=base_url or server.base_url,
        video_width=W,
        video_height=H,
        fps=FPS,
        **service_kwargs,
    )
    down = Recorder(
        (BotStartedSpeakingFrame, BotStoppedSpeakingFrame, TTSTextFrame), FrameDirection.DOWNSTREAM
    )
    up = Recorder((ErrorFrame,), FrameDirection.UPSTREAM)
    worker = PipelineWorker(
        Pipeline([up, service, output, down]),
        params=PipelineParams(audio_out_sample_rate=RATE),
        cancel_on_idle_timeout=False,
    )
    run = Run(service, output, down, up, worker)
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(worker: Any, frame: Frame) -> None:
        started.set()

    async def drive() -> None:
        await asyncio.wait_for(started.wait(), 30)
        await asyncio.sleep(0.05)  # the service's start (create, start, connect) runs first
        await script(run)

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.wait_for(asyncio.gather(runner.run(), drive()), limit_s)
    return run


async def wait_idle_frames(run: Run, n: int) -> None:
    """Until `n` images have gone out (the session renders, the transport is live)."""
    for _ in range(300):
        if len(run.output.video) >= n:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError("no images from the avatar")
