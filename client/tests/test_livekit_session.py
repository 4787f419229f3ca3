"""`AvatarSession` in an `AgentSession` against a real run.py: the wiring, closing in a job
without removing the agent's participant, speech and an interrupt through the framework, the
transcript following the avatar (the set-up: `livekit_harness`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import pytest

pytest.importorskip("livekit.agents")

from conftest import RunningServer, speech  # noqa: E402
from livekit.agents import AgentSession  # noqa: E402
from livekit.agents.voice.avatar import QueueAudioOutput  # noqa: E402
from livekit_harness import FPS, FRAME_MS, RATE, H, W, frames_of, mock_room  # noqa: E402

from agenthuman_client import AgentHuman, SpeakEnded, SpeakStarted  # noqa: E402
from agenthuman_client.livekit import AvatarSession  # noqa: E402


def _avatar(server: RunningServer) -> AvatarSession:
    """An AvatarSession on the test server, at the harness's frame size, fps and rate."""
    return AvatarSession(
        api_key=server.api_key,
        base_url=server.base_url,
        video_width=W,
        video_height=H,
        fps=FPS,
        sample_rate=RATE,
    )


async def test_avatar_session_wires_the_agent_session(
    api: AgentHuman, server: RunningServer
) -> None:
    room = mock_room()
    agent_session: AgentSession[Any] = AgentSession()
    avatar = _avatar(server)
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
    avatar = _avatar(server)
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
    avatar = _avatar(server)
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
