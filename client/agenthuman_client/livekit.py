"""LiveKit Agents: our avatar in the agent's own process (extra `[livekit]`).

    avatar = AvatarSession(api_key=KEY, base_url="http://127.0.0.1:8080/v1")
    await avatar.start(session, room=ctx.room)
    await session.start(agent=..., room=ctx.room)

`AvatarSession.start` creates and starts a session, then runs the framework's `AvatarRunner`
with `AgentHumanVideoGenerator` (our socket) and a `QueueAudioOutput(wait_playback_start=True)`
put at the tail of the agent's audio output with `replace_audio_tail`, so transcripts and
recorders stay wired. The agent's own participant publishes the avatar's tracks: our server
never joins the room. Playback started and finished follow our exact events: the runner says
started at the first speech audio we yield (after our `agent.speak_started`) and finished at
the `AudioSegmentEnd` we yield after the utterance's last audio (our `agent.speak_ended`), with
the position of the audio that really came out.

At an interrupt the runner calls `clear_buffer` but never clears its own `AVSynchronizer` (up to
100 ms of audio in its `AudioSource`, 2 video frames), and then reports as played everything it
pushed. Our generator clears that queue itself (the runner's public `av_sync`), measures what it
dropped unheard, and `AgentHumanAudioOutput` takes that off the reported position: nothing
queued plays after an interrupt, and the position is what played. The server's `played_ms`
counts what it published; `AgentHumanVideoGenerator.interrupts` says where each interrupted
utterance's audio went (heard, cleared unheard, dropped in flight).

In this mode the avatar *is* the agent's participant: `avatar_identity` is the agent's own
identity and `aclose` never removes a participant from the room.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from livekit import rtc
from livekit.agents import utils
from livekit.agents.voice.avatar import (
    AudioSegmentEnd,
    AvatarOptions,
    AvatarRunner,
    QueueAudioOutput,
    VideoGenerator,
)
from livekit.agents.voice.avatar import AvatarSession as _BaseAvatarSession

from agenthuman_client.events import (
    Event,
    InterruptConfirmed,
    SocketClosed,
    SpeakEnded,
    SpeakStarted,
)
from agenthuman_client.media import (
    AudioFrame,
    InterruptCut,
    Media,
    UtteranceGate,
    VideoFrame,
    video_format_for,
)
from agenthuman_client.rest import DEFAULT_BASE_URL, AgentHuman, Session
from agenthuman_client.socket import SessionSocket

if TYPE_CHECKING:
    from livekit.agents.voice.agent_session import AgentSession

# Received but not yet yielded items past which idle video frames are skipped: the runner's
# AVSynchronizer never plays faster than real time, so a consumer that fell behind (a CPU
# hiccup) would otherwise stay behind, and the next utterance would start late.
CATCH_UP_ITEMS = 6


@dataclass(frozen=True)
class InterruptAccount:
    """Where an interrupted utterance's audio went, in ms. The server's `played_ms` is what it
    published; of that the client pushed `yielded_ms` into the runner and dropped `dropped_ms`
    (it arrived after the interrupt); `unheard_ms` of what it pushed was still queued in the
    runner's synchronizer and was cleared, so `heard_ms` is what really played."""

    utterance_id: str
    played_ms: int
    yielded_ms: float
    dropped_ms: float
    unheard_ms: float

    @property
    def heard_ms(self) -> float:
        return max(self.yielded_ms - self.unheard_ms, 0.0)


