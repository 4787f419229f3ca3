"""What the LiveKit tests (and `measure.py`) drive the adapter with, against a real run.py and
the real framework.

`AgentHumanVideoGenerator` is driven directly, then through the framework's `AvatarRunner` and
`QueueAudioOutput(wait_playback_start=True)` over `livekit.agents.ipc.mock_room`'s room (an
autospec `rtc.Room`; the runner publishes into it, the FFI audio/video sources and the
`AVSynchronizer` are real; what the runner's audio track plays is read back through an
`rtc.AudioStream` on it: `TrackRecorder`). What stays untested: a real LiveKit server and
WebRTC (none can run offline here); inside a job (`fake_job_context`) the LiveKit server API is
recorded, not called.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import numpy as np
from livekit import rtc
from livekit.agents.ipc.mock_room import create_mock_room

from agenthuman_client import AgentHuman, SessionSocket
from agenthuman_client.livekit import AgentHumanVideoGenerator

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


def mock_room() -> Any:
    room = create_mock_room()
    publication = MagicMock()
    publication.wait_for_subscription = AsyncMock(return_value=None)
    room.local_participant.publish_track = AsyncMock(return_value=publication)
    return room


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
