"""The LiveKit Agents adapter against a real run.py and the real framework.

`AgentHumanVideoGenerator` is driven directly, then through the framework's `AvatarRunner` and
`QueueAudioOutput(wait_playback_start=True)` over `livekit.agents.ipc.mock_room`'s room (an
autospec `rtc.Room`; the runner publishes into it, the FFI audio/video sources and the
`AVSynchronizer` are real; what the runner's audio track plays is read back through an
`rtc.AudioStream` on it). What stays untested: a real LiveKit server and WebRTC (none can run
offline here); inside a job (`fake_job_context`) the LiveKit server API is recorded, not
called.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import numpy as np
import pytest

pytest.importorskip("livekit.agents")

from conftest import RunningServer, speech  # noqa: E402
from livekit import rtc  # noqa: E402
from livekit.agents import AgentSession  # noqa: E402
from livekit.agents.ipc.mock_room import create_mock_room  # noqa: E402
from livekit.agents.voice.avatar import (  # noqa: E402
    AudioSegmentEnd,
    AvatarOptions,
    AvatarRunner,
    QueueAudioOutput,
)

from agenthuman_client import (  # noqa: E402
    AgentHuman,
    InterruptConfirmed,
    SessionSocket,
    SpeakEnded,
    SpeakStarted,
)
from agenthuman_client.livekit import (  # noqa: E402
    AgentHumanAudioOutput,
    AgentHumanVideoGenerator,
    AvatarSession,
)

W, H, FPS, RATE = 256, 192, 25, 16000
FRAME_MS = 1000 // FPS
FRAME_S = FRAME_MS / 1000


def frames_of(pcm: np.ndarray, ms: int = 20) -> list[rtc.AudioFrame]:
    n = RATE * ms // 1000
    return [
        rtc.AudioFrame(pcm[i : i + n].tobytes(), RATE, 1, len(pcm[i : i + n]))
        for i in range(0, len(pcm), n)
    ]


async def open_generator(
    api: AgentHuman, video: str = "jpeg"
) -> tuple[str, SessionSocket, AgentHumanVideoGenerator]:
    session = await api.create_and_start()
    sock = await SessionSocket.connect(
        session,
        video_width=W,
        video_height=H,
        fps=FPS,
        sample_rate=RATE,
        output_video=video,
        output_audio=True,
    )
    return session.session_id, sock, AgentHumanVideoGenerator(sock)


async def collect(gen: AgentHumanVideoGenerator, out: list[tuple[float, Any]]) -> None:
    async for item in gen:
        out.append((time.perf_counter(), item))


def kinds(items: list[tuple[float, Any]]) -> str:
    """V video, A audio, E segment end: the order the generator yielded them in."""
    codes = {rtc.VideoFrame: "V", rtc.AudioFrame: "A", AudioSegmentEnd: "E"}
    return "".join(codes[type(item)] for _, item in items)


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


def mock_room() -> Any:
    room = create_mock_room()
    publication = MagicMock()
    publication.wait_for_subscription = AsyncMock(return_value=None)
    room.local_participant.publish_track = AsyncMock(return_value=publication)
    return room


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
        for frame in frames_of(speech(3.0)):
            await audio_out.capture_frame(frame)
        audio_out.flush()
        await sock.wait_for(SpeakEnded, timeout_s=30)
        for _ in range(100):
            if finished:
                break
            await asyncio.sleep(0.05)
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
        for _ in range(100):
            if len(finished) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(started) == 2 and len(finished) == 2 and finished[1].interrupted
        assert abs(finished[1].playback_position * 1000 - confirmed.played_ms) <= 2 * FRAME_MS
    finally:
        await runner.aclose()
        await sock.aclose()
        await api.end_session(session_id)


class TrackRecorder:
    """What the runner's published audio track really plays, read back through an
    `rtc.AudioStream` on it (the FFI's own playout, 10 ms frames, silence when it runs dry)."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, np.ndarray]] = []
        self._tasks: list[asyncio.Task[None]] = []

    def room(self) -> Any:
        room = mock_room()
        publication = MagicMock()
        publication.wait_for_subscription = AsyncMock(return_value=None)

        async def publish(track: Any, options: Any) -> Any:
            if isinstance(track, rtc.LocalAudioTrack):
                stream = rtc.AudioStream(track, sample_rate=RATE, num_channels=1)
                self._tasks.append(asyncio.create_task(self._read(stream)))
            return publication

        room.local_participant.publish_track = AsyncMock(side_effect=publish)
        return room

    async def _read(self, stream: rtc.AudioStream) -> None:
        async for event in stream:
            samples = np.frombuffer(event.frame.data, np.int16).copy()
            self.frames.append((time.perf_counter(), samples))

    def played_ms(self, pcm: np.ndarray, since: float) -> float:
        """How much of `pcm` the track played, in frames out since `since`: the source plays
        whole 10 ms blocks of what it was given (silence where it ran dry), so each block of
        `pcm` that came out is found as it is; → ms up to the end of the last one found."""
        block = RATE // 100
        index = {pcm[i : i + block].tobytes(): i for i in range(0, len(pcm), block)}
        found = {index[f.tobytes()] for t, f in self.frames if t >= since and f.tobytes() in index}
        loud = [i for i in found if np.any(pcm[i : i + block])]
        return 0.0 if not loud else (max(loud) + block) * 1000 / RATE

    def all_played(self, pcm: np.ndarray, since: float) -> bool:
        """Every non-silent 10 ms block of `pcm` came out since `since`."""
        block = RATE // 100
        out = {f.tobytes() for t, f in self.frames if t >= since}
        blocks = [pcm[i : i + block] for i in range(0, len(pcm), block)]
        return all(b.tobytes() in out for b in blocks if np.any(b))

    def behind_ms(self, t: float) -> float:
        """How far the track's playout clock had fallen behind wall time by `t`, from its own
        frames (it plays without gaps, silence when dry): the lag of the last frame out by
        `t` past the least-lagged one. Our position can't see that clock: a source behind by
        L ms holds L ms more than the wall-clock model says (seen: 61 ms once, on a loaded
        2-core CI machine; a few ms here)."""
        played, lags = 0.0, []
        for ft, f in self.frames:
            lags.append((ft, (ft - self.frames[0][0]) * 1000 - played))
            played += len(f) * 1000 / RATE
        before = [lag for ft, lag in lags if ft <= t]
        return 0.0 if not before else max(before[-1] - min(lag for _, lag in lags), 0.0)

    def loud_after(self, t: float) -> int:
        """Non-silent samples in frames out after `t`."""
        return sum(int(np.count_nonzero(f)) for ft, f in self.frames if ft > t)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def marked(pcm: np.ndarray) -> np.ndarray:
    """`pcm` with ±2 LSB of seeded noise: every 10 ms block non-silent and unique, so the
    recorder finds each one (the speech starts with 0.5 s of digital silence)."""
    noise = np.random.default_rng(14).integers(-2, 3, len(pcm))
    noise[noise == 0] = 1
    return np.clip(pcm.astype(np.int32) + noise, -32768, 32767).astype(np.int16)


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
        for frame in frames_of(first):
            await audio_out.capture_frame(frame)
        audio_out.flush()
        await sock.wait_for(SpeakEnded, timeout_s=30)
        for _ in range(100):
            if finished:
                break
            await asyncio.sleep(0.05)
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
        for _ in range(100):
            if len(finished) == 2:
                break
            await asyncio.sleep(0.05)
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


async def test_avatar_session_wires_the_agent_session(
    api: AgentHuman, server: RunningServer
) -> None:
    room = mock_room()
    agent_session: AgentSession[Any] = AgentSession()
    avatar = AvatarSession(
        api_key=server.api_key,
        base_url=server.base_url,
        video_width=W,
        video_height=H,
        fps=FPS,
        sample_rate=RATE,
    )
    await avatar.start(agent_session, room)
    try:
        assert avatar.avatar_identity == room.local_participant.identity
        assert agent_session.output.audio is avatar.audio_output
        assert avatar.session is not None and avatar.socket is not None
        assert avatar.session.era == "C"  # created and started in one call
        assert (await api.get_session(avatar.session.session_id)).status == "started"
        # The runner publishes the avatar's tracks as the agent's own participant.
        for _ in range(100):
            if room.local_participant.publish_track.await_count >= 2:
                break
            await asyncio.sleep(0.05)
        assert room.local_participant.publish_track.await_count == 2
    finally:
        await avatar.aclose()
    ended = await api.get_session(avatar.session.session_id)
    assert (ended.status, ended.end_reason) == ("ended", "client_request")


async def test_closing_in_a_job_never_removes_the_agents_participant(
    server: RunningServer, api: AgentHuman, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a job, start registers aclose as a shutdown callback; the base class's aclose would
    remove the avatar participant through the server API, which here is the agent itself."""
    from livekit.agents.job import JobContext
    from livekit.agents.testing import fake_job_context
    from livekit.agents.voice.avatar import AvatarSession as BaseAvatarSession

    livekit_api = MagicMock()  # the LiveKit server's REST API: the network edge
    livekit_api.room.remove_participant = AsyncMock()
    monkeypatch.setattr(JobContext, "api", property(lambda self: livekit_api))
    room = mock_room()
    with fake_job_context(room=room) as job:
        avatar = AvatarSession(
            api_key=server.api_key, base_url=server.base_url, video_width=W, video_height=H
        )
        await avatar.start(AgentSession(), room)
        assert avatar.session is not None
        callbacks = list(job._shutdown_callbacks)
        assert [cb.__qualname__ for cb in callbacks] == ["AvatarSession.aclose"]
        for callback in callbacks:  # what the job does when it shuts down
            await callback("test")
        assert avatar.runner is None
        assert livekit_api.room.remove_participant.await_count == 0

        class Plain(BaseAvatarSession):  # type: ignore[type-arg]
            avatar_identity = room.local_participant.identity

        plain = Plain()
        await plain.start(AgentSession(), room)
        await plain.aclose()
        assert livekit_api.room.remove_participant.await_count == 1  # what we avoid
    assert (await api.get_session(avatar.session.session_id)).end_reason == "client_request"


async def test_an_agent_session_speaks_through_the_avatar(server: RunningServer) -> None:
    """A real `AgentSession` (no room, no models) says pre-made audio: its playout ends at our
    `agent.speak_ended`; an interrupt mid-speech ends the next one early, and what the
    framework reports as played is what the server played."""
    from livekit.agents import Agent

    room = mock_room()
    session: AgentSession[Any] = AgentSession()
    avatar = AvatarSession(
        api_key=server.api_key,
        base_url=server.base_url,
        video_width=W,
        video_height=H,
        fps=FPS,
        sample_rate=RATE,
    )
    await avatar.start(session, room)
    await session.start(agent=Agent(instructions="Say what you are given."), record=False)
    sock = avatar.socket
    assert sock is not None
    ended_at: list[float] = []
    sock.listeners.append(
        lambda item: isinstance(item, SpeakEnded) and ended_at.append(time.perf_counter())
    )

    async def audio(seconds: float) -> Any:
        for frame in frames_of(speech(seconds)):
            yield frame

    try:
        handle = session.say("Hello there", audio=audio(2.0))
        await asyncio.wait_for(handle.wait_for_playout(), 30)
        assert ended_at and time.perf_counter() >= ended_at[0]
        ended = await sock.wait_for(SpeakEnded)
        assert not ended.interrupted and abs(ended.played_ms - 2000) <= FRAME_MS
        assert not handle.interrupted

        after = len(sock.events)
        handle = session.say("A much longer sentence", audio=audio(4.0))
        await sock.wait_for(SpeakStarted, after=after, timeout_s=30)
        await asyncio.sleep(1.0)
        await session.interrupt()
        await asyncio.wait_for(handle.wait_for_playout(), 10)
        assert handle.interrupted
        cut = await sock.wait_for(SpeakEnded, after=after)
        assert cut.interrupted and 500 < cut.played_ms < 3000
        messages = [m for m in session.history.items if getattr(m, "type", "") == "message"]
        assert [m.content for m in messages][0] == ["Hello there"]
        assert not messages[0].interrupted and messages[-1].interrupted
    finally:
        await session.aclose()
        await avatar.aclose()


async def test_the_transcript_follows_the_avatar(server: RunningServer) -> None:
    """With the framework's TranscriptSynchronizer in the chain (what RoomIO builds),
    `replace_audio_tail` keeps it, so the agent's transcript starts when our `speak_started`
    is heard and is flushed only after our `speak_ended`, never before the audio played (the
    complaint on the hosted plugin's review)."""
    from livekit.agents import Agent
    from livekit.agents.voice.io import TextOutput
    from livekit.agents.voice.transcription.synchronizer import TranscriptSynchronizer

    class RecordingText(TextOutput):
        def __init__(self) -> None:
            super().__init__(label="recording", next_in_chain=None)
            self.items: list[tuple[float, str | None]] = []

        async def capture_text(self, text: str) -> None:
            self.items.append((time.perf_counter(), text))

        def flush(self) -> None:
            self.items.append((time.perf_counter(), None))

    text_out = RecordingText()
    sync = TranscriptSynchronizer(
        next_in_chain_audio=QueueAudioOutput(sample_rate=RATE), next_in_chain_text=text_out
    )
    session: AgentSession[Any] = AgentSession()
    session.output.audio = sync.audio_output
    session.output.transcription = sync.text_output
    avatar = AvatarSession(
        api_key=server.api_key,
        base_url=server.base_url,
        video_width=W,
        video_height=H,
        fps=FPS,
        sample_rate=RATE,
    )
    await avatar.start(session, mock_room())
    await session.start(agent=Agent(instructions="Say what you are given."), record=False)
    sock = avatar.socket
    assert sock is not None
    assert session.output.audio is sync.audio_output  # the wrapper stayed; our sink is its tail
    seen: dict[str, float] = {}
    sock.listeners.append(
        lambda item: (
            isinstance(item, SpeakStarted | SpeakEnded)
            and seen.setdefault(type(item).__name__, time.perf_counter())
        )
    )

    async def audio() -> Any:
        for frame in frames_of(speech(2.0)):
            yield frame

    try:
        handle = session.say("Hello there, this is the avatar speaking.", audio=audio())
        await asyncio.wait_for(handle.wait_for_playout(), 30)
    finally:
        await session.aclose()
        await avatar.aclose()
    words = [(t, x) for t, x in text_out.items if x]
    flushes = [t for t, x in text_out.items if x is None]
    assert "".join(x for _, x in words).strip() == "Hello there, this is the avatar speaking."
    assert words[0][0] >= seen["SpeakStarted"]
    assert flushes and flushes[0] >= seen["SpeakEnded"]
