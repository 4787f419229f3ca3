"""`AgentHumanVideoGenerator` against a real run.py, alone and under the framework's
`AvatarRunner`: audio only within an utterance, `clear_buffer` as an interrupt, the playback
the runner reports, and its queue cleared at an interrupt (the set-up: `livekit_harness`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

pytest.importorskip("livekit.agents")

from conftest import speech  # noqa: E402
from livekit import rtc  # noqa: E402
from livekit.agents.voice.avatar import (  # noqa: E402
    AudioSegmentEnd,
    AvatarOptions,
    AvatarRunner,
    QueueAudioOutput,
)
from livekit_harness import (  # noqa: E402
    FPS,
    FRAME_MS,
    FRAME_S,
    RATE,
    H,
    TrackRecorder,
    W,
    frames_of,
    marked,
    mock_room,
    open_generator,
)

from agenthuman_client import AgentHuman, InterruptConfirmed, SpeakEnded, SpeakStarted  # noqa: E402
from agenthuman_client.livekit import AgentHumanAudioOutput, AgentHumanVideoGenerator  # noqa: E402


async def collect(gen: AgentHumanVideoGenerator, out: list[tuple[float, Any]]) -> None:
    async for item in gen:
        out.append((time.perf_counter(), item))


def kinds(items: list[tuple[float, Any]]) -> str:
    """V video, A audio, E segment end: the order the generator yielded them in."""
    codes = {rtc.VideoFrame: "V", rtc.AudioFrame: "A", AudioSegmentEnd: "E"}
    return "".join(codes[type(item)] for _, item in items)


async def _play_whole(audio_out: Any, sock: Any, pcm: np.ndarray, finished: list[Any]) -> None:
    """Push one utterance through `audio_out`, flush it, and wait for the server's
    `agent.speak_ended` and then the framework's `playback_finished` (into `finished`)."""
    for frame in frames_of(pcm):
        await audio_out.capture_frame(frame)
    audio_out.flush()
    await sock.wait_for(SpeakEnded, timeout_s=30)
    await _finished(finished, 1)


async def _finished(finished: list[Any], n: int) -> None:
    """Wait (up to 5 s) for the framework's `n`th `playback_finished`."""
    for _ in range(100):
        if len(finished) >= n:
            break
        await asyncio.sleep(0.05)


async def test_generator_yields_audio_only_within_the_utterance(api: AgentHuman) -> None:
    # rgb24: the frame count is exact. A JPEG encoder that falls behind sheds pictures (their
    # audio still comes; SPEC §10): 9 of 75 at load 3 on a 2-core box.
    session_id, sock, gen = await open_generator(api, "rgb24")
    items: list[tuple[float, Any]] = []
    reader = asyncio.create_task(collect(gen, items))
    pcm = speech(3.0)
    try:
        await asyncio.sleep(0.5)
        for frame in frames_of(pcm):
            await gen.push_audio(frame)
        await gen.push_audio(AudioSegmentEnd())
        await sock.wait_for(SpeakEnded, timeout_s=30)
        await asyncio.sleep(0.5)
    finally:
        await sock.aclose()
        await api.end_session(session_id)
        await reader
    order = kinds(items)
    assert order.count("E") == 1
    first_a, end = order.index("A"), order.index("E")
    assert "A" not in order[end:], "audio after the segment end"
    assert order[end + 1 :].count("V") >= 10  # video goes on while idle
    assert abs(order[first_a:end].count("V") - 3000 / FRAME_MS) <= 1
    audio = [item for _, item in items if isinstance(item, rtc.AudioFrame)]
    out = np.concatenate([np.frombuffer(a.data, np.int16) for a in audio])
    assert abs(len(out) - len(pcm)) <= RATE * FRAME_MS // 1000
    assert np.corrcoef(out[: len(pcm)].astype(float), pcm[: len(out)].astype(float))[0, 1] > 0.99
    video = [item for _, item in items if isinstance(item, rtc.VideoFrame)]
    assert all((v.width, v.height, v.type) == (W, H, rtc.VideoBufferType.RGB24) for v in video)
    assert len(video[0].data) == W * H * 3


async def test_generator_clear_buffer_interrupts(api: AgentHuman) -> None:
    session_id, sock, gen = await open_generator(api)
    items: list[tuple[float, Any]] = []
    reader = asyncio.create_task(collect(gen, items))
    try:
        for frame in frames_of(speech(4.0)):
            await gen.push_audio(frame)
        await sock.wait_for(SpeakStarted, timeout_s=30)
        await asyncio.sleep(1.0)
        t_clear = time.perf_counter()
        await gen.clear_buffer()
        confirmed = await sock.wait_for(InterruptConfirmed)
        await asyncio.sleep(0.5)
    finally:
        await sock.aclose()
        await api.end_session(session_id)
        await reader
    assert "E" not in kinds(items)  # the runner reports an interrupted segment itself
    late = [
        t for t, item in items if isinstance(item, rtc.AudioFrame) and t > t_clear + 2 * FRAME_S
    ]
    assert not late, "speech audio more than 2 frames after clear_buffer"
    # The first video frame after the server's cut comes within 2 frames: the server stops at
    # its next tick, and frames it showed before that are not yielded.
    assert len(gen.interrupt_latencies_ms) == 1
    assert gen.interrupt_latencies_ms[0] <= 2 * FRAME_MS, gen.interrupt_latencies_ms
    out_ms = sum(item.duration for _, item in items if isinstance(item, rtc.AudioFrame)) * 1000
    assert abs(out_ms - confirmed.played_ms) <= 2 * FRAME_MS, (out_ms, confirmed.played_ms)


