"""Overload degrades instead of collapsing (issue 13): encoders yield to rendering, the viewer
and socket outputs shed pictures (the newest wins, audio kept), the recorder never drops a frame
(it repeats the previous picture), and every loss is counted in /metrics and the timeline.

Deterministic: each output's encoder is held on a gate, never timed."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import av
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agenthuman_local import protocol
from agenthuman_local.engine.base import frame_sample_range
from agenthuman_local.engine.driver import Driver
from agenthuman_local.engine.worker import RenderWorker
from agenthuman_local.metrics import Metrics
from agenthuman_local.sessions.runner import RunnerOptions, SessionRunner
from agenthuman_local.transports import jpeg, recording
from agenthuman_local.transports.base import QueuedSink
from agenthuman_local.transports.local import MetricsOutput
from agenthuman_local.transports.recording import Recorder, RecorderSink
from agenthuman_local.transports.socket import SocketMediaSink
from agenthuman_local.transports.viewer import ViewerHub, ViewerSink
from tests.fakes import FakeRenderer, VirtualClock
from tests.fakes_daily import SinkFrame
from tests.test_ws_helpers import wait_for

W, H, FPS, SR = 160, 120, 25, 16_000


def frame(n: int, level: int | None = None) -> SinkFrame:
    s0, s1 = frame_sample_range(n, FPS, SR)
    samples = (np.arange(s0, s1) % 1000 + 1).astype(np.int16)  # never silent, counts up
    rgb = np.full((H, W, 3), level if level is not None else 20 + 20 * n, np.uint8)
    return SinkFrame("sess_o", n, n * 1000 // FPS, rgb, samples, SR)


class GatedSink(QueuedSink[SinkFrame]):
    """Each write waits on a gate; sheds keep the frame's index (its audio, in a real output)."""

    def __init__(self) -> None:
        super().__init__("gated", shed=True, output="gated")
        self.gate = asyncio.Event()
        self.writing = asyncio.Event()
        self.sent: list[tuple[str, int]] = []

    async def _write(self, frame: SinkFrame) -> None:
        self.writing.set()
        await self.gate.wait()
        self.sent.append(("picture+audio", frame.frame_index))

    def _shed(self, frame: SinkFrame) -> None:
        self.sent.append(("audio", frame.frame_index))


async def test_a_shedding_sink_behind_sends_the_newest_picture_and_every_audio() -> None:
    sink = GatedSink()
    losses: list[tuple[str, str, int, int]] = []
    sink.report_losses_to(lambda *loss: losses.append(loss))
    await sink.publish(frame(0))
    await sink.writing.wait()  # frame 0 is being encoded; 1-4 arrive meanwhile
    for n in range(1, 5):
        await sink.publish(frame(n))
    sink.gate.set()
    await wait_for(lambda: len(sink.sent) == 5)
    assert sink.sent == [
        ("picture+audio", 0),
        ("audio", 1),
        ("audio", 2),
        ("audio", 3),
        ("picture+audio", 4),
    ]
    assert sink.shed == 3 and sink.dropped == 0
    assert losses == [("gated", "shed", n, n * 40) for n in (1, 2, 3)]
    await sink.aclose()


def _hold(pool_submit, workers: int) -> threading.Event:
    """Occupy every thread of an executor until the returned event is set."""
    gate = threading.Event()
    for _ in range(workers):
        pool_submit(gate.wait, 30)
    return gate


async def test_the_socket_output_sheds_jpeg_pictures_but_never_audio() -> None:
    sent: list[bytes] = []
    sink = SocketMediaSink(
        "sess_o", sent.append, video_jpeg=True, audio=True, sample_rate_hz=SR, jpeg_quality=50
    )
    gate = _hold(jpeg.encoder_pool().submit, 2)
    for n in range(4):
        await sink.publish(frame(n))  # frame 0's encoding waits behind the gate; 1-3 queue
        await asyncio.sleep(0)
    gate.set()
    await wait_for(lambda: sum(m[0] == protocol.KIND_AUDIO_PCM for m in sent) == 4)
    kinds = [(protocol.unpack_media(m)[0], protocol.unpack_media(m)[2]) for m in sent]
    video, audio = protocol.KIND_VIDEO_JPEG, protocol.KIND_AUDIO_PCM
    assert kinds == [(video, 0), (audio, 0), (audio, 1), (audio, 2), (video, 3), (audio, 3)]
    assert sink.shed == 2
    await sink.aclose()