class AgentHumanVideoGenerator(VideoGenerator):
    """A `VideoGenerator` backed by our session socket.

    `push_audio` → speech (a segment end → `agent.speak_end`), `clear_buffer` →
    `agent.interrupt`. It yields a video frame for every frame the session renders, audio frames
    only within an utterance, and an `AudioSegmentEnd` after an utterance's last audio. Audio of
    an interrupted utterance that arrives after the interrupt is dropped, and so are its
    video frames that the server showed before it stopped but that were not yielded yet, so
    the first frame after an interrupt is the first idle one; idle frames are skipped while
    the consumer is behind.

    With the runner's synchronizer attached (`attach_av_sync(runner.av_sync)`, which
    `AvatarSession` does), `clear_buffer` also clears what the runner still holds (up to
    100 ms of audio in its `AudioSource`, 2 video frames): the framework's runner does not, and
    its doc says `clear_buffer` stops playback immediately. What was cleared unheard is
    measured (`take_unheard_s`, `interrupts`), so the playback position reported to the agent
    (through `AgentHumanAudioOutput`) is what played.
    """

    def __init__(self, sock: SessionSocket) -> None:
        self.sock = sock
        self._gate = UtteranceGate()
        self._pending_end: deque[int] = deque()
        self._speech_sent = False
        # After an interrupt: its utterances' audio is not yielded, nor, if one was playing, the
        # video frames the server showed before it stopped.
        self._cut = InterruptCut()
        self._cleared_at: float | None = None
        # ms from `clear_buffer` to the first video frame after the cut, per interrupt.
        self.interrupt_latencies_ms: list[float] = []
        self.interrupts: list[InterruptAccount] = []
        self._av_sync: rtc.AVSynchronizer | None = None
        # When the audio yielded so far has played out, on time.monotonic(): the same model
        # as the runner's AudioSource (it plays from the moment a frame is pushed, at 1×).
        self._out_end = 0.0
        self._pushing = False  # suspended at a yield: the runner is pushing that frame
        self._reclear = False  # a clear came while it was: clear again once it is in
        self._unheard_s = 0.0  # cleared unheard at the last clear_buffer, for the position
        self._last_unheard_ms = 0.0
        self._yielded_ms: dict[str, float] = {}
        self._dropped_ms: dict[str, float] = {}

    def attach_av_sync(self, av_sync: rtc.AVSynchronizer | None) -> None:
        """The runner's synchronizer (`AvatarRunner.av_sync`), cleared at `clear_buffer`."""
        self._av_sync = av_sync

    def take_unheard_s(self) -> float:
        """Seconds of pushed audio the last `clear_buffer` dropped unheard (then 0)."""
        unheard, self._unheard_s = self._unheard_s, 0.0
        return unheard

    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        if isinstance(frame, AudioSegmentEnd):
            if self._speech_sent:
                self._speech_sent = False
                await self.sock.speak_end()
            return
        samples = np.frombuffer(frame.data, np.int16)
        if frame.num_channels > 1:
            samples = samples.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
        self._speech_sent = True
        # As it comes (10 ms frames from the runner's queue): the server never pads a frame
        # whose audio is still arriving with silence.
        await self.sock.speak(samples.tobytes(), frame.sample_rate)

    async def clear_buffer(self) -> None:
        """Interrupt: stops what is queued at once; returns once the server confirmed it (or
        after 2 s)."""
        self._speech_sent = False
        self._pending_end.clear()
        self._gate.clear()
        live = self.sock.closed is None
        if live:
            playing = self._gate.speaking()
            self._cut.interrupt(playing)
            if playing:
                self._cleared_at = time.perf_counter()
        now = time.monotonic()
        unheard = max(self._out_end - now, 0.0)
        self._out_end = now
        self._unheard_s += unheard
        self._last_unheard_ms = unheard * 1000
        if self._av_sync is not None:
            # Its audio source is cleared before this yields, with `unheard` measured above.
            await self._av_sync.clear_queue()
            # A frame the runner is pushing goes in after this clear: `_stream` clears
            # again as soon as the push returns, before it yields anything else.
            self._reclear = self._pushing
        if not live:
            return
        after = len(self.sock.events)
        await self.sock.interrupt()
        with contextlib.suppress(TimeoutError, ConnectionError):
            await self.sock.wait_for(InterruptConfirmed, timeout_s=2.0, after=after)
        # Dropping ends when the stream itself reaches the confirmation: audio queued
        # before it belongs to the interrupted utterances.

    def __aiter__(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        async for item in self.sock:
            if isinstance(item, SocketClosed):
                return
            for out in await self._outputs(item):
                if isinstance(out, tuple):
                    # Speech: decided here, at the yield (a clear_buffer may have come while
                    # an earlier output of this item was being pushed).
                    audio, utterance_id = out
                    if self._cut.drops_speech(utterance_id):
                        self._count(self._dropped_ms, utterance_id, audio.duration_ms)
                        continue
                    self._count(self._yielded_ms, utterance_id, audio.duration_ms)
                    now = time.monotonic()
                    self._out_end = max(self._out_end, now) + audio.duration_ms / 1000
                    frame: rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd = _audio(audio)
                else:
                    frame = out
                self._pushing = True
                yield frame
                self._pushing = False
                if self._reclear:
                    self._reclear = False
                    if self._av_sync is not None:
                        await self._av_sync.clear_queue()

    async def _outputs(
        self, item: Event | Media
    ) -> list[rtc.VideoFrame | tuple[AudioFrame, str] | AudioSegmentEnd]:
        """What one socket item becomes, in order (speech as (frame, utterance id))."""
        out: list[rtc.VideoFrame | tuple[AudioFrame, str] | AudioSegmentEnd] = []
        if isinstance(item, VideoFrame):
            if self._ends_before(item.pts_ms):
                out.append(AudioSegmentEnd())  # the utterance's last audio came before
            if self._cut.shown_before_cut(item.pts_ms):
                return out  # shown by the server before the interrupt stopped it
            if self._cut.ends_cut(item.pts_ms) and self._cleared_at is not None:
                ms = (time.perf_counter() - self._cleared_at) * 1e3
                self.interrupt_latencies_ms.append(ms)
                self._cleared_at = None
            if not self._gate.speaking() and self.sock.backlog() > CATCH_UP_ITEMS:
                return out  # behind (the runner plays in real time): skip idle frames
            if item.jpeg is not None:
                rgb = await asyncio.to_thread(item.rgb_bytes)
            else:
                rgb = item.rgb_bytes()
            out.append(rtc.VideoFrame(item.width, item.height, rtc.VideoBufferType.RGB24, rgb))
        elif isinstance(item, AudioFrame):
            out += self._gate.audio(item)
            if self._ends_before(item.pts_ms + item.duration_ms):
                out.append(AudioSegmentEnd())
        elif isinstance(item, SpeakStarted):
            out += self._gate.event(item)
        elif isinstance(item, SpeakEnded):
            self._cut.speak_ended(item)
            self._gate.event(item)
            # An interrupted one has no segment end: the runner reports interrupted itself.
            if not item.interrupted and item.pts_ms is not None:
                self._pending_end.append(item.pts_ms)
        elif isinstance(item, InterruptConfirmed):
            self._cut.confirmed()
            if item.utterance_id is not None:
                self.interrupts.append(
                    InterruptAccount(
                        item.utterance_id,
                        item.played_ms,
                        self._yielded_ms.get(item.utterance_id, 0.0),
                        self._dropped_ms.get(item.utterance_id, 0.0),
                        self._last_unheard_ms,
                    )
                )
            self._yielded_ms.clear()
            self._dropped_ms.clear()
        return out

    @staticmethod
    def _count(totals: dict[str, float], utterance_id: str, ms: float) -> None:
        totals[utterance_id] = totals.get(utterance_id, 0.0) + ms

    def _ends_before(self, media_end_ms: float) -> bool:
        if self._pending_end and media_end_ms >= self._pending_end[0]:
            self._pending_end.popleft()
            return True
        return False


class AgentHumanAudioOutput(QueueAudioOutput):
    """`QueueAudioOutput(wait_playback_start=True)` for the runner, whose interrupted playback
    position leaves out what `generator` cleared from the runner's queue unheard: the runner
    reports everything it pushed."""

    def __init__(self, generator: AgentHumanVideoGenerator, *, sample_rate: int) -> None:
        super().__init__(sample_rate=sample_rate, wait_playback_start=True)
        self._generator = generator

    def notify_playback_finished(self, playback_position: float, interrupted: bool) -> None:
        if interrupted:
            playback_position = max(playback_position - self._generator.take_unheard_s(), 0.0)
        super().notify_playback_finished(playback_position, interrupted)


def _audio(frame: AudioFrame) -> rtc.AudioFrame:
    n = len(frame.pcm) // 2
    return rtc.AudioFrame(frame.pcm, frame.sample_rate, 1, n)


class AvatarSession(_BaseAvatarSession):  # type: ignore[type-arg]
    """AgentHuman Local's avatar for an `AgentSession`, run in the agent's process."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        avatar_id: str | None = None,
        video_width: int = 1280,
        video_height: int = 720,
        fps: int = 25,
        sample_rate: int = 24000,
        output_video: str = "auto",
    ) -> None:
        super().__init__()
        self._api = AgentHuman(api_key, base_url)
        self._avatar_id = avatar_id
        self._size = (video_width, video_height, fps)
        self._sample_rate = sample_rate
        self._output_video = video_format_for(base_url, output_video)
        self._identity = ""
        self.session: Session | None = None
        self.socket: SessionSocket | None = None
        self.audio_output: AgentHumanAudioOutput | None = None
        self.runner: AvatarRunner | None = None

    @property
    def avatar_identity(self) -> str:
        """The agent's own participant: it publishes the avatar's tracks."""
        return self._identity

    @property
    def provider(self) -> str:
        return "agenthuman-local"

    async def start(self, agent_session: AgentSession, room: rtc.Room) -> None:
        self._identity = room.local_participant.identity
        await super().start(agent_session, room)
        width, height, fps = self._size
        self.session = await self._api.create_started(self._avatar_id)
        self.socket = await SessionSocket.connect(
            self.session,
            http=self._api.http,
            video_width=width,
            video_height=height,
            fps=fps,
            sample_rate=self._sample_rate,
            output_video=self._output_video,
            output_audio=True,
        )
        generator = AgentHumanVideoGenerator(self.socket)
        self.audio_output = AgentHumanAudioOutput(generator, sample_rate=self._sample_rate)
        agent_session.output.replace_audio_tail(self.audio_output)
        self.runner = AvatarRunner(
            room,
            audio_recv=self.audio_output,
            video_gen=generator,
            options=AvatarOptions(
                video_width=self.socket.width,
                video_height=self.socket.height,
                video_fps=self.socket.fps,
                audio_sample_rate=self._sample_rate,
                audio_channels=1,
            ),
        )
        generator.attach_av_sync(self.runner.av_sync)
        await self.runner.start()

    async def aclose(self) -> None:
        """Stop the runner, close the socket, end the session. Never removes a participant:
        the avatar's identity is the agent's own."""
        if self.runner is not None:
            await self.runner.aclose()
            self.runner = None
        if self.socket is not None:
            await self.socket.aclose()
        if self.session is not None:
            with contextlib.suppress(Exception):
                await self._api.end_session(self.session.session_id)
        await self._api.aclose()
        # The base class's own clean-up, without its remove_participant call.
        if self._agent_session is not None:
            self._agent_session.off("conversation_item_added", self._on_conversation_item_added)
            self._agent_session = None
        if self._room is not None:
            self._room.off("connection_state_changed", self._on_connection_state_changed)
            self._room = None
        if self._wait_avatar_join_task is not None:
            await utils.aio.cancel_and_wait(self._wait_avatar_join_task)
            self._wait_avatar_join_task = None


__all__ = [
    "AgentHumanAudioOutput",
    "AgentHumanVideoGenerator",
    "AvatarSession",
    "InterruptAccount",
]