async def test_avatar_runner_reports_playback_from_our_events(api: AgentHuman) -> None:
    session_id, sock, gen = await open_generator(api)
    audio_out = QueueAudioOutput(sample_rate=RATE, wait_playback_start=True)
    runner = AvatarRunner(
        mock_room(),
        audio_recv=audio_out,
        video_gen=gen,
        options=AvatarOptions(W, H, FPS, RATE, 1),
    )
    started: list[float] = []
    finished: list[Any] = []
    audio_out.on("playback_started", lambda ev: started.append(time.perf_counter()))
    audio_out.on("playback_finished", finished.append)
    await runner.start()
    try:
        await _play_whole(audio_out, sock, speech(3.0), finished)
        assert len(started) == 1 and len(finished) == 1
        assert not finished[0].interrupted
        assert abs(finished[0].playback_position - 3.0) <= FRAME_S
        # The second utterance is interrupted: the position is what really came out.
        for frame in frames_of(speech(4.0)):
            await audio_out.capture_frame(frame)
        after = len(sock.events)
        await sock.wait_for(SpeakStarted, timeout_s=30, after=after)
        await asyncio.sleep(1.0)
        audio_out.clear_buffer()
        confirmed = await sock.wait_for(InterruptConfirmed, after=after)
        await _finished(finished, 2)
        assert len(started) == 2 and len(finished) == 2 and finished[1].interrupted
        assert abs(finished[1].playback_position * 1000 - confirmed.played_ms) <= 2 * FRAME_MS
    finally:
        await runner.aclose()
        await sock.aclose()
        await api.end_session(session_id)


async def test_the_runners_queue_is_cleared_at_an_interrupt(api: AgentHuman) -> None:
    """What the runner's track plays, read back from it: a whole utterance plays whole; at
    `clear_buffer` the audio still queued in the runner's synchronizer is dropped, none of it
    plays afterwards, the position the framework gets is what played, and the server's
    `played_ms` is that plus what the client had queued unheard."""
    session_id, sock, gen = await open_generator(api)
    recorder = TrackRecorder()
    audio_out = AgentHumanAudioOutput(gen, sample_rate=RATE)
    runner = AvatarRunner(
        recorder.room(),
        audio_recv=audio_out,
        video_gen=gen,
        options=AvatarOptions(W, H, FPS, RATE, 1),
    )
    gen.attach_av_sync(runner.av_sync)
    finished: list[Any] = []
    audio_out.on("playback_finished", finished.append)
    await runner.start()
    try:
        t0 = time.perf_counter()
        first = marked(speech(2.0))
        await _play_whole(audio_out, sock, first, finished)
        await asyncio.sleep(0.3)
        assert recorder.played_ms(first, t0) == 2000
        assert recorder.all_played(first, t0)
        assert abs(finished[0].playback_position - 2.0) <= FRAME_S
        t1 = time.perf_counter()
        second = marked(speech(4.0))
        for frame in frames_of(second):
            await audio_out.capture_frame(frame)
        after = len(sock.events)
        await sock.wait_for(SpeakStarted, timeout_s=30, after=after)
        await asyncio.sleep(1.0)
        t_clear = time.perf_counter()
        audio_out.clear_buffer()
        confirmed = await sock.wait_for(InterruptConfirmed, after=after)
        await _finished(finished, 2)
        await asyncio.sleep(0.5)
    finally:
        await runner.aclose()
        await recorder.aclose()
        await sock.aclose()
        await api.end_session(session_id)
    assert len(finished) == 2 and finished[1].interrupted
    heard_ms = recorder.played_ms(second, t1)
    # Nothing queued plays after the interrupt (10 ms: the playout frame already going out).
    assert recorder.loud_after(t_clear + 0.01) == 0, recorder.loud_after(t_clear + 0.01)
    # Exact to a frame, but for how far the track's own clock had fallen behind by the clear.
    slack = FRAME_MS + recorder.behind_ms(t_clear)
    position_ms = finished[1].playback_position * 1000
    assert abs(position_ms - heard_ms) <= slack, (position_ms, heard_ms, slack)
    account = gen.interrupts[-1]
    assert account.played_ms == confirmed.played_ms
    assert abs(account.heard_ms - heard_ms) <= slack, (account, heard_ms, slack)
    # All the server published reached the client: heard, cleared unheard, or dropped.
    assert abs(account.yielded_ms + account.dropped_ms - account.played_ms) <= FRAME_MS, account
    assert 0 <= account.unheard_ms <= 120, account  # the runner's queue holds ≤ 100 ms