async def test_the_viewer_sheds_pictures_and_its_pages_still_get_every_frames_audio() -> None:
    hub = ViewerHub()
    page = hub.connect("sess_o")
    sink = ViewerSink(hub, "sess_o")
    gate = _hold(hub._encoder.submit, 1)
    for n in range(4):
        await sink.publish(frame(n))
        await asyncio.sleep(0)
    gate.set()
    got: list[tuple[int, int]] = []
    while sum(kind == protocol.KIND_AUDIO_PCM for kind, _ in got) < 4:
        message = await asyncio.wait_for(page.get(), 10)
        if isinstance(message, bytes):
            kind, _, index, _ = protocol.unpack_media(message)
            got.append((kind, index))
    video, audio = protocol.KIND_VIDEO_JPEG, protocol.KIND_AUDIO_PCM
    assert got == [(video, 0), (audio, 0), (audio, 1), (audio, 2), (video, 3), (audio, 3)]
    assert sink.shed == 2 and hub.frames_encoded == 2
    await sink.aclose()
    await hub.aclose()


def _decode(path: Path) -> tuple[list[tuple[float, float]], int]:
    with av.open(str(path)) as c:
        video = [
            (float(f.time), float(f.to_ndarray(format="gray").mean())) for f in c.decode(video=0)
        ]
    with av.open(str(path)) as c:
        samples = sum(f.samples for f in c.decode(audio=0))
    return video, samples


async def test_a_recorder_behind_repeats_pictures_and_drops_no_frame(
    tmp_path: Path, monkeypatch
) -> None:
    gate, converting = threading.Event(), threading.Event()
    convert = recording._yuv420p

    def held(rgb: np.ndarray) -> np.ndarray:
        converting.set()
        gate.wait(30)
        return convert(rgb)

    monkeypatch.setattr(recording, "_yuv420p", held)
    rec = Recorder(tmp_path / "behind.mp4", W, H, FPS, SR, queue_frames=2)
    sink = RecorderSink(rec)
    losses: list[tuple[str, str, int, int]] = []
    sink.report_losses_to(lambda *loss: losses.append(loss))
    await sink.publish(frame(0))
    assert await asyncio.to_thread(converting.wait, 30)  # the encoder holds frame 0
    for n in range(1, 10):
        await sink.publish(frame(n))
    gate.set()
    await sink.aclose()
    assert (rec.frames_written, rec.frames_repeated, rec.frames_dropped) == (10, 7, 0)
    assert losses == [("recording", "repeated", n, n * 40) for n in range(3, 10)]
    video, samples = _decode(tmp_path / "behind.mp4")
    assert len(video) == 10
    # Timing exact (the first frame's time is the muxer's, as for every recording).
    for n, (t, _) in enumerate(video[1:], 1):
        assert abs(t - video[1][0] - (n - 1) / FPS) < 1e-3
    lumas = [round(luma) for _, luma in video]
    # Frames 0-2 were queued with their pictures; 3-9 repeat frame 2's (level 60).
    assert abs(lumas[2] - lumas[9]) <= 2 and all(abs(v - lumas[2]) <= 2 for v in lumas[3:])
    assert abs(lumas[1] - lumas[2]) > 10
    assert samples >= 10 * SR // FPS  # every frame's audio is there


async def test_a_repeated_picture_object_is_not_converted_again(tmp_path: Path, monkeypatch):
    calls = []
    convert = recording._yuv420p

    def counted(rgb: np.ndarray) -> np.ndarray:
        calls.append(1)
        return convert(rgb)

    monkeypatch.setattr(recording, "_yuv420p", counted)
    rec = Recorder(tmp_path / "same.mp4", W, H, FPS, SR)
    still = frame(0).rgb
    for n in range(5):
        rec.submit(n, still, frame(n).pcm)
    await rec.aclose()
    assert rec.frames_written == 5 and rec.frames_repeated == 0 and len(calls) == 1
    assert len(_decode(tmp_path / "same.mp4")[0]) == 5


