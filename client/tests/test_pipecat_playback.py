"""What `AgentHumanVideoService` plays in a real Pipecat pipeline against a real run.py: an
utterance's images and audio in step, captions when the avatar says them, an interrupt, media
held until the output transport is ready (the pipeline: `pipecat_harness`).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

pytest.importorskip("pipecat")

from conftest import RunningServer, speech  # noqa: E402
from pipecat.frames.frames import (  # noqa: E402
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndFrame,
    InterruptionFrame,
    OutputImageRawFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat_harness import FRAME_MS, FRAME_SAMPLES, RATE, H, Run, W, run_pipeline, wait_idle_frames  # noqa: E402

from agenthuman_client import AgentHuman, SpeakEnded, SpeakStarted  # noqa: E402
from agenthuman_client.pipecat import PTS_KEY  # noqa: E402


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
