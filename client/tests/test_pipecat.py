"""`AgentHumanVideoService` in a real Pipecat pipeline against a real run.py.

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
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pipecat")

from conftest import RunningServer, speech, start_server, stop_server  # noqa: E402
from pipecat.frames.frames import (  # noqa: E402
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.transports.base_output import BaseOutputTransport  # noqa: E402
from pipecat.transports.base_transport import TransportParams  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

from agenthuman_client import AgentHuman, ServerError, SpeakEnded, SpeakStarted  # noqa: E402
from agenthuman_client.pipecat import PTS_KEY, AgentHumanErrorFrame, AgentHumanVideoService  # noqa: E402

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


def mouth_motion(frames: list[OutputImageRawFrame]) -> float:
    """Mean absolute change between consecutive images in the lower-middle of the face."""
    crops = [
        np.frombuffer(f.image, np.uint8).reshape(H, W, 3)[H // 2 : H * 5 // 6, W // 3 : W * 2 // 3]
        for f in frames
    ]
    diffs = [
        np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(crops, crops[1:], strict=False)
    ]
    return float(np.mean(diffs)) if diffs else 0.0


# auto: rgb24, the server is local. 10 ms chunks, as many TTS services send them, go to the
# server as they come: it never pads a speaking frame with silence (played_ms would not count it).
@pytest.mark.parametrize(("video", "chunk_ms"), [("auto", 10), ("jpeg", 40)])
async def test_an_utterance_through_a_real_output_transport(
    server: RunningServer, api: AgentHuman, video: str, chunk_ms: int
) -> None:
    pcm = speech(3.0)

    async def script(run: Run) -> None:
        await wait_idle_frames(run, 10)
        run.marks["speak"] = time.perf_counter()
        await run.say(pcm, chunk_ms=chunk_ms)
        sock = run.service.socket
        assert sock is not None
        await sock.wait_for(SpeakEnded, timeout_s=30)
        await asyncio.sleep(0.6)  # idle again for a while
        await run.send(EndFrame())

    run = await run_pipeline(server, script, output_video=video)
    assert not run.up.frames, run.up.frames
    sock = run.service.socket
    assert sock is not None
    assert sock._init["output"]["video"] == ("rgb24" if video == "auto" else "jpeg")
    assert sock.era == "C" and sock.ws_uri.endswith("/v1/ws")  # one round trip: create_started
    started = next(e for e in sock.events if isinstance(e, SpeakStarted))
    ended = next(e for e in sock.events if isinstance(e, SpeakEnded))
    images = [f for _, f in run.output.video]
    assert all(f.size == (W, H) and f.format == "RGB" and len(f.image) == W * H * 3 for f in images)
    speaking = [f for f in images if started.pts_ms <= f.metadata[PTS_KEY] < ended.pts_ms]
    idle = [f for f in images if f.metadata[PTS_KEY] < started.pts_ms]
    assert abs(len(speaking) - 3000 / FRAME_MS) <= 1
    assert ended.played_ms == 3000 and ended.pts_ms - started.pts_ms == 3000
    assert mouth_motion(speaking) > 2 * mouth_motion(idle[-10:])
    # The audio out is the audio in, and it starts with the first speaking image.
    out = run.output.audio_samples()
    assert abs(len(out) - len(pcm)) <= FRAME_SAMPLES
    n = min(len(out), len(pcm))
    lag = int(np.argmax(np.correlate(out[:n].astype(float), pcm[:4000].astype(float), "valid")))
    assert lag <= FRAME_SAMPLES
    t_first_image = next(t for t, f in run.output.video if f.metadata[PTS_KEY] >= started.pts_ms)
    vt = [t for t, f in run.output.video if started.pts_ms <= f.metadata[PTS_KEY] < ended.pts_ms]
    at = [t for t, _ in run.output.audio]
    # Every 40 ms of speech plays with its own image, within a frame, for the whole utterance.
    offsets_ms = [(a - v) * 1000 for a, v in zip(at, vt, strict=False)]
    assert len(offsets_ms) >= len(vt) - 1 and max(map(abs, offsets_ms)) <= FRAME_MS, offsets_ms
    assert abs(run.output.audio[0][0] - t_first_image) <= FRAME_MS / 1000
    # Exactly one bot-started and one bot-stopped, the stop after the last audio.
    assert len(run.down.of(BotStartedSpeakingFrame)) == 1
    assert len(run.down.of(BotStoppedSpeakingFrame)) == 1
    assert run.down.of(BotStoppedSpeakingFrame)[0][0] >= run.output.audio[-1][0]
    assert len(run.service.first_image_latencies_ms) == 1
    session = await api.get_session(sock.session_id)
    assert (session.status, session.end_reason) == ("ended", "client_request")


async def test_captions_come_out_when_the_avatar_says_them(server: RunningServer) -> None:
    """Word frames stamped as a word-timestamp TTS stamps them (pts = the pipeline clock at its
    first audio + the word's offset) leave the output transport when the avatar plays that
    audio, not the server's first-frame latency earlier; a sentence's untimed text leaves after
    its last audio. (Without the service's shift the first word came out ~130 ms early.)"""
    pcm = speech(3.0)
    step = RATE * 40 // 1000

    async def script(run: Run) -> None:
        await wait_idle_frames(run, 10)
        await run.send(TTSStartedFrame(context_id="ctx"))
        clock = run.service.get_clock()
        for i, start in enumerate(range(0, len(pcm), step)):
            chunk = TTSAudioRawFrame(pcm[start : start + step].tobytes(), RATE, 1)
            chunk.context_id = "ctx"
            await run.send(chunk)
            if i == 0:
                t0 = clock.get_time()
                for word, offset_s in (("first", 0.0), ("later", 1.5)):
                    text = TTSTextFrame(word, "word", context_id="ctx")
                    text.pts = t0 + int(offset_s * 1e9)
                    await run.send(text)
            await asyncio.sleep(0.01)
        await run.send(TTSTextFrame("The whole sentence.", "sentence", context_id="ctx"))
        await run.send(TTSStoppedFrame(context_id="ctx"))
        sock = run.service.socket
        assert sock is not None
        await sock.wait_for(SpeakEnded, timeout_s=30)
        await asyncio.sleep(0.5)
        await run.send(EndFrame())

    run = await run_pipeline(server, script)
    assert not run.up.frames, run.up.frames
    texts = {f.text: t for t, f in run.down.of(TTSTextFrame)}
    assert set(texts) == {"first", "later", "The whole sentence."}
    t_audio = run.output.audio[0][0]  # when the avatar's first speech sample plays
    assert abs(texts["first"] - t_audio) <= FRAME_MS / 1000, texts["first"] - t_audio
    assert abs(texts["later"] - (t_audio + 1.5)) <= FRAME_MS / 1000, texts["later"] - t_audio
    assert texts["The whole sentence."] >= run.output.audio[-1][0]


async def test_interrupt_mid_utterance(server: RunningServer, api: AgentHuman) -> None:
    async def script(run: Run) -> None:
        await wait_idle_frames(run, 5)
        await run.say(speech(4.0), stop=False)
        sock = run.service.socket
        assert sock is not None
        await sock.wait_for(SpeakStarted, timeout_s=30)
        await asyncio.sleep(1.0)
        run.marks["interrupt"] = time.perf_counter()
        await run.send(InterruptionFrame())
        await sock.wait_for(SpeakEnded, timeout_s=10)
        await asyncio.sleep(0.5)
        await run.send(EndFrame())

    run = await run_pipeline(server, script)
    sock = run.service.socket
    assert sock is not None
    ended = next(e for e in sock.events if isinstance(e, SpeakEnded))
    assert ended.interrupted and 500 < ended.played_ms < 4000
    t_int = run.marks["interrupt"]
    # The service pushes the first image after the cut within 2 frames: the server stops at its
    # next tick (≤ 1 frame), and images it showed before that are dropped, not paced out.
    assert len(run.service.interrupt_latencies_ms) == 1
    assert run.service.interrupt_latencies_ms[0] <= 2 * FRAME_MS, run.service.interrupt_latencies_ms
    # No speaking image is written more than 2 frames after the interrupt (playout that does
    # not stop, the hosted integrations' bug, runs for seconds).
    late_speaking = [
        f
        for t, f in run.images(after=t_int + 2 * FRAME_MS / 1000)
        if f.metadata[PTS_KEY] < ended.pts_ms
    ]
    assert not late_speaking, "speaking images more than 2 frames after the interrupt"
    # The output transport writes it one frame after it gets it: Pipecat's live video queue
    # restarts on the InterruptionFrame, and its first image after a restart waits one frame
    # duration (base_output.py `_video_is_live_handler`), so 3 frames at the transport.
    t_idle = next(t for t, f in run.images(after=t_int) if f.metadata[PTS_KEY] >= ended.pts_ms)
    assert (t_idle - t_int) * 1000 <= 3 * FRAME_MS, (t_idle - t_int) * 1000
    out_ms = len(run.output.audio_samples()) / RATE * 1000
    assert abs(out_ms - ended.played_ms) <= 2 * FRAME_MS, (out_ms, ended.played_ms)
    assert len(run.down.of(BotStartedSpeakingFrame)) == 1
    assert len(run.down.of(BotStoppedSpeakingFrame)) == 1


async def test_end_frame_after_the_last_chunk_plays_it_all(
    server: RunningServer, api: AgentHuman
) -> None:
    pcm = speech(2.0)

    async def script(run: Run) -> None:
        await wait_idle_frames(run, 3)
        await run.say(pcm, stop=False)
        await run.send(EndFrame())

    run = await run_pipeline(server, script)
    sock = run.service.socket
    assert sock is not None
    ended = next(e for e in sock.events if isinstance(e, SpeakEnded))
    assert not ended.interrupted and abs(ended.played_ms - 2000) <= FRAME_MS
    assert abs(len(run.output.audio_samples()) - len(pcm)) <= FRAME_SAMPLES
    assert len(run.down.of(BotStoppedSpeakingFrame)) == 1
    session = await api.get_session(sock.session_id)
    assert (session.status, session.end_reason) == ("ended", "client_request")


async def test_end_frame_waits_for_queued_speech_no_longer_than_end_timeout(
    server: RunningServer, api: AgentHuman
) -> None:
    """The drain on EndFrame is bounded: 6 s queued, `end_timeout_s=1` → the pipeline ends
    about 1 s later, with the session ended, not after the whole utterance."""

    async def script(run: Run) -> None:
        await wait_idle_frames(run, 3)
        await run.say(speech(6.0), chunk_ms=200, stop=False)
        run.marks["end"] = time.perf_counter()
        await run.send(EndFrame())

    run = await run_pipeline(server, script, end_timeout_s=1.0)
    waited = time.perf_counter() - run.marks["end"]
    assert 0.9 <= waited < 1.0 + 2.0, waited
    assert len(run.output.audio_samples()) / RATE < 3.0  # it did not play the 6 s
    sock = run.service.socket
    assert sock is not None
    session = await api.get_session(sock.session_id)
    assert (session.status, session.end_reason) == ("ended", "client_request")


async def test_cancel_ends_the_session_at_once(server: RunningServer, api: AgentHuman) -> None:
    async def script(run: Run) -> None:
        await wait_idle_frames(run, 3)
        await run.say(speech(3.0), stop=False)
        await run.send(CancelFrame())

    t0 = time.perf_counter()
    run = await run_pipeline(server, script)
    assert time.perf_counter() - t0 < 3.0 + 2.0  # not the 3 s of speech plus an end wait
    sock = run.service.socket
    assert sock is not None
    session = await api.get_session(sock.session_id)
    assert (session.status, session.end_reason) == ("ended", "client_request")


async def test_a_socket_dropped_mid_utterance_resumes(server: RunningServer) -> None:
    pcm = speech(3.0)

    async def script(run: Run) -> None:
        await wait_idle_frames(run, 3)
        await run.say(pcm)
        sock = run.service.socket
        assert sock is not None
        await sock.wait_for(SpeakStarted, timeout_s=30)
        await asyncio.sleep(0.5)
        await sock.drop()
        await sock.wait_for(SpeakEnded, timeout_s=30)
        await asyncio.sleep(0.3)
        await run.send(EndFrame())

    run = await run_pipeline(server, script)
    sock = run.service.socket
    assert sock is not None and sock.resumes == 1
    ended = next(e for e in sock.events if isinstance(e, SpeakEnded))
    assert not ended.interrupted and abs(ended.played_ms - 3000) <= FRAME_MS
    assert not run.up.frames, run.up.frames
    # What was published while no socket was attached never came back: less audio, not more.
    assert 1000 < len(run.output.audio_samples()) / RATE * 1000 <= 3000 + FRAME_MS
    assert len(run.down.of(BotStoppedSpeakingFrame)) >= 1


@pytest.mark.parametrize("case", ["bad_key", "server_down"])
async def test_errors_become_error_frames_with_our_code(server: RunningServer, case: str) -> None:
    async def script(run: Run) -> None:
        await asyncio.sleep(0.2)
        await run.send(TTSAudioRawFrame(speech(0.2).tobytes(), RATE, 1))
        await run.send(EndFrame())

    if case == "bad_key":
        run = await run_pipeline(server, script, api_key="ah_live_" + "x" * 32, limit_s=15)
        expected = "UNAUTHORIZED"
    else:
        run = await run_pipeline(server, script, base_url="http://127.0.0.1:9/v1", limit_s=15)
        expected = "SERVER_UNREACHABLE"
    errors = [f for _, f in run.up.of(ErrorFrame)]
    assert errors and isinstance(errors[0], AgentHumanErrorFrame)
    assert errors[0].code == expected


async def test_rate_limited_is_a_warning_not_an_error_frame(tmp_path: Path) -> None:
    """10 ms TTS chunks past the server's message budget: paced, all played, no ErrorFrame."""
    server = start_server(tmp_path / "data", tmp_path / "server.log", "ws.max_messages_per_s=20")

    async def script(run: Run) -> None:
        await wait_idle_frames(run, 5)
        await run.say(speech(1.0), chunk_ms=10)
        sock = run.service.socket
        assert sock is not None
        await sock.wait_for(SpeakEnded, timeout_s=30)
        await run.send(EndFrame())

    try:
        run = await run_pipeline(server, script, limit_s=60)
    finally:
        stop_server(server)
    sock = run.service.socket
    assert sock is not None
    assert [e.code for e in sock.events if isinstance(e, ServerError)][:1] == ["RATE_LIMITED"]
    ended = next(e for e in sock.events if isinstance(e, SpeakEnded))
    assert not ended.interrupted and abs(ended.played_ms - 1000) <= FRAME_MS
    assert not run.up.frames, run.up.frames


async def test_media_is_held_until_the_output_transport_is_ready(server: RunningServer) -> None:
    """The transport gets ready 1.5 s late; speech sent before that is held, not lost."""
    pcm = speech(1.0)

    async def script(run: Run) -> None:
        await asyncio.sleep(0.5)
        await run.say(pcm)
        sock = run.service.socket
        assert sock is not None
        await sock.wait_for(SpeakEnded, timeout_s=30)
        for _ in range(200):
            if run.output.ready_at:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.5)
        await run.send(EndFrame())

    run = await run_pipeline(server, script, ready_after_s=1.5)
    assert run.output.ready_at and run.output.video
    assert run.output.video[0][0] >= run.output.ready_at
    assert abs(len(run.output.audio_samples()) - len(pcm)) <= FRAME_SAMPLES
    assert len(run.down.of(BotStartedSpeakingFrame)) == 1
    assert len(run.down.of(BotStoppedSpeakingFrame)) == 1


def test_size_and_fps_come_from_the_transport_params() -> None:
    params = TransportParams(
        video_out_enabled=True, video_out_width=640, video_out_height=480, video_out_framerate=30
    )
    service = AgentHumanVideoService(api_key="k", transport=RecordingOutput(params))
    assert (service._width, service._height, service._fps) == (640, 480, 30)