def _nice(native_id: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, native_id)


async def test_encoder_threads_run_nicer_than_the_render_thread(tmp_path: Path) -> None:
    base = os.getpriority(os.PRIO_PROCESS, os.getpid())
    if base >= 19:
        pytest.skip("this process already runs at the lowest priority: no thread can be nicer")
    rec = Recorder(tmp_path / "nice.mp4", W, H, FPS, SR)
    rec.submit(0, frame(0).rgb, frame(0).pcm)
    await wait_for(lambda: rec.frames_written == 1)
    assert rec._thread.native_id is not None
    assert _nice(rec._thread.native_id) > base
    await rec.aclose()
    hub = ViewerHub()
    viewer_nice = await asyncio.wrap_future(
        hub._encoder.submit(lambda: _nice(threading.get_native_id()))
    )
    socket_nice = await asyncio.wrap_future(
        jpeg.encoder_pool().submit(lambda: _nice(threading.get_native_id()))
    )
    await hub.aclose()
    assert viewer_nice > base and socket_nice > base
    worker = RenderWorker("cpu")
    renderer = FakeRenderer()
    job = worker.submit(renderer, np.zeros(Driver(FPS).step(np.zeros(640)).shape, np.float32))
    await job.future
    render_thread = worker._thread.native_id
    assert render_thread is not None and _nice(render_thread) == base
    await worker.aclose()


async def test_losses_reach_the_timeline_and_the_metrics() -> None:
    clock = VirtualClock()
    worker = RenderWorker("cpu")
    runner = SessionRunner(
        RunnerOptions(session_id="sess_o", fps=FPS),
        renderer=FakeRenderer(),
        worker=worker,
        driver=Driver(FPS, seed=1, deterministic=True),
        clock=clock,
    )
    sink = GatedSink()
    runner.add_sink(sink)  # type: ignore[arg-type]  # a SinkFrame sink; it reads only those fields
    metrics = Metrics()
    runner.add_sink(MetricsOutput(metrics, "sess_o", runner))
    runner.start()
    await clock.settled(2)
    await sink.writing.wait()  # frame 0 published and held in the output
    for _ in range(5):
        await worker.drain()
        clock.advance(1 / FPS)
        await clock.settled(2)
    sink.gate.set()
    await wait_for(lambda: len(sink.sent) == 6)
    await runner.aclose()
    events = [line for line in runner.timeline.lines if line.get("type") == "output.shed"]
    assert [(e["output"], e["frame_index"]) for e in events] == [("gated", n) for n in range(1, 5)]
    assert runner.output_losses == {("gated", "shed"): 4}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }
    key = ("agenthuman_output_frames_lost_total", (("kind", "shed"), ("output", "gated")))
    assert samples[key] == 4
    await worker.aclose()


async def test_a_recorder_stalled_past_4_s_drops_its_oldest_and_says_so(
    tmp_path: Path, monkeypatch
) -> None:
    gate, converting = threading.Event(), threading.Event()
    convert = recording._yuv420p

    def held(rgb: np.ndarray) -> np.ndarray:
        converting.set()
        gate.wait(30)
        return convert(rgb)

    monkeypatch.setattr(recording, "_yuv420p", held)
    rec = Recorder(tmp_path / "stalled.mp4", W, H, FPS, SR, queue_frames=2)
    sink = RecorderSink(rec)
    losses: list[tuple[str, str, int, int]] = []
    sink.report_losses_to(lambda *loss: losses.append(loss))
    await sink.publish(frame(0))
    assert await asyncio.to_thread(converting.wait, 30)
    for n in range(1, 111):  # 110 more while frame 0 is held: 4 s (100 frames) may queue
        await sink.publish(frame(n, level=n % 200))
    gate.set()
    await sink.aclose()
    assert rec.frames_dropped == 10 and rec.frames_written == 101
    assert sum(kind == "dropped" for _, kind, _, _ in losses) == 10
